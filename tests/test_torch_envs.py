"""Kernels for other environments' PyTorch, side by side, and a course install used by another
Unix user.

Installs, with ./install.sh as a user would, a kernel on a second PyTorch (default 2.11.0, the
version of the GPU test machines; `TCH_KERNEL_OTHER_TORCH`), from a Python environment that has
it (`TCH_KERNEL_OTHER_TORCH_PYTHON`, else `.venv-torch<version>` in the checkout, created with pip
the first time). It is installed as a course kernel: `--prefix` and a shared `--cache-dir`. Then:
the conformance suite on it, a tensor cell, a workshop notebook, both kernels at the same time,
and the course kernel run by a second Unix user who cannot write the course's directories.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jupyter_kernel_test
import pytest

import test_conformance
import test_notebooks
from conftest import REPO, KERNEL_BIN, TORCH_KERNEL_NAME, _STATE, run, start_torch, wait_for_analyzer

OTHER_TORCH = os.environ.get("TCH_KERNEL_OTHER_TORCH", "2.11.0")
OTHER_NAME = "rust-torch" + "".join(OTHER_TORCH.split(".")[:2])
# World-readable, so that the second user can use the course install.
COURSE = _STATE / "course"
PREFIX = COURSE / "prefix"
# Kept between runs (a prebuild of the prelude takes minutes); under target/, which cargo ignores.
SHARED_CACHE = Path(os.environ.get("TCH_KERNEL_OTHER_TORCH_CACHE", REPO / "target" / "torch-envs" / OTHER_NAME))
STUDENT = "tchkernelstudent"
# The course's Rust toolchain, which its users can run: this one, hard-linked out of a home that
# other users may not enter (rustup's under /root).
TOOLCHAIN = REPO / "target" / "torch-envs" / "rust-toolchain"


def shared_toolchain_path():
    """PATH with a copy of this rustc's toolchain first (same files, other users can reach it)."""
    version = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    copy_version = subprocess.run([str(TOOLCHAIN / "bin" / "rustc"), "-vV"], capture_output=True, text=True).stdout if (TOOLCHAIN / "bin" / "rustc").exists() else ""
    if copy_version != version:
        sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
        shutil.rmtree(TOOLCHAIN, ignore_errors=True)
        TOOLCHAIN.parent.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["cp", "-al", sysroot, str(TOOLCHAIN)]).returncode != 0:
            shutil.rmtree(TOOLCHAIN, ignore_errors=True)
            return os.environ["PATH"]
    return os.pathsep.join([str(TOOLCHAIN / "bin"), os.environ["PATH"]])


def other_python():
    given = os.environ.get("TCH_KERNEL_OTHER_TORCH_PYTHON")
    if given:
        return Path(given)
    env = REPO / f".venv-torch{OTHER_TORCH}"
    python = env / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True) if python.exists() else None
    if probe is None or probe.returncode != 0 or not probe.stdout.startswith(OTHER_TORCH):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        pip = subprocess.run(
            # No cached copy of the wheels: the disk holds two torch installs already.
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-cache-dir", f"torch=={OTHER_TORCH}"],
            capture_output=True, text=True,
        )
        free_gb = shutil.disk_usage(env).free / 1e9
        assert pip.returncode == 0, f"pip install torch=={OTHER_TORCH} failed (it needs PyPI once, and about 5 GB; {free_gb:.1f} GB free):\n{pip.stderr[-3000:]}"
    return python


@pytest.fixture(scope="session", autouse=True)
def course_kernel():
    """The second environment's kernel, installed for a course."""
    python = other_python()
    for d in (_STATE, COURSE):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    r = subprocess.run(
        [str(REPO / "install.sh"), "--python", str(python), "--name", OTHER_NAME,
         "--prefix", str(PREFIX), "--cache-dir", str(SHARED_CACHE)],
        capture_output=True, text=True, env=dict(os.environ, PATH=shared_toolchain_path()),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    spec = PREFIX / "share" / "jupyter" / "kernels" / OTHER_NAME / "kernel.json"
    assert spec.exists(), r.stdout
    # Like a course's module file: Jupyter looks in the course's prefix too.
    os.environ["JUPYTER_PATH"] = os.pathsep.join([os.environ["JUPYTER_PATH"], str(PREFIX / "share" / "jupyter")])
    return json.loads(spec.read_text())


def start_other():
    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name=OTHER_NAME, startup_timeout=120)


@pytest.fixture(scope="module")
def other():
    km, kc = start_other()
    yield kc
    kc.stop_channels()
    km.shutdown_kernel()


def text_of(outputs):
    parts = []
    for kind, content in outputs:
        if kind == "stream":
            parts.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            parts.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            parts.append(f"{content['ename']}: {content['evalue']}")
    return "".join(parts)


class OtherTorchConformance(test_conformance.TchKernelConformance):
    kernel_name = OTHER_NAME


