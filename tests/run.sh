#!/usr/bin/env bash
# The project's test command: Rust unit tests, then the end-to-end tests that drive the real
# kernel through jupyter_client, jupyter_kernel_test and nbconvert. Run ./install.sh first.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${TCH_KERNEL_PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || { echo "tests/run.sh: $python not found: run ./install.sh first" >&2; exit 1; }

cd "$repo"
# Release profile: reuses what install.sh built instead of compiling evcxr twice.
cargo test --release --locked   # default members: the prelude is built by install.sh
cargo build --release --locked -p tch-kernel
"$python" -m pytest -p no:cacheprovider -v tests "$@"
