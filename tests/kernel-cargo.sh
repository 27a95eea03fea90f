#!/usr/bin/env bash
# cargo for the crates that link libtorch (c10d, the prelude), built as a kernel builds them:
# against the torch of an installed kernel (default rust-tch), with that kernel's tch when its
# bindings were generated for its PyTorch (TCH_KERNEL_BINDINGS), into target/tch-tests.
#
#   tests/kernel-cargo.sh clippy --locked -p c10d -p tch-prelude --all-targets -- -D warnings
#   TCH_KERNEL_SPEC=rust-torch211 tests/kernel-cargo.sh test --locked -p c10d
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${TCH_KERNEL_PYTHON:-$repo/.venv/bin/python}"
spec="${TCH_KERNEL_SPEC:-rust-tch}"
env="$("$python" - "$spec" <<'PY'
import sys
from jupyter_client.kernelspec import KernelSpecManager
env = KernelSpecManager().get_kernel_spec(sys.argv[1]).env
print(env.get("LIBTORCH", ""))
print(env.get("TCH_KERNEL_BINDINGS", ""))
PY
)" || { echo "kernel-cargo.sh: no kernelspec $spec with libtorch: run ./install.sh first" >&2; exit 1; }
libtorch="$(echo "$env" | sed -n 1p)"
bindings="$(echo "$env" | sed -n 2p)"
[ -n "$libtorch" ] || { echo "kernel-cargo.sh: kernel $spec has no libtorch" >&2; exit 1; }
patches=()
if [ -n "$bindings" ]; then
    # The workspace patches tch to crates/tch (bindings for PyTorch 2.13); this kernel's own
    # copy replaces it. Same name and version: Cargo.lock stays as it is.
    for crate in tch torch-sys; do
        patches+=(--config "patch.crates-io.$crate.path=\"$bindings/$crate\"")
    done
fi
cd "$repo"
export LIBTORCH="$libtorch" LD_LIBRARY_PATH="$libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/tch-tests}"
# After the subcommand: `cargo clippy` runs `cargo check` itself, with the arguments after it.
[ $# -gt 0 ] || { echo "kernel-cargo.sh: which cargo subcommand?" >&2; exit 2; }
exec cargo "$1" "${patches[@]}" "${@:2}"