def test_the_installer_chose_the_tch_release_for_that_torch(course_kernel):
    env = course_kernel["env"]
    table = {row.split("\t")[0]: row.split("\t")[1] for row in (REPO / "kernelspec" / "torch-versions.tsv").read_text().splitlines()
             if row and not row.startswith("#")}
    minor = ".".join(OTHER_TORCH.split(".")[:2])
    assert env["TCH_KERNEL_TCH_VERSION"] == table[minor]
    assert env["TCH_KERNEL_TORCH_VERSION"].startswith(OTHER_TORCH)
    assert course_kernel["display_name"] == f"Rust (tch-kernel, PyTorch {OTHER_TORCH})"
    lock = Path(env["TCH_KERNEL_LOCKFILE"]).read_text()
    assert f'name = "torch-sys"\nversion = "{table[minor]}"' in lock
    assert Path(env["TCH_KERNEL_CACHE_DIR"]) == SHARED_CACHE.resolve()


def test_a_tensor_cell_trains(other):
    reply, outputs = run(other, ":gpu")
    assert reply["status"] == "ok"
    assert f"libtorch {OTHER_TORCH}" in text_of(outputs), outputs
    reply, outputs = run(other, textwrap.dedent("""\
        manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = nn::linear(vs.root(), 3, 1, Default::default());
        let mut opt = nn::Adam::default().build(&vs, 0.05).unwrap();
        let x = Tensor::randn([64, 3], (Kind::Float, Device::Cpu));
        let y = x.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        let first = (net.forward(&x) - &y).square().mean(Kind::Float).double_value(&[]);
        for _ in 0..200 { let loss = (net.forward(&x) - &y).square().mean(Kind::Float); opt.backward_step(&loss); }
        let last = (net.forward(&x) - &y).square().mean(Kind::Float).double_value(&[]);
        println!("loss {first:.4} -> {last:.6}");
        last < first / 100.0
    """), timeout=300)
    assert reply["status"] == "ok", outputs
    assert text_of(outputs).rstrip().endswith("true"), outputs


def test_a_workshop_notebook_runs(tmp_path, notebook_env):
    # notebook_env may date from before the course's prefix joined JUPYTER_PATH.
    env = dict(notebook_env, JUPYTER_PATH=os.environ["JUPYTER_PATH"])
    executed = test_notebooks.execute(REPO / "notebooks" / "02-first-classifier.ipynb", tmp_path, env, kernel_name=OTHER_NAME)
    text = "".join(test_notebooks.streams(c) for c in executed["cells"] if c["cell_type"] == "code")
    assert float(text.split("test accuracy: ")[1].split()[0]) > 0.9, text


def test_two_environments_at_once(other, torch_env):
    km, main = start_torch()
    try:
        versions = {}
        for name, kc in [("main", main), ("other", other)]:
            reply, outputs = run(kc, "Tensor::from_slice(&[1.0f32, 2.0, 3.0]).sum(Kind::Float)")
            assert reply["status"] == "ok", outputs
            versions[name] = text_of(run(kc, ":gpu")[1]).splitlines()[0]
        assert versions["main"].startswith("libtorch " + torch_env["TCH_KERNEL_TORCH_VERSION"]), versions
        assert versions["other"].startswith(f"libtorch {OTHER_TORCH}"), versions
        # Each kernel builds in its own environment's cache, and both are running now.
        for cache in (Path(torch_env["TCH_KERNEL_CACHE_DIR"]), SHARED_CACHE):
            live = [d for d in (cache / "instances").iterdir() if not d.name.startswith(".")]
            assert live, f"no running kernel's build dir in {cache}"
    finally:
        main.stop_channels()
        km.shutdown_kernel()


STUDENT_SCRIPT = """
import json, os, sys
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=300)
out = []
def hook(m):
    c = m["content"]
    if m["msg_type"] == "stream": out.append(c["text"])
    elif m["msg_type"] == "execute_result": out.append(c["data"]["text/plain"])
    elif m["msg_type"] == "error": out.append(c["ename"] + ": " + c["evalue"])
replies = []
for code in ["let t = Tensor::from_slice(&[1.5f32, 2.5]);", "(&t * 2).sum(Kind::Float)",
             "std::env::current_dir().unwrap().display().to_string()"]:
    replies.append(kc.execute_interactive(code, output_hook=hook, timeout=300)["content"]["status"])
# Tab on a field of a tch type: rust-analyzer (which the names saved at install cannot stand in
# for here) reads the crates' sources from the course's CARGO_HOME.
import time
deadline, matches = time.monotonic() + 600, []
while time.monotonic() < deadline:
    code = "struct Net { fc: nn::Linear }\nlet net: Net = todo!();\nnet.fc."
    reply = kc.complete(code, len(code), reply=True, timeout=300)["content"]
    if reply["metadata"].get("tch_kernel", {}).get("source") == "rust-analyzer":
        matches = reply["matches"]
        break
    time.sleep(0.5)
km.shutdown_kernel()
print(json.dumps({"replies": replies, "out": out, "matches": matches}))
"""


