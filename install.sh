#!/usr/bin/env bash
# Builds tch-kernel and registers it with Jupyter as a named kernel, the way
# `python -m ipykernel install --user --name X --display-name Y` does for Python.
#
#   ./install.sh                                   # venv with torch 2.15.0 + build + kernel "rust-tch"
#   ./install.sh --name rust-course --display-name "Rust (course)"
#   ./install.sh --python ~/envs/torch/bin/python  # use that env's torch (and Jupyter)
#   ./install.sh --libtorch /opt/libtorch-2.13.0   # an unpacked libtorch
#   ./install.sh --cache-dir /scratch/$USER/tch-kernel   # build cache off a small $HOME
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
libtorch=""
with_torch=1
force_generated=0
cache_dir=""
tch_override=""
torch_version_required="2.15.0"   # what the project venv gets: the newest that passed the suite
versions_table="$here/kernelspec/torch-versions.tsv"

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'USAGE'
Options:
  --name NAME            kernel name (letters, digits, - . _); default rust-tch
  --display-name TEXT    name shown in JupyterLab; default "Rust (tch-kernel)", or with
                         another --name "Rust (tch-kernel, PyTorch X.Y.Z)"
  --user                 install into the user's Jupyter data dir (default)
  --prefix DIR           install into DIR/share/jupyter/kernels
  --sys-prefix           install into the Python environment's prefix (of --python or the venv)
  --python PATH          use this Python env (its torch, and its Jupyter if any) instead of a venv
  --libtorch DIR         use an unpacked libtorch (DIR/lib/libtorch_cpu.so) instead of PyTorch's
  --generate-bindings    tch's bindings generated from this torch's own operator list even where
                         a tch release was made for it (as for PyTorch 2.14 and newer)
  --no-torch             a plain Rust kernel, without libtorch and the tch prelude
  --tch VERSION          build on this tch release instead of the one the table of supported
                         PyTorch versions names (kernelspec/torch-versions.tsv), with tch's
                         version check bypassed: for trying a PyTorch not supported yet
  --cache-dir DIR        build cache for this kernel (default ~/.cache/tch-kernel/NAME);
                         put it on scratch when $HOME is small
  --venv DIR             where to create the project venv (default: ./.venv)
  --no-venv              do not create or update a Python venv
  --env KEY=VALUE        extra environment for the kernel (repeatable; ${VAR} is expanded by Jupyter)
  --interrupt-mode MODE  message (default) or signal
  --uninstall NAME       remove a kernelspec this script installed (with --prefix if used)
USAGE
}

die() { echo "install.sh: error: $*" >&2; exit 1; }

# The PyTorch minor versions kernelspec/torch-versions.tsv lists, e.g. "2.10, 2.11, 2.13".
supported_torch() {
    awk -F'\t' '!/^#/ && NF >= 3 { printf "%s%s", sep, $1; sep = ", " }' "$versions_table"
}

# The newest PyTorch version the suite passed on (the table's last "tested").
last_tested() {
    awk -F'\t' '!/^#/ && NF >= 4 { v = $4 } END { print v }' "$versions_table"
}

# The tch release and check of the table's newest "generated" row, e.g. "0.26.0 generated".
generated_row() {
    awk -F'\t' '!/^#/ && $3 == "generated" { r = $2 " " $3 } END { print r }' "$versions_table"
}

