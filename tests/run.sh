#!/usr/bin/env bash
# The project's test command: Rust unit tests, then the end-to-end tests that drive the real
# kernel through jupyter_client, jupyter_kernel_test and nbconvert. Run ./install.sh first.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${TCH_KERNEL_PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || { echo "tests/run.sh: $python not found: run ./install.sh first" >&2; exit 1; }

cd "$repo"
# The Slurm tests start a real one-node cluster (tests/local-slurm.sh), and JupyterLab's debugger
# stops at breakpoints through lldb-dap, also driven in Debian's chromium (tests/test_ide.py).
# As root (as in CI) the packages are installed when missing; elsewhere those tests skip and
# say why.
missing=()
command -v slurmctld >/dev/null || missing+=(slurmctld slurmd slurm-client munge)
[ -n "$(compgen -c lldb-dap)" ] || missing+=(lldb-19)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "$(id -u)" = 0 ] && [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing ${missing[*]} for the Slurm, debugger and browser tests"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
        || echo "tests/run.sh: could not install ${missing[*]}; the tests that need them will skip" >&2
fi
# Release profile and the default members, as install.sh built them: the dependencies (and their
# features) are the ones built there, so only the test harnesses compile here.
cargo test --release --locked   # default members: the prelude is built by install.sh
cargo build --release --locked
# c10d, tch-data and torch-weights link libtorch, so they are not default members: c10d's tests (two processes running the
# raw collectives over 127.0.0.1) run against the kernel's torch and tch, in a target dir of
# their own that .ci/run's lint of c10d and the prelude has filled (torch-sys's C++ shim is
# built once).
if "$python" -c 'import torch' 2>/dev/null; then
    # With the prelude's data loading and PyTorch weights, on the same torch.
    "$repo/tests/kernel-cargo.sh" test --locked -p c10d -p tch-data -p torch-weights
else
    echo "tests/run.sh: no torch in $python: c10d's own tests skipped" >&2
fi
# The slowest tests, so that time for new ones can be found (CI has a 45-minute budget).
"$python" -m pytest -p no:cacheprovider -v --durations=25 tests "$@"