def readable_by(user, path):
    return subprocess.run(["runuser", "-u", user, "--", "test", "-r", str(path)]).returncode == 0


def student_python():
    """A Python the student can run, with jupyter_client: this one, or the system's of the same
    version reading this environment's packages (a venv's interpreter may live in a home that
    other users cannot enter, e.g. pyenv's under /root)."""
    if readable_by(STUDENT, Path(sys.executable).resolve()):
        return [sys.executable]
    import jupyter_client
    site = Path(jupyter_client.__file__).parent.parent
    for python in ["/usr/bin/python3", "/usr/local/bin/python3"]:
        same = subprocess.run([python, "-c", f"import sys; assert sys.version_info[:2] == {tuple(sys.version_info[:2])}"], capture_output=True)
        if same.returncode == 0 and readable_by(STUDENT, site / "jupyter_client" / "__init__.py"):
            return ["env", f"PYTHONPATH={site}", python]
    return None


def test_a_course_install_serves_another_user(course_kernel):
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root with useradd and runuser, to create a second Unix user")
    try:
        pwd.getpwnam(STUDENT)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", STUDENT], check=True)
    home = Path(pwd.getpwnam(STUDENT).pw_dir)
    shutil.rmtree(home / ".cache", ignore_errors=True)
    env = course_kernel["env"]
    rust_bin = Path(env["PATH"].split(":")[0])
    needed = [KERNEL_BIN, Path(env["TCH_KERNEL_PRELUDE"]) / "src" / "lib.rs", Path(env["LIBTORCH"]) / "lib" / "libtorch_cpu.so",
              rust_bin / "rustc", Path(env["CARGO_HOME"]) / "registry",
              SHARED_CACHE / "prebuilt" / "stamp", PREFIX / "share" / "jupyter" / "kernels" / OTHER_NAME / "kernel.json"]
    unreadable = [str(p) for p in needed if not readable_by(STUDENT, p)]
    if unreadable:
        pytest.skip(f"another user cannot read {unreadable}: a course install needs a checkout and environment all its users can read")
    python = student_python()
    if python is None:
        pytest.skip(f"no Python with jupyter_client that {STUDENT} can run")
    def snapshot():
        return sorted((str(p), p.stat().st_mtime_ns) for d in ("prebuilt", "cargo-home") for p in (SHARED_CACHE / d).rglob("*"))
    before = snapshot()
    script = COURSE / "student.py"
    script.write_text(STUDENT_SCRIPT)
    script.chmod(0o644)
    r = subprocess.run(
        ["runuser", "-u", STUDENT, "--", "env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", "TMPDIR=/tmp",
         f"JUPYTER_PATH={PREFIX / 'share' / 'jupyter'}", *python, str(script), OTHER_NAME],
        capture_output=True, text=True, timeout=900, cwd="/tmp",
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["replies"] == ["ok", "ok", "ok"], result
    assert result["out"][0] == "tensor(8.)", result
    assert "ws" in result["matches"] and "bs" in result["matches"], result
    # The student's build dir was in the student's own cache, and the course's files are as
    # the teacher left them.
    own = home / ".cache" / "tch-kernel" / "shared"
    assert own.is_dir() and any(own.iterdir()), list(home.rglob("*"))[:20]
    assert all(p.owner() == STUDENT for p in own.rglob("*")), "only the student's files"
    assert not any(p.owner() == STUDENT for p in SHARED_CACHE.rglob("*")), "nothing of the student's in the course cache"
    assert before == snapshot(), "the prebuilt prelude and the crates were only read"


def test_an_export_pins_that_tch_release(course_kernel, tmp_path):
    env = course_kernel["env"]
    out = tmp_path / "job"
    r = subprocess.run([str(KERNEL_BIN), "export", "--kernel", OTHER_NAME, str(REPO / "notebooks" / "02-first-classifier.ipynb"), str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    manifest = (out / "Cargo.toml").read_text()
    assert f'torch-sys = "={env["TCH_KERNEL_TCH_VERSION"]}"' in manifest, manifest
    sbatch = (out / "job.sbatch").read_text()
    assert f"export CARGO_HOME='{env['CARGO_HOME']}'" in sbatch, sbatch
    # The project resolves offline from the course's crates, to the kernel's tch.
    meta = subprocess.run(["cargo", "metadata", "--offline", "--format-version", "1"], cwd=out, capture_output=True, text=True,
                          env=dict(os.environ, CARGO_HOME=env["CARGO_HOME"]))
    assert meta.returncode == 0, meta.stderr
    versions = {p["name"]: p["version"] for p in json.loads(meta.stdout)["packages"]}
    assert versions["tch"] == env["TCH_KERNEL_TCH_VERSION"], versions
