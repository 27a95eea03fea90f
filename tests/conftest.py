"""Shared set-up for the end-to-end tests: every test talks to the real `tch-kernel` binary
through real Jupyter clients (jupyter_client, jupyter_kernel_test, nbconvert).

The kernelspecs live in a private Jupyter data dir, so the tests never touch the user's own
kernels and history. The binary is `$TCH_KERNEL_BIN` or the release build in this checkout.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from make_cifar_sample import write as write_cifar_sample

REPO = Path(__file__).resolve().parent.parent
KERNEL_BIN = Path(os.environ.get("TCH_KERNEL_BIN", REPO / "target" / "release" / "tch-kernel"))
KERNEL_NAME = "tch-kernel-test"
SIGNAL_KERNEL_NAME = "tch-kernel-test-signal"

TORCH_KERNEL_NAME = "tch-kernel-test-torch"


def _installed_torch_env():
    """The environment of the libtorch kernel that ./install.sh registered (`$TCH_KERNEL_SPEC`,
    default rust-tch): its libtorch, prebuilt prelude cache and library path. Read before the
    Jupyter paths are redirected below."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    name = os.environ.get("TCH_KERNEL_SPEC", "rust-tch")
    try:
        env = KernelSpecManager().get_kernel_spec(name).env
    except NoSuchKernel:
        return None
    return env if "TCH_KERNEL_PRELUDE" in env else None


TORCH_ENV = _installed_torch_env()

# Set before any test module imports jupyter_kernel_test (its classes start kernels by name).
_STATE = Path(tempfile.mkdtemp(prefix="tch-kernel-tests-"))
os.environ["JUPYTER_DATA_DIR"] = str(_STATE / "jupyter")
os.environ["JUPYTER_PATH"] = str(_STATE / "jupyter")
os.environ["JUPYTER_RUNTIME_DIR"] = str(_STATE / "runtime")
os.environ["TCH_KERNEL_DATA_DIR"] = str(_STATE / "kernel-data")
# The kernel's child build dirs go here too, not into the machine's /tmp.
os.environ.setdefault("TMPDIR", str(_STATE / "tmp"))
(_STATE / "tmp").mkdir(parents=True, exist_ok=True)


def install_spec(name, *extra):
    if not KERNEL_BIN.exists():
        raise RuntimeError(f"{KERNEL_BIN} is missing: run ./install.sh first (or set TCH_KERNEL_BIN)")
    subprocess.run(
        [str(KERNEL_BIN), "install", "--name", name, "--display-name", f"Rust test ({name})", *extra],
        check=True,
        capture_output=True,
    )


def install_torch_spec(name, env):
    """A libtorch kernelspec `name` with the environment `env` (TORCH_ENV, or a variation)."""
    install_spec(name, *[a for k, v in env.items() for a in ("--env", f"{k}={v}")])


install_spec(KERNEL_NAME)
install_spec(SIGNAL_KERNEL_NAME, "--interrupt-mode", "signal")
if TORCH_ENV:
    install_torch_spec(TORCH_KERNEL_NAME, TORCH_ENV)


@pytest.fixture(scope="session")
def torch_env():
    if not TORCH_ENV:
        pytest.fail(
            "no libtorch kernel installed: run ./install.sh (or set TCH_KERNEL_SPEC to the name "
            "of a kernel installed with libtorch)"
        )
    return TORCH_ENV


@pytest.fixture(scope="session")
def state_dir():
    return _STATE


def start(name=KERNEL_NAME):
    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name=name, startup_timeout=60)


@pytest.fixture(scope="module")
def kernel():
    km, kc = start()
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def run(kc, code, timeout=120, **kw):
    """Executes `code`, returning (reply content, [(msg_type, content), ...] of IOPub outputs)."""
    outputs = []
    reply = kc.execute_interactive(
        code,
        output_hook=lambda m: outputs.append((m["msg_type"], m["content"])),
        timeout=timeout,
        **kw,
    )
    return reply["content"], [o for o in outputs if o[0] != "status"]


def printed(marker):
    """A `when` for `run_interrupted`: the cell printed `marker`, so it is running."""
    return lambda msg_type, content: msg_type == "stream" and marker in content["text"]


def busy(msg_type, content):
    """A `when` for `run_interrupted`: the kernel took the cell (it compiles it first)."""
    return msg_type == "status" and content["execution_state"] == "busy"


def run_interrupted(km, kc, code, when, interrupts=1, timeout=120):
    """Executes `code` and interrupts it (`interrupts` times, back to back) at the first IOPub
    message of the cell for which `when(msg_type, content)` holds: on observed state, however
    long the compile takes. Returns what `run` returns."""
    sent = False

    def hook(msg):
        nonlocal sent
        if not sent and when(msg["msg_type"], msg["content"]):
            sent = True
            for _ in range(interrupts):
                km.interrupt_kernel()

    outputs = []
    reply = kc.execute_interactive(
        code,
        output_hook=lambda m: (outputs.append((m["msg_type"], m["content"])), hook(m)),
        timeout=timeout,
    )
    assert sent, "the cell ended before it was interrupted"
    return reply["content"], [o for o in outputs if o[0] != "status"]


