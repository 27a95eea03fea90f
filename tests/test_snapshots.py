"""Work that survives, through a real client: after each cell the kernel writes a snapshot of
the variables (tensors, VarStores, plain data), and they come back after the evaluation process
dies (kill -9 between cells, an abort in a cell, an interrupt that had to restart it), and by
`:restore` after the client restarts the kernel. Snapshots of two notebooks never mix.

Each test names its own notebook (`JPY_SESSION_NAME`, as Jupyter Server sets it) and keeps the
snapshots in its own directory (`TCH_KERNEL_SNAPSHOTS`)."""

import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import busy, ok, result, run, run_interrupted, start_torch, stdout_of

ANSI = re.compile(r"\x1b\[[0-9;]*m")

# A small model trained for a few steps: tensors, a VarStore, plain data, and what cannot be
# saved (the model's code, the optimizer's moments).
TRAIN = """
let t = Tensor::randn([64, 32], (Kind::Float, Device::Cpu));
let y = t.sum_dim_intlist(1, true, Kind::Float);
let mut losses: Vec<f64> = Vec::new();
let vs = nn::VarStore::new(Device::Cpu);
let net = nn::seq().add(nn::linear(vs.root() / "l1", 32, 16, Default::default())).add_fn(|x| x.relu()).add(nn::linear(vs.root() / "l2", 16, 1, Default::default()));
let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
for _ in 0..30 {
    let loss = net.forward(&t).mse_loss(&y, Reduction::Mean);
    opt.backward_step(&loss);
    losses.push(loss.double_value(&[]));
}
"""
# Built again after a crash: the same layers on a new VarStore, whose weights `:restore` loads.
MODEL = """
let vs = nn::VarStore::new(Device::Cpu);
let net = nn::seq().add(nn::linear(vs.root() / "l1", 32, 16, Default::default())).add_fn(|x| x.relu()).add(nn::linear(vs.root() / "l2", 16, 1, Default::default()));
"""
STATE = 'println!("{:.9} {} {:?} {:.9}", t.sum(Kind::Double).double_value(&[]), losses.len(), losses.last(), vs.variables()["l1.weight"].sum(Kind::Double).double_value(&[]));'
MODEL_LOSS = 'println!("{:.9}", net.forward(&t).mse_loss(&y, Reduction::Mean).double_value(&[]));'


def start(tmp_path, notebook, **extra):
    env = {"TCH_KERNEL_SNAPSHOTS": str(tmp_path / "snapshots"), "JPY_SESSION_NAME": str(tmp_path / notebook)}
    env.update(extra)
    return start_torch(env)


def text(outputs, name):
    return "".join(c["text"] for t, c in outputs if t == "stream" and c["name"] == name)


def error_text(reply):
    return ANSI.sub("", "\n".join([reply.get("evalue", ""), *reply.get("traceback", [])]))


def wait_saved(kc, names, deadline_s=120):
    """Waits until `:snapshot` lists `names` as saved by this evaluation process."""
    end = time.monotonic() + deadline_s
    while True:
        shown = stdout_of(ok(kc, ":snapshot"))
        now = shown.split("Kept from an earlier process")[0]
        if all(re.search(rf"^  {n}: (?!not saved)", now, re.M) for n in names):
            return shown
        assert time.monotonic() < end, f"not saved after {deadline_s} s:\n{shown}"
        time.sleep(0.2)