# Sets tch_version, bindings ("release" or "generated") and bypass_check (1 or empty) for PyTorch
# version $1 (e.g. 2.11.0+cu130), or stops with the supported versions, before anything is built
# or registered. A PyTorch newer than the table gets bindings generated from its own torchgen.
choose_tch() {
    local version="${1%%+*}" minor row check newest
    minor="$(echo "$version" | cut -d. -f1-2)"
    row="$(awk -F'\t' -v m="$minor" '!/^#/ && $1 == m { print $2, $3 }' "$versions_table")"
    if [ -z "$row" ]; then
        newest="$(last_tested)"
        if [ "$(printf '%s\n%s\n' "$newest" "$version" | sort -V | tail -n 1)" = "$version" ]; then
            echo "warning: PyTorch $version is newer than any this kernel was tested with (the last: $newest): its bindings are generated from its own operator list; report what fails" >&2
            row="$(generated_row)"
        else
            die "PyTorch $version is not supported (in $libtorch); supported are PyTorch $(supported_torch) and newer: install one of them into the environment, or pass --libtorch DIR"
        fi
    fi
    if [ "$force_generated" = 1 ]; then
        row="$(generated_row)"
    fi
    read -r tch_version check <<< "$row"
    bindings=release
    bypass_check=""
    if [ "$check" = generated ]; then
        bindings=generated
    # torch-sys accepts only the X.Y.0 it was made for; patch releases keep the ABI.
    elif [ "$check" = bypass ] || [ "$version" != "$minor.0" ]; then
        bypass_check=1
    fi
}

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
        --libtorch) libtorch="${2:?--libtorch needs a directory}"; shift 2 ;;
        --tch) tch_override="${2:?--tch needs a tch version, e.g. 0.26.0}"; shift 2 ;;
        --generate-bindings) force_generated=1; shift ;;
        --no-torch) with_torch=0; shift ;;
        --cache-dir) cache_dir="${2:?--cache-dir needs a directory}"; shift 2 ;;
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
    if [ "$with_torch" = 1 ] && [ -z "$libtorch" ]; then
        echo "==> installing torch==$torch_version_required into $venv (about 5 GB the first time)"
        # No copy of the 3 GB of wheels in pip's cache: $HOME is small on clusters, and the
        # installed files are all that is used.
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "torch==$torch_version_required"
        # torchvision, which the tests and benchmarks compare with (ImageFolder, DataLoader,
        # ResNets' state_dicts): the release made for this torch (0.N+15 for 2.N), or the newest
        # before it while none is out; without dependencies, so that pip keeps this torch.
        tv_minor=$(( $(echo "$torch_version_required" | cut -d. -f2) + 16 ))
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "torchvision<0.$tv_minor" pillow
    fi
fi
if [ -n "$python" ]; then
    [ -x "$python" ] || die "--python $python is not an executable"
fi