def start_torch(extra_env=None, name=TORCH_KERNEL_NAME, cwd=None, stderr=None):
    """Starts the libtorch kernel `name` (environment plus `extra_env`, in the working directory
    `cwd`, as a notebook's folder, its stderr to the file `stderr`); returns (manager, client)."""
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name=name)
    env = dict(os.environ)
    env.update(extra_env or {})
    km.start_kernel(
        env=env, **({"cwd": str(cwd)} if cwd else {}), **({"stderr": stderr} if stderr else {})
    )
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc


def torch_client():
    """A libtorch kernel's client for a fixture to yield, shut down afterwards."""
    km, kc = start_torch()
    yield kc
    kc.stop_channels()
    km.shutdown_kernel()


@pytest.fixture(scope="module")
def tk(torch_env):
    """One libtorch kernel per test module."""
    yield from torch_client()


def result(outputs):
    return [c["data"]["text/plain"] for t, c in outputs if t == "execute_result"]


def ok(kc, code, **kw):
    """Runs `code`, which must succeed; returns its IOPub outputs."""
    reply, outputs = run(kc, code, timeout=600, **kw)
    assert reply["status"] == "ok", f"{code!r} failed: {reply.get('ename')}: {reply.get('evalue')}\n" + "\n".join(reply.get("traceback", []))
    return outputs


def stdout_of(outputs):
    return "".join(c["text"] for t, c in outputs if t == "stream" and c["name"] == "stdout")


# Only rust-analyzer completes a field of a struct the cell defines: the names saved at install
# have no answer, so this loads it (a kernel asks it only then, unless TCH_KERNEL_ANALYZER=first).
ANALYZER_PROBE = "struct WarmUpProbe { warm_field: i32 }\nlet probe = WarmUpProbe { warm_field: 1 };\nprobe.warm_f"


def wait_for_analyzer(kc, code=ANALYZER_PROBE, deadline_s=600):
    """Waits until rust-analyzer answers completions (the reply's `tch_kernel.source`
    metadata) for `code`, something only it knows. Until then the kernel answers from the
    names it knows. Polls the observed source; the deadline only bounds a kernel that never
    gets there. Returns rust-analyzer's reply for `code`."""
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        reply = kc.complete(code, len(code), reply=True, timeout=300)["content"]
        if reply["metadata"].get("tch_kernel", {}).get("source") == "rust-analyzer":
            return reply
        time.sleep(0.2)
    raise AssertionError("rust-analyzer never answered a completion")


@pytest.fixture(scope="session")
def notebook_env(tmp_path_factory):
    """Small settings for CI: a CIFAR-10 sample in the real binary format, a folder of real
    photos, one or two epochs, outputs (checkpoints, MLPerf logs, the exported job) in a temp
    dir."""
    root = tmp_path_factory.mktemp("notebooks")
    env = dict(os.environ)
    env.update({
        "CIFAR10_DIR": str(write_cifar_sample(root / "cifar-10-batches-bin")),
        "RUN_DIR": str(root / "runs"),
        "EPOCHS": "2",
        "BENCH_STEPS": "3",
        "BATCH_SIZE": "64",
        "RESNET50_BATCH": "4",
    })
    # Notebook 08: a folder of real photos (with a truncated file) and a ResNet-18 state_dict
    # saved by Python, fine-tuned at 64x64 for one epoch.
    import torch
    import torchvision
    from make_image_folder import write_folder

    write_folder(root / "images")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / "resnet18.pth")
    env.update({"IMAGE_DIR": str(root / "images"), "WEIGHTS": str(root / "resnet18.pth"), "IMAGE_SIZE": "64",
                # Notebook 04's ResNet-50 on real images: the same folder in ImageNet's layout.
                "IMAGENET_DIR": str(root / "images")})
    return env


def slurm_missing():
    """Why the Slurm tests cannot start a local cluster here, or None when they can."""
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd starts jobs as their users); CI runs as root"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(b)]
    if missing:
        return f"Slurm is not installed (no {', '.join(missing)}): tests/run.sh installs slurmctld, slurmd, slurm-client and munge when run as root"
    return None


@pytest.fixture(scope="session")
def slurm():
    """A real one-node Slurm (tests/local-slurm.sh), up for the whole session; its environment
    for clients (SLURM_CONF)."""
    why = slurm_missing()
    if why:
        pytest.skip(why)
    directory = _STATE / "slurm"
    script = REPO / "tests" / "local-slurm.sh"
    subprocess.run([str(script), "start", str(directory)], check=True, capture_output=True, text=True)
    try:
        yield {"SLURM_CONF": str(directory / "slurm.conf")}
    finally:
        subprocess.run([str(script), "stop", str(directory)], check=False)


def job_state(job_id, slurm_env):
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                         env=dict(os.environ, **slurm_env)).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return fields.get("JobState", "UNKNOWN"), fields


def wait_for_job(job_id, slurm_env, timeout_s=900):
    """Polls the controller until the job has ended; returns its final state and fields."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state, fields = job_state(job_id, slurm_env)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"):
            return state, fields
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {state} after {timeout_s} s")
