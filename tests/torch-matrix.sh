#!/usr/bin/env bash
# The whole end-to-end suite on other PyTorch versions, each one as the suite's libtorch kernel:
#
#   tests/torch-matrix.sh 2.10.0 2.12.1 2.15.0    # tch as kernelspec/torch-versions.tsv says
#   GENERATE=1 tests/torch-matrix.sh 2.13.0       # bindings generated even where tch has a release
#   TCH=0.24.0 tests/torch-matrix.sh 2.12.1       # another tch release than the table's
#
# Per version: a Python env .venv-torch<version> in the checkout (pip, the first time), a kernel
# installed by ./install.sh into a throw-away Jupyter dir with its cache under target/torch-envs/,
# then pytest on tests/ with TCH_KERNEL_SPEC naming it. Logs go to target/torch-envs/<kernel>.*.log;
# the last lines say per version what passed (for the README's table). Run ./install.sh first.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${TCH_KERNEL_PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || { echo "torch-matrix.sh: $python not found: run ./install.sh first" >&2; exit 1; }
[ $# -gt 0 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
mkdir -p "$repo/target/torch-envs"
summary=()
failed=0
for version in "$@"; do
    env="$repo/.venv-torch$version"
    name="rust-matrix-${version//./-}"
    logs="$repo/target/torch-envs/$name"
    if ! "$env/bin/python" -c "import torch, sys; sys.exit(not torch.__version__.startswith('$version'))" 2>/dev/null; then
        echo "==> torch $version into $env"
        python3 -m venv --clear "$env" && "$env/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "torch==$version" \
            || { summary+=("$version: pip install torch==$version failed"); failed=1; continue; }
    fi
    data="$(mktemp -d)/jupyter"
    echo "==> installing $name (tch ${TCH:-from the table}${GENERATE:+, generated bindings}); log: $logs.install.log"
    if ! JUPYTER_DATA_DIR="$data" "$repo/install.sh" --python "$env/bin/python" --name "$name" \
            --cache-dir "$repo/target/torch-envs/$name" ${TCH:+--tch "$TCH"} ${GENERATE:+--generate-bindings} > "$logs.install.log" 2>&1; then
        summary+=("$version: install failed: $(grep -m1 -E 'error' "$logs.install.log")")
        failed=1
        continue
    fi
    tch="$(grep -o '"TCH_KERNEL_TCH_VERSION": "[^"]*"' "$data/kernels/$name/kernel.json" | cut -d'"' -f4)"
    grep -q TCH_KERNEL_BINDINGS "$data/kernels/$name/kernel.json" && tch="$tch, bindings generated"
    echo "==> the suite on torch $version (tch $tch); log: $logs.pytest.log"
    JUPYTER_DATA_DIR="$data" TCH_KERNEL_SPEC="$name" "$python" -m pytest -p no:cacheprovider -q -rs "$repo/tests" > "$logs.pytest.log" 2>&1
    status=$?
    [ $status -eq 0 ] || failed=1
    summary+=("$version (tch $tch): $(tail -n 1 "$logs.pytest.log")")
done
printf '%s\n' "${summary[@]}"
exit $failed