# --- libtorch ---------------------------------------------------------------------------------
torch_version=""
if [ "$with_torch" = 1 ]; then
    if [ -n "$libtorch" ]; then
        libtorch="$(cd "$libtorch" 2>/dev/null && pwd)" || die "--libtorch: no such directory"
        [ -f "$libtorch/build-version" ] && torch_version="$(cat "$libtorch/build-version")"
    else
        py="${python:-$venv/bin/python}"
        [ -x "$py" ] || die "no Python to find torch in: pass --python PATH or --libtorch DIR (or --no-torch)"
        info="$("$py" -c 'import os, torch; print(torch.__version__); print(os.path.dirname(torch.__file__))' 2>/dev/null)" \
            || die "torch is not installed in $py: pip install torch==$torch_version_required, or pass --libtorch DIR"
        torch_version="$(echo "$info" | sed -n 1p)"
        libtorch="$(echo "$info" | sed -n 2p)"
    fi
    [ -f "$libtorch/lib/libtorch_cpu.so" ] || die "$libtorch/lib/libtorch_cpu.so not found: not a libtorch (or PyTorch) installation"
    [ -d "$libtorch/include/torch" ] || die "$libtorch/include/torch not found: this libtorch has no C++ headers"
    # A partial copy (or a mixed-up one) fails late and obscurely: at link or at the first cell.
    case "$torch_version" in
        *+cu*) [ -f "$libtorch/lib/libtorch_cuda.so" ] \
            || die "$libtorch is a CUDA build ($torch_version) without lib/libtorch_cuda.so: a partial copy? Unpack the whole libtorch, or use a CPU build" ;;
        *+cpu) [ ! -f "$libtorch/lib/libtorch_cuda.so" ] \
            || die "$libtorch is a CPU build ($torch_version) with lib/libtorch_cuda.so: files of two libtorch builds are mixed in it" ;;
    esac
    [ -n "$torch_version" ] || [ -n "$tch_override" ] \
        || die "cannot tell the version of the libtorch in $libtorch (no build-version file): supported are PyTorch $(supported_torch); --tch VERSION chooses a tch release anyway"
    if [ -n "$tch_override" ]; then
        tch_version="$tch_override"
        bindings=release
        bypass_check=1
        echo "warning: tch $tch_version for PyTorch $torch_version was chosen by --tch: not a tested pair (see kernelspec/torch-versions.tsv)" >&2
    else
        choose_tch "$torch_version"
    fi
    if [ "$bindings" = generated ]; then
        # torchgen (which lists the operators) is in the wheel beside torch/, not in a libtorch zip.
        site_packages="$(dirname "$libtorch")"
        [ -f "$site_packages/torchgen/packaged/ATen/native/native_functions.yaml" ] \
            || die "PyTorch $torch_version in $libtorch has no torchgen beside it (an unpacked libtorch does not ship one): its tch bindings are generated from torchgen's operator list; pass --python of an environment with torch $torch_version"
        # torchgen needs PyYAML, which torch does not depend on: the env's Python, else ours.
        bindgen_python=""
        for candidate in "${py:-}" "$venv/bin/python"; do
            if [ -x "$candidate" ] && "$candidate" -c 'import yaml, typing_extensions' 2>/dev/null; then
                bindgen_python="$candidate"
                break
            fi
        done
        [ -n "$bindgen_python" ] || die "generating tch bindings needs PyYAML in ${py:-the Python of the environment}: pip install pyyaml"
    fi
    echo "==> libtorch $torch_version in $libtorch: tch $tch_version${bypass_check:+ (version check of torch-sys bypassed)}${bindings:+, $bindings bindings}"
fi

# --- Build ----------------------------------------------------------------------------------
echo "==> fetching crates (the prelude's too: kernels build cells offline from these)"
(cd "$here" && cargo fetch --locked)
echo "==> building tch-kernel (release)"
# All the workspace's default members, not just the kernel: cargo picks dependency features per
# build, and the kernel alone would leave out notebook-helpers' (plotters, png), so that
# tests/run.sh's `cargo test` would build evcxr, the server and their dependencies again.
(cd "$here" && cargo build --release --locked)
"$bin" --version >/dev/null || die "the built kernel does not run: $bin"

# --- Kernel environment and prebuilt prelude ---------------------------------------------------
kernel_env=()
if [ "$with_torch" = 1 ]; then
    lower_name="$(echo "$name" | tr '[:upper:]' '[:lower:]')"
    cache_dir="${cache_dir:-${XDG_CACHE_HOME:-$HOME/.cache}/tch-kernel/$lower_name}"
    mkdir -p "$cache_dir" || die "cannot create the cache dir $cache_dir"
    cache_dir="$(cd "$cache_dir" && pwd)"
    # The prelude's lockfile for this kernel: the workspace's, with tch moved to the release
    # chosen for this libtorch (cargo keeps every other crate at its locked version).
    lock_dir="$cache_dir/prelude-lock"
    mkdir -p "$lock_dir/src"
    : > "$lock_dir/src/lib.rs"
    patch=""
    if [ "$bindings" = generated ]; then
        # tch's vendored copy with bindings for exactly this torch (crates/torch-bindgen), in the
        # cache dir: one per kernel, rewritten only where it changes (cargo rebuilds on mtimes).
        bindings_dir="$cache_dir/bindings"
        log="$cache_dir/bindings.log"
        echo "==> generating tch's bindings for PyTorch $torch_version into $bindings_dir (log: $log)"
        "$here/target/release/torch-bindgen" --crates-from "$here/crates" --site-packages "$site_packages" \
                --python "$bindgen_python" --out "$bindings_dir" > "$log" 2>&1 \
            || die "generating tch's bindings for PyTorch $torch_version failed: $(tail -n 3 "$log" | tr '\n' ' ')(log: $log); nothing was registered"
        sed 's/^/    /' "$log"
        patch="
