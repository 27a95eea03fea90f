"""install.sh writes named kernelspecs where Jupyter looks for them, like `ipykernel install`."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import KERNEL_BIN, REPO


def install(*args, data_dir, extra_env=None, torch=False):
    """Runs install.sh; without `torch`, a plain Rust kernel (no prelude build)."""
    env = dict(os.environ, JUPYTER_DATA_DIR=str(data_dir))
    env.pop("JUPYTER_PATH", None)
    env.update(extra_env or {})
    flags = ["--no-venv"] + ([] if torch else ["--no-torch"])
    return subprocess.run([str(REPO / "install.sh"), *flags, *args], env=env, capture_output=True, text=True)


def kernelspecs(data_dir, jupyter_path=None):
    env = dict(os.environ, JUPYTER_DATA_DIR=str(data_dir))
    env.pop("JUPYTER_PATH", None)
    if jupyter_path:
        env["JUPYTER_PATH"] = str(jupyter_path)
    jupyter = Path(sys.executable).parent / "jupyter"
    out = subprocess.run([str(jupyter), "kernelspec", "list", "--json"], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["kernelspecs"]


def test_user_install_is_listed_by_jupyter(tmp_path):
    r = install("--name", "Rust-Course", "--display-name", "Rust (course 2026)", "--env", "COURSE=dl101", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    specs = kernelspecs(tmp_path)
    assert "rust-course" in specs
    spec = specs["rust-course"]["spec"]
    assert spec["display_name"] == "Rust (course 2026)"
    assert spec["language"] == "rust"
    assert spec["interrupt_mode"] == "message"
    assert spec["env"] == {"COURSE": "dl101"}
    assert Path(spec["argv"][0]).is_absolute() and spec["argv"][1:] == ["--connection-file", "{connection_file}"]
    spec_dir = Path(specs["rust-course"]["resource_dir"])
    for logo in ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg"):
        assert (spec_dir / logo).stat().st_size > 0


def test_reinstall_replaces_only_its_own_kernel(tmp_path):
    assert install("--name", "rust-a", "--display-name", "A", data_dir=tmp_path).returncode == 0
    other = tmp_path / "kernels" / "python3"
    other.mkdir(parents=True)
    (other / "kernel.json").write_text(json.dumps({"argv": ["python3"], "display_name": "Python 3", "language": "python"}))
    assert install("--name", "rust-a", "--display-name", "A2", data_dir=tmp_path).returncode == 0
    specs = kernelspecs(tmp_path)
    assert specs["rust-a"]["spec"]["display_name"] == "A2"
    assert "python3" in specs
    # A kernelspec written by another tool is not overwritten.
    r = install("--name", "python3", data_dir=tmp_path)
    assert r.returncode != 0 and "not written by tch-kernel" in r.stderr
    assert json.loads((other / "kernel.json").read_text())["display_name"] == "Python 3"


def test_prefix_install_and_uninstall(tmp_path):
    prefix = tmp_path / "env"
    data = tmp_path / "data"
    assert install("--name", "rust-shared", "--prefix", str(prefix), data_dir=data).returncode == 0
    assert (prefix / "share/jupyter/kernels/rust-shared/kernel.json").exists()
    assert "rust-shared" in kernelspecs(data, jupyter_path=prefix / "share/jupyter")
    r = install("--uninstall", "rust-shared", "--prefix", str(prefix), data_dir=data)
    assert r.returncode == 0, r.stderr
    assert not (prefix / "share/jupyter/kernels/rust-shared").exists()


def test_sys_prefix_uses_the_python_environment(tmp_path):
    env_prefix = tmp_path / "pyenv"
    fake_python = tmp_path / "python"
    # Stands in for an environment's python: install.sh only asks it for sys.prefix.
    fake_python.write_text(f"#!/bin/sh\necho {env_prefix}\n")
    fake_python.chmod(0o755)
    r = install("--python", str(fake_python), "--sys-prefix", "--name", "rust-env", data_dir=tmp_path / "data")
    assert r.returncode == 0, r.stderr
    assert (env_prefix / "share/jupyter/kernels/rust-env/kernel.json").exists()


def test_bad_input_is_refused_clearly(tmp_path):
    r = install("--name", "no spaces allowed", data_dir=tmp_path)
    assert r.returncode != 0 and "invalid kernel name" in r.stderr
    r = install("--bogus", data_dir=tmp_path)
    assert r.returncode != 0 and "unknown option" in r.stderr
    r = install("--uninstall", "never-installed", data_dir=tmp_path)
    assert r.returncode != 0 and "no kernelspec" in r.stderr


def fake_libtorch(root, version):
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libtorch_cpu.so").write_bytes(b"")
    (root / "include" / "torch").mkdir(parents=True)
    (root / "build-version").write_text(version + "\n")
    return root


def test_wrong_or_missing_torch_is_a_clear_error(tmp_path):
    r = install("--libtorch", str(tmp_path / "nowhere"), data_dir=tmp_path, torch=True)
    assert r.returncode != 0 and "no such directory" in r.stderr
    rows = [line.split("\t") for line in (REPO / "kernelspec" / "torch-versions.tsv").read_text().splitlines()
            if line and not line.startswith("#")]
    supported = [row[0] for row in rows]
    old = fake_libtorch(tmp_path / "libtorch-2.9.1", "2.9.1")
    r = install("--libtorch", str(old), data_dir=tmp_path, torch=True)
    assert r.returncode != 0 and "PyTorch 2.9.1 is not supported" in r.stderr, r.stderr
    assert "supported are PyTorch " + ", ".join(supported) + " and newer" in r.stderr, r.stderr
    # Newer than the table: a warning naming the last tested version, then its bindings are
    # generated from torchgen, which an unpacked libtorch lacks.
    newer = fake_libtorch(tmp_path / "libtorch-3.0.0", "3.0.0")
    r = install("--libtorch", str(newer), data_dir=tmp_path, torch=True)
    assert f"newer than any this kernel was tested with (the last: {rows[-1][3]})" in r.stderr, r.stderr
    assert r.returncode != 0 and "has no torchgen beside it" in r.stderr, r.stderr
    # A torchgen that cannot make the operator list: the failing step and its log are named.
    site = tmp_path / "site-packages"
    broken = fake_libtorch(site / "torch", "3.0.0")
    native = site / "torchgen" / "packaged" / "ATen" / "native"
    native.mkdir(parents=True)
    (native / "native_functions.yaml").write_text("not: [the operators\n")
    (site / "torchgen" / "__init__.py").write_text("")
    r = install("--libtorch", str(broken), "--cache-dir", str(tmp_path / "cache"), data_dir=tmp_path, torch=True)
    assert r.returncode != 0 and "generating tch's bindings for PyTorch 3.0.0 failed" in r.stderr, r.stderr
    log = tmp_path / "cache" / "bindings.log"
    assert f"(log: {log})" in r.stderr and "torchgen" in log.read_text(), r.stderr
    # The binary's own install runs the same installer for a libtorch kernel.
    old = tmp_path / "libtorch-2.9.1"
    env = dict(os.environ, JUPYTER_DATA_DIR=str(tmp_path))
    r = subprocess.run([str(KERNEL_BIN), "install", "--name", "old-torch", "--libtorch", str(old)], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "PyTorch 2.9.1 is not supported" in r.stderr, r.stderr
    # A partial copy: a CUDA build (so its version says) without its CUDA library, and the reverse.
    partial = fake_libtorch(tmp_path / "libtorch-cu", "2.13.0+cu130")
    r = install("--libtorch", str(partial), data_dir=tmp_path, torch=True)
    assert r.returncode != 0 and "a CUDA build (2.13.0+cu130) without lib/libtorch_cuda.so" in r.stderr, r.stderr
    cpu = fake_libtorch(tmp_path / "libtorch-cpu", "2.13.0+cpu")
    (cpu / "lib" / "libtorch_cuda.so").write_bytes(b"")
    r = install("--libtorch", str(cpu), data_dir=tmp_path, torch=True)
    assert r.returncode != 0 and "a CPU build (2.13.0+cpu) with lib/libtorch_cuda.so" in r.stderr, r.stderr
    not_torch = tmp_path / "empty"
    not_torch.mkdir()
    r = install("--libtorch", str(not_torch), data_dir=tmp_path, torch=True)
    assert r.returncode != 0 and "libtorch_cpu.so not found" in r.stderr
    no_torch_python = tmp_path / "python"
    no_torch_python.write_text("#!/bin/sh\nexit 1\n")
    no_torch_python.chmod(0o755)
    r = install("--python", str(no_torch_python), data_dir=tmp_path, torch=True)
    assert r.returncode != 0 and "torch is not installed" in r.stderr
    assert not (tmp_path / "kernels").exists(), "a failed install registers no kernel"
