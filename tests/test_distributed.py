"""Data-parallel training on libtorch's own c10d (the c10d crate, re-exported by the prelude):
tests/notebooks/data-parallel.ipynb runs as is in the kernel (one process), and exported, its
program started as 2 ranks by torchrun or by Slurm's srun leaves, on both ranks bit for bit, the
weights one process reaches over the same global batches. A rank that dies, a rendezvous that
cannot be reached, and ranks that disagree (world size, model) end with errors that say so.
Notebook 07 trains ResNet-9 in the kernel, then submits itself as a 2-task Slurm job."""

import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import KERNEL_BIN, REPO, TORCH_KERNEL_NAME, wait_for_job
from test_export import shell_env
from test_notebooks import assert_cells_ran_as_tagged, execute, streams

NOTEBOOK = REPO / "tests" / "notebooks" / "data-parallel.ipynb"
NAME = "data-parallel"


@pytest.fixture(scope="module")
def program(torch_env, tmp_path_factory):
    """The notebook exported for 2 ranks on one node and built as a user would (a shell without
    the kernel's settings); the project, the binary and that shell's environment."""
    project = tmp_path_factory.mktemp("dist") / NAME
    r = subprocess.run([str(KERNEL_BIN), "export", str(NOTEBOOK), str(project), "--kernel", TORCH_KERNEL_NAME,
                        "--ntasks-per-node", "2", "--cpus-per-task", "1", "--time", "00:10:00"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = (project / "job.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=2" in job, job
    env = shell_env()
    cache = torch_env.get("TCH_KERNEL_CACHE_DIR")
    if cache:
        env["CARGO_TARGET_DIR"] = os.path.join(cache, "jobs-target")
    build = subprocess.run(["cargo", "build", "--release"], cwd=project, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-5000:]
    binary = Path(env.get("CARGO_TARGET_DIR", project / "target")) / "release" / NAME
    # One rank per process, one thread each: two ranks share this machine's cores.
    env["OMP_NUM_THREADS"] = "1"
    return project, binary, env


def weights(text):
    """{rank: (bits, floats)} from the 'final weights of rank R: HEX' lines (f32 bits)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("final weights of rank "):
            rank, bits = line[len("final weights of rank "):].split(": ")
            raw = bytes.fromhex(bits.strip())
            out[int(rank)] = (bits.strip(), struct.unpack(f">{len(raw) // 4}f", raw))
    return out


def max_difference(a, b):
    assert len(a[1]) == len(b[1]) > 0, (len(a[1]), len(b[1]))
    return max(abs(x - y) for x, y in zip(a[1], b[1]))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alone(program, **extra):
    _, binary, env = program
    run = subprocess.run([str(binary)], env=dict(env, **extra), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0 of 1 on Cpu (Alone)" in run.stdout
    return weights(run.stdout)[0]


def ranks(program, envs, timeout=300):
    """Starts one process per environment (torchrun's variables, set by hand); waits for all.
    [(exit code, stdout, stderr, seconds)] by rank. Output goes to files, so no rank blocks on
    a full pipe while another is waited for."""
    _, binary, env = program
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        files = [(open(os.path.join(tmp, f"{r}.out"), "w+"), open(os.path.join(tmp, f"{r}.err"), "w+"))
                 for r in range(len(envs))]
        procs = [subprocess.Popen([str(binary)], env=dict(env, **e), stdout=o, stderr=er, text=True)
                 for e, (o, er) in zip(envs, files)]
        out = []
        for p, (o, er) in zip(procs, files):
            p.wait(timeout=timeout)
            seconds = time.monotonic() - started
            o.seek(0)
            er.seek(0)
            out.append((p.returncode, o.read(), er.read(), seconds))
            o.close()
            er.close()
    return out


def torchrun_vars(rank, world, port, **extra):
    return dict(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port), **extra)


def written_weights(directory):
    """The weights each rank wrote into WEIGHTS_DIR (one log would interleave their lines)."""
    return weights("\n".join(f.read_text() for f in sorted(Path(directory).glob("rank-*.txt"))))


def assert_same_training(one, by_rank):
    assert sorted(by_rank) == [0, 1], by_rank.keys()
    # The ranks agree bit for bit, and with one process over the same global batches.
    assert by_rank[0][0] == by_rank[1][0]
    assert max_difference(by_rank[0], one) <= 1e-5, max_difference(by_rank[0], one)


def test_the_notebook_trains_in_the_kernel_as_one_process(program, notebook_env, tmp_path):
    executed = execute(NOTEBOOK, tmp_path, notebook_env)
    text = "".join(streams(c) for c in executed["cells"] if c["cell_type"] == "code")
    assert "rank 0 of 1 on Cpu (Alone)" in text, text[:3000]
    assert "loss after 40 steps: " in text
    # The program built from it, alone, trains the same model to the same weights.
    assert max_difference(weights(text)[0], alone(program)) <= 1e-6


def test_two_ranks_started_by_torchrun_end_with_the_weights_of_one(program, tmp_path):
    project, binary, env = program
    torchrun = Path(sys.executable).parent / "torchrun"
    # 1 KB buckets: the model's 4 variables in 4 buckets, so l2's gradients start reducing
    # while backward still computes l1's (the srun test has them all in one bucket).
    run = subprocess.run([str(torchrun), "--no-python", "--nproc-per-node", "2", "--master-port", str(free_port()), str(binary)],
                         cwd=project, env=dict(env, WEIGHTS_DIR=str(tmp_path), BUCKET_KB="1"), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 1 of 2 on Cpu (Gloo)" in run.stdout, run.stdout[:2000]
    # Only rank 0 reports the loss.
    assert run.stdout.count("loss after 40 steps: ") == 1
    overlap = float(re.search(r"reduced during backward: ([0-9.]+)", run.stdout).group(1))
    assert 0 < overlap < 1, run.stdout[-2000:]
    assert_same_training(alone(program), written_weights(tmp_path))


def test_two_ranks_started_by_srun_end_with_the_weights_of_one(program, slurm, tmp_path):
    project, binary, env = program
    env = dict(env, WEIGHTS_DIR=str(tmp_path), **slurm)
    job = subprocess.run(["sbatch", "--parsable", "job.sbatch"], cwd=project, env=env, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    state, _ = wait_for_job(job_id, slurm)
    log = (project / f"{NAME}-{job_id}.out").read_text()
    assert state == "COMPLETED", log[-3000:]
    assert "rank 0 of 2 on Cpu (Gloo)" in log and "rank 1 of 2 on Cpu (Gloo)" in log, log[:3000]
    assert_same_training(alone(program), written_weights(tmp_path))


def test_a_checkpoint_that_rank_0_of_two_wrote_resumes_in_one_process(program, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    port = free_port()
    halves = ranks(program, [torchrun_vars(r, 2, port, STEPS="20", CHECKPOINT_DIR=str(checkpoint)) for r in (0, 1)])
    assert all(code == 0 for code, *_ in halves), [e[-2000:] for _, _, e, _ in halves]
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "state.json").is_file()
    # Steps 20 to 40 alone, on the batches the 2 ranks would have taken: the uninterrupted run.
    assert max_difference(alone(program, CHECKPOINT_DIR=str(checkpoint)), alone(program)) <= 1e-5


@pytest.mark.parametrize("dead", [1, 0])
def test_a_rank_that_dies_is_named_by_the_other(program, dead):
    port = free_port()
    extra = dict(FAIL_RANK=str(dead), FAIL_STEP="5", TCH_DIST_TIMEOUT="60")
    results = ranks(program, [torchrun_vars(r, 2, port, **extra) for r in (0, 1)])
    code, _, stderr, seconds = results[1 - dead]
    assert f"rank {dead} dies at step 5" in results[dead][2]
    assert code != 0, stderr[-3000:]
    expected = "rank 0 is gone (it hosts the rendezvous" if dead == 0 else "rank 1 did not answer within 10 s"
    assert expected in stderr, stderr[-3000:]
    assert f"rank {1 - dead}: all_reduce failed" in stderr, stderr[-3000:]
    assert seconds < 60


def test_a_rendezvous_nobody_serves_is_an_error_naming_it(program):
    port = free_port()
    [(code, _, stderr, seconds)] = ranks(program, [torchrun_vars(1, 2, port, TCH_DIST_TIMEOUT="3")])
    assert code != 0
    assert f"rank 1: cannot reach the rendezvous at 127.0.0.1:{port} (from MASTER_ADDR and MASTER_PORT) within 3 s" in stderr, stderr[-3000:]
    assert seconds < 60


def test_ranks_that_disagree_are_told_how(program):
    port = free_port()
    [(c0, _, e0, _), (c1, _, e1, _)] = ranks(program, [torchrun_vars(0, 2, port), torchrun_vars(1, 3, port)], timeout=120)
    assert c0 != 0 and c1 != 0
    assert "rank 1: this rank was started for 3 processes and rank 0 for 2" in e1, e1[-3000:]
    assert "rank 0: this rank was started for 2 processes and rank 1 for 3" in e0, e0[-3000:]
    port = free_port()
    [(c0, _, e0, _), (c1, _, e1, _)] = ranks(program, [torchrun_vars(0, 2, port), torchrun_vars(1, 2, port, HIDDEN="16")], timeout=120)
    assert c0 != 0 and c1 != 0
    assert "rank 1: rank 0's model differs from this rank's" in e1, e1[-3000:]
    missing = subprocess.run([str(program[1])], env=dict(program[2], RANK="0", WORLD_SIZE="2"), capture_output=True, text=True)
    assert missing.returncode != 0 and "MASTER_ADDR is not set (torchrun sets it" in missing.stderr, missing.stderr[-2000:]


def test_notebook_07_trains_in_the_kernel_then_as_a_two_task_job(slurm, torch_env, notebook_env, tmp_path):
    """Notebook 07 as a user runs it: ResNet-9 in the kernel (rank 0 of 1), then the same notebook
    submitted from a cell as a job of 2 tasks, and both runs in the results table."""
    runs = tmp_path / "runs"
    env = dict(notebook_env, **slurm, RUN_DIR=str(runs))
    executed = execute(REPO / "notebooks" / "07-data-parallel.ipynb", tmp_path, env)
    assert_cells_ran_as_tagged(executed)
    cells = {c["id"]: c for c in executed["cells"]}
    assert "rank 0 of 1 on Cpu (Alone" in streams(cells["c01"]), streams(cells["c01"])
    assert "not submitted" not in streams(cells["c06"]), cells["c06"]["outputs"]
    waited = streams(cells["c07"])
    assert "ended: completed" in waited, waited
    # Both ranks started and joined; only rank 0 reported the run.
    assert "rank 0 of 2 on Cpu (Gloo" in waited and "rank 1 of 2 on Cpu (Gloo" in waited, waited
    assert waited.count("images/s") == 1, waited
    # The job left out the cells that submit (tagged notebook-only): it did not submit itself.
    main_rs = (runs / "jobs" / "07-data-parallel" / "src" / "main.rs").read_text()
    assert "submit(" not in main_rs
    table = [o for o in cells["c08"]["outputs"] if o["output_type"] == "execute_result"][0]["data"]
    rows = [row.split(" | ") for row in table["text/plain"].splitlines()]
    assert rows[0][:3] == ["device", "job", "world size"], rows
    by_world = {row[2]: row for row in rows[1:]}
    assert sorted(by_world) == ["1", "2"] and by_world["1"][1] == "local", rows
    assert all(float(row[-1]) > 0 for row in rows[1:]), rows
    # One MLPerf log per run, written by rank 0 alone, with its world size.
    job_id = by_world["2"][1]
    records = [json.loads(line[len(":::MLLOG "):]) for line in (runs / f"mllog-{job_id}.txt").read_text().splitlines()]
    assert [r["key"] for r in records].count("run_start") == 1
    platform = next(r for r in records if r["key"] == "submission_platform")
    assert platform["metadata"]["world_size"] == 2, platform