[patch.crates-io]
tch = { path = \"$bindings_dir/tch\" }
torch-sys = { path = \"$bindings_dir/torch-sys\" }"
    fi
    cat > "$lock_dir/Cargo.toml" <<TOML
# Written by install.sh: pins the tch release for torch $torch_version (kernelspec/torch-versions.tsv).
[package]
name = "tch-kernel-prelude-lock"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
tch-prelude = { path = "$here/crates/tch-prelude" }
tch = "=$tch_version"
torch-sys = "=$tch_version"

[workspace]
$patch
TOML
    cp "$here/Cargo.lock" "$lock_dir/Cargo.lock"
    if [ -n "$prefix" ] || [ "$sys_prefix" = 1 ]; then
        # A shared install (a course's, a group's): its users may not read this user's
        # ~/.cargo, so the crates cells and rust-analyzer read live in the cache dir, which they
        # read and only this user writes.
        export CARGO_HOME="$cache_dir/cargo-home"
    fi
    echo "==> fetching tch $tch_version and its crates${CARGO_HOME:+ into $CARGO_HOME}"
    (cd "$lock_dir" && cargo fetch --quiet) || die "cannot fetch tch $tch_version (needs crates.io once, or a filled cargo cache)"
    kernel_env=(
        "LIBTORCH=$libtorch"
        "TCH_KERNEL_TORCH_VERSION=$torch_version"
        "TCH_KERNEL_TCH_VERSION=$tch_version"
        "TCH_KERNEL_CACHE_DIR=$cache_dir"
        "TCH_KERNEL_PRELUDE=$here/crates/tch-prelude"
        "TCH_KERNEL_LOCKFILE=$lock_dir/Cargo.lock"
    )
    [ "$bindings" = generated ] && kernel_env+=("TCH_KERNEL_BINDINGS=$bindings_dir")
    # torch-sys reads it in its build script, so cells and exported programs need it too.
    [ -n "$bypass_check" ] && kernel_env+=("LIBTORCH_BYPASS_VERSION_CHECK=1")
    echo "==> building the tch prelude into $cache_dir (once; a few minutes the first time)"
    env "${kernel_env[@]}" "LD_LIBRARY_PATH=$libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin" prebuild \
        || die "building the prelude${bindings_dir:+ on the bindings generated in $bindings_dir} failed (see above); nothing was registered"
    # Jupyter expands ${LD_LIBRARY_PATH} from the server's environment when the kernel starts.
    kernel_env+=('LD_LIBRARY_PATH='"$libtorch"'/lib:${LD_LIBRARY_PATH}')
    # The prelude only links with the rustc that built it: kernels use that toolchain, whatever
    # is first on a user's PATH.
    kernel_env+=('PATH='"$(rustc --print sysroot)"'/bin:${PATH}')
    [ -n "${CARGO_HOME:-}" ] && kernel_env+=("CARGO_HOME=$CARGO_HOME")
fi
for kv in "${kernel_env[@]}"; do
    envs=(--env "$kv" "${envs[@]}")
done

# --- Kernelspec -------------------------------------------------------------------------------
resolve_prefix
args=(install --name "$name" --interrupt-mode "$interrupt_mode")
if [ -z "$display_name" ]; then
    display_name="Rust (tch-kernel)"
    # Side by side, kernels of several environments differ by their PyTorch.
    [ "$name" != rust-tch ] && [ -n "$torch_version" ] && display_name="Rust (tch-kernel, PyTorch ${torch_version%%+*})"
fi
args+=(--display-name "$display_name")
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
echo "Done. Start JupyterLab (e.g. $venv/bin/jupyter lab) and pick \"$display_name\"."