def wait_gone(pid, deadline_s=60):
    """Waits until process `pid` is dead (gone, or a zombie its parent has not reaped)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs")


@pytest.fixture
def trained(torch_env, tmp_path):
    """A kernel on notebook `train.ipynb` that has trained the model and saved its snapshot."""
    km, kc = start(tmp_path, "train.ipynb")
    ok(kc, TRAIN)
    state = stdout_of(ok(kc, STATE))
    loss = stdout_of(ok(kc, MODEL_LOSS))
    shown = wait_saved(kc, ["t", "y", "losses", "vs"])
    assert re.search(r"^  net: not saved: a model", shown, re.M), shown
    assert re.search(r"^  opt: not saved: an optimizer", shown, re.M), shown
    yield km, kc, state, loss
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def test_after_kill_9_the_next_cell_runs_with_the_variables_and_the_model_comes_back(trained):
    km, kc, state, loss = trained
    pid = int(result(ok(kc, "std::process::id()"))[0])
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)

    outputs = ok(kc, STATE)
    assert stdout_of(outputs) == state, "tensors, plain data and the VarStore's weights are back"
    notice = text(outputs, "stderr")
    assert "had died since the last cell" in notice and "Restored from the snapshot" in notice, notice
    assert re.search(r"net: a model", notice) and re.search(r"opt: an optimizer", notice), notice

    # The model is code: built again, its weights come back from the VarStore by `:restore`.
    ok(kc, MODEL)
    assert stdout_of(ok(kc, MODEL_LOSS)) != loss, "a new model starts from new weights"
    restored = stdout_of(ok(kc, ":restore"))
    assert "vs: 4 of 4 weights loaded into the existing VarStore" in restored, restored
    assert stdout_of(ok(kc, MODEL_LOSS)) == loss, "the trained model computes what it computed"


def test_a_crash_in_a_cell_restores_at_once(trained):
    km, kc, state, _ = trained
    reply, _ = run(kc, "println!(\"going\");\nstd::process::abort();", timeout=300)
    assert reply["status"] == "error" and reply["ename"] == "EvaluatorCrashed"
    message = error_text(reply)
    assert "Restored from the snapshot" in message and "losses: Vec<f64>" in message, message
    assert "Lost" not in message, message
    assert stdout_of(ok(kc, STATE)) == state


def test_an_interrupt_that_restarts_the_process_keeps_the_variables(torch_env, tmp_path):
    km, kc = start(tmp_path, "sleep.ipynb", TCH_KERNEL_INTERRUPT_GRACE="1")
    try:
        ok(kc, "let w = Tensor::arange(10, (Kind::Int64, Device::Cpu));\nlet label = String::from(\"run 7\");")
        wait_saved(kc, ["w", "label"])
        reply, _ = run_interrupted(
            km, kc, 'println!("sleeping");\nstd::thread::sleep(std::time::Duration::from_secs(600));',
            when=lambda t, c: t == "stream" and "sleeping" in c["text"], timeout=300,
        )
        assert reply["ename"] == "KeyboardInterrupt"
        assert "Restored from the snapshot" in error_text(reply), error_text(reply)
        assert result(ok(kc, "(w.sum(Kind::Int64).int64_value(&[]), label.clone())")) == ['(45, "run 7")']
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_cell_that_ends_while_the_last_snapshot_is_written_is_the_one_restored(torch_env, tmp_path):
    km, kc = start(tmp_path, "quick.ipynb")
    try:
        # 256 MiB take a while to write; the next cell ends before that and changes `n`.
        ok(kc, "let big = Tensor::ones([67_108_864], (Kind::Float, Device::Cpu));\nlet mut n = 1u32;")
        ok(kc, "n += 1;\nlet marker = true;")
        # The files are written in the variables' order, so once `marker` is there, so are the
        # others as this cell left them.
        wait_saved(kc, ["big", "n", "marker"])
        pid = int(result(ok(kc, "std::process::id()"))[0])
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        assert result(ok(kc, "(n, marker, big.sum(Kind::Double).double_value(&[]))")) == ["(2, true, 67108864.0)"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_restore_after_the_client_restarts_the_kernel_and_notebooks_never_mix(trained, tmp_path):
    km, kc, state, loss = trained
    km.restart_kernel(now=True)
    kc.wait_for_ready(timeout=300)
    assert run(kc, STATE)[0]["status"] == "error", "a restart by the client starts empty"
    restored = stdout_of(ok(kc, ":restore"))
    assert re.search(r"^  t: Tensor \[64, 32\] Float", restored, re.M), restored
    assert "Not restored:" in restored and "opt: an optimizer" in restored, restored
    assert stdout_of(ok(kc, STATE)) == state

    other_km, other_kc = start(tmp_path, "other.ipynb")
    try:
        assert "No snapshot" in stdout_of(ok(other_kc, ":restore"))
    finally:
        other_kc.stop_channels()
        other_km.shutdown_kernel(now=True)


def children_states(pid):
    """{pid: state} of the child processes of `pid` (`Z`: exited, not reaped yet)."""
    states = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                states[int(child)] = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
    return states


def modes(root):
    """{path relative to root: permission bits} of root and everything under it."""
    found = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = path.stat().st_mode & 0o777
    return found


def test_what_holds_a_users_values_is_theirs_alone(torch_env, tmp_path):
    """Snapshots, the build dir (the cells' sources) and the history are 0700/0600 whatever the
    umask; a password is never written; the snapshot dir's name does not say the notebook's; the
    snapshot writer is reaped as soon as it exits."""
    old_umask = os.umask(0o002)  # a cluster's usual umask, inherited by the kernel
    try:
        km, kc = start(tmp_path, "secret-project.ipynb", TCH_KERNEL_DATA_DIR=str(tmp_path / "data"))
    finally:
        os.umask(old_umask)
    try:
        child = int(result(ok(kc, "std::process::id()"))[0])

        def answer(msg):
            assert msg["content"]["password"]
            kc.input("hunter2-token")

        code = 'let token = password("API token: ");\nlet steps: Vec<i64> = vec![1, 2, 3];'
        reply, _ = run(kc, code, allow_stdin=True, stdin_hook=answer)
        assert reply["status"] == "ok", reply
        shown = wait_saved(kc, ["steps"])
        assert re.search(r"^  token: not saved: it holds a password", shown, re.M), shown

        (snapshot_dir,) = (tmp_path / "snapshots").iterdir()
        assert "secret" not in snapshot_dir.name, snapshot_dir
        found = modes(snapshot_dir)
        assert {p: m for p, m in found.items() if m not in (0o700, 0o600)} == {}, found
        for path in snapshot_dir.rglob("*"):
            if path.is_file():
                assert b"hunter2-token" not in path.read_bytes(), path

        history = tmp_path / "data" / "history.jsonl"
        assert history.stat().st_mode & 0o777 == 0o600
        assert history.parent.stat().st_mode & 0o777 == 0o700

        cache = Path(km.kernel_spec.env["TCH_KERNEL_CACHE_DIR"])
        kernel_pid = km.provisioner.process.pid
        (build_dir,) = [d for d in cache.glob("**/instances/*") if d.name.endswith(f"-{kernel_pid}")]
        assert build_dir.stat().st_mode & 0o777 == 0o700, build_dir

        # The writer is gone once it has written: not left as a zombie for the next cell to reap.
        end = time.monotonic() + 60
        while children_states(child):
            assert time.monotonic() < end, f"writers left: {children_states(child)}"
            time.sleep(0.05)

        # The password is still the cell's to use.
        assert result(ok(kc, "token.len()")) == ["13"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_without_snapshots_the_commands_say_so(torch_env, tmp_path):
    km, kc = start(tmp_path, "off.ipynb", TCH_KERNEL_SNAPSHOTS="off")
    try:
        assert "Snapshots are off" in stdout_of(ok(kc, ":snapshot"))
        reply, _ = run(kc, ":restore")
        assert reply["status"] == "error" and "snapshots are off" in reply["evalue"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def memory_cgroup(name):
    """A new memory cgroup (v1's memory controller, else v2's with memory enabled) and the file
    that sets its limit; skips where this test may not make one (not root, no controller)."""
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    if (v1 / "memory.limit_in_bytes").exists():
        group, limit_file = v1 / name, "memory.limit_in_bytes"
    elif "memory" in (v2 / "cgroup.subtree_control").read_text() if (v2 / "cgroup.subtree_control").exists() else False:
        group, limit_file = v2 / name, "memory.max"
    else:
        pytest.skip("no memory cgroup controller to limit a process with")
    try:
        group.mkdir(exist_ok=True)
    except OSError as e:
        pytest.skip(f"cannot create a memory cgroup: {e}")
    return group, group / limit_file


def test_a_kill_for_memory_says_so_and_restores(torch_env, tmp_path):
    group, limit = memory_cgroup(f"tch-kernel-test-{os.getpid()}")
    km, kc = start(tmp_path, "big.ipynb")
    try:
        ok(kc, "let kept = Tensor::arange(5, (Kind::Int64, Device::Cpu));")
        wait_saved(kc, ["kept"])
        # The evaluation process alone goes into a cgroup with a 256 MiB limit, as a Slurm job's
        # processes are; memory it already holds is not counted there.
        pid = result(ok(kc, "std::process::id()"))[0]
        limit.write_text(str(256 << 20))
        (group / "cgroup.procs").write_text(pid)
        reply, _ = run(kc, "let big = Tensor::ones([400_000_000], (Kind::Float, Device::Cpu));\nbig.sum(Kind::Float)", timeout=300)
        message = error_text(reply)
        assert reply["ename"] == "OutOfMemory", message
        assert "the limit is 256.0 MiB" in message and "was in use at the most" in message, message
        assert "Restored from the snapshot" in message and "kept: Tensor [5] Int64" in message, message
        assert result(ok(kc, "kept.sum(Kind::Int64).int64_value(&[])")) == ["10"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        group.rmdir()
