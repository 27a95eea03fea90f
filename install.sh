#!/usr/bin/env bash
# Builds tch-kernel and registers it with Jupyter as a named kernel, the way
# `python -m ipykernel install --user --name X --display-name Y` does for Python.
#
#   ./install.sh                                   # venv + build + kernel "rust-tch" for this user
#   ./install.sh --name rust-course --display-name "Rust (course)"
#   ./install.sh --prefix /project/share/env       # a shared install: PREFIX/share/jupyter/kernels
#   ./install.sh --uninstall rust-course
#
# Honours JUPYTER_DATA_DIR (user installs go to $JUPYTER_DATA_DIR/kernels/NAME).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="rust-tch"
display_name=""
prefix=""
sys_prefix=0
python=""
venv="$here/.venv"
make_venv=1
interrupt_mode="message"
uninstall=""
envs=()

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'USAGE'
Options:
  --name NAME            kernel name (letters, digits, - . _); default rust-tch
  --display-name TEXT    name shown in JupyterLab; default "Rust (tch-kernel)"
  --user                 install into the user's Jupyter data dir (default)
  --prefix DIR           install into DIR/share/jupyter/kernels
  --sys-prefix           install into the Python environment's prefix (of --python or the venv)
  --python PATH          use this Python (an existing env with Jupyter) instead of creating a venv
  --venv DIR             where to create the project venv (default: ./.venv)
  --no-venv              do not create or update a Python venv
  --env KEY=VALUE        extra environment for the kernel (repeatable; ${VAR} is expanded by Jupyter)
  --interrupt-mode MODE  message (default) or signal
  --uninstall NAME       remove a kernelspec this script installed (with --prefix if used)
USAGE
}

die() { echo "install.sh: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --name) name="${2:?--name needs a value}"; shift 2 ;;
        --display-name) display_name="${2:?--display-name needs a value}"; shift 2 ;;
        --user) prefix=""; sys_prefix=0; shift ;;
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --sys-prefix) sys_prefix=1; shift ;;
        --python) python="${2:?--python needs a path}"; make_venv=0; shift 2 ;;
        --venv) venv="${2:?--venv needs a directory}"; shift 2 ;;
        --no-venv) make_venv=0; shift ;;
        --env) envs+=("--env" "${2:?--env needs KEY=VALUE}"); shift 2 ;;
        --interrupt-mode) interrupt_mode="${2:?--interrupt-mode needs message or signal}"; shift 2 ;;
        --uninstall) uninstall="${2:?--uninstall needs a kernel name}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

bin="$here/target/release/tch-kernel"
prefix_args=()

resolve_prefix() {
    if [ "$sys_prefix" = 1 ]; then
        local py="${python:-$venv/bin/python}"
        [ -x "$py" ] || die "--sys-prefix needs a Python environment (--python PATH or the venv)"
        prefix="$("$py" -c 'import sys; print(sys.prefix)')"
    fi
    if [ -n "$prefix" ]; then
        prefix_args=(--prefix "$prefix")
    fi
}

if [ -n "$uninstall" ]; then
    resolve_prefix
    [ -x "$bin" ] || die "$bin is missing; it is needed to uninstall (run ./install.sh first)"
    exec "$bin" uninstall "$uninstall" "${prefix_args[@]}"
fi

# --- Rust toolchain ---------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) or load your site's Rust module"
rustc_minor="$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')"
[ "${rustc_minor:-0}" -ge 95 ] || die "Rust 1.95 or newer is needed (found: $(rustc --version))"

# --- Python environment (JupyterLab and the test clients) -------------------------------------
if [ "$make_venv" = 1 ]; then
    if [ ! -x "$venv/bin/python" ]; then
        echo "==> creating Python venv in $venv"
        python3 -m venv "$venv" || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
    fi
    echo "==> installing Jupyter into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/kernelspec/python-requirements.txt"
fi
if [ -n "$python" ]; then
    [ -x "$python" ] || die "--python $python is not an executable"
fi

# --- Build ----------------------------------------------------------------------------------
echo "==> building tch-kernel (release)"
(cd "$here" && cargo build --release --locked -p tch-kernel)
"$bin" --version >/dev/null || die "the built kernel does not run: $bin"

# --- Kernelspec -------------------------------------------------------------------------------
resolve_prefix
args=(install --name "$name" --interrupt-mode "$interrupt_mode")
[ -n "$display_name" ] && args+=(--display-name "$display_name") || args+=(--display-name "Rust (tch-kernel)")
"$bin" "${args[@]}" "${prefix_args[@]}" "${envs[@]}"

jupyter=""
if [ -n "$python" ] && [ -x "$(dirname "$python")/jupyter" ]; then
    jupyter="$(dirname "$python")/jupyter"
elif [ -x "$venv/bin/jupyter" ]; then
    jupyter="$venv/bin/jupyter"
fi
if [ -n "$jupyter" ] && [ -z "$prefix" ]; then
    echo "==> kernels Jupyter can see:"
    "$jupyter" kernelspec list
elif [ -n "$prefix" ]; then
    echo "note: add $prefix/share/jupyter to JUPYTER_PATH so Jupyter finds this kernel"
fi
echo "Done. Start JupyterLab (e.g. $venv/bin/jupyter lab) and pick \"${display_name:-Rust (tch-kernel)}\"."
