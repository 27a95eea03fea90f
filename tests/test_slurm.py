"""Against a real one-node Slurm (tests/local-slurm.sh, root only): jobs run, and a notebook
exported with `tch-kernel export` builds with a plain `cargo build --release`, runs under
`sbatch`, and prints the notebook's own result."""

import json
import os
import subprocess
import time

from conftest import KERNEL_BIN, REPO, TORCH_KERNEL_NAME, ok, result, start_torch, stdout_of, wait_for_job
from test_export import accuracy_in, shell_env
from test_notebooks import assert_cells_ran_as_tagged, execute, streams


def export_and_build(notebook, project, slurm, torch_env, *options):
    """Exports `notebook` with the libtorch kernel's environment and builds it as a user would on
    a login node: `cargo build --release` in a shell with none of the kernel's environment.
    Returns that shell's environment (plus the cluster's)."""
    r = subprocess.run([str(KERNEL_BIN), "export", str(notebook), str(project), "--kernel", TORCH_KERNEL_NAME, *options],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = dict(shell_env(), **slurm)
    cache = torch_env.get("TCH_KERNEL_CACHE_DIR")
    if cache:
        env["CARGO_TARGET_DIR"] = os.path.join(cache, "jobs-target")
    build = subprocess.run(["cargo", "build", "--release"], cwd=project, env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-5000:]
    return env


def sbatch(args, cwd, env):
    """Submits; the job id."""
    job = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr
    return job.stdout.strip().split(";")[0]


def test_the_local_cluster_runs_a_job(slurm, tmp_path):
    env = dict(os.environ, **slurm)
    job_id = sbatch(["--output", str(tmp_path / "out-%j.txt"), "--wrap", "echo hello from job $SLURM_JOB_ID"], tmp_path, env)
    state, fields = wait_for_job(job_id, slurm)
    assert state == "COMPLETED", fields
    assert (tmp_path / f"out-{job_id}.txt").read_text().strip() == f"hello from job {job_id}"


def test_an_exported_notebook_runs_as_a_batch_job(slurm, torch_env, notebook_env, tmp_path):
    project = tmp_path / "digits-job"
    env = export_and_build(REPO / "notebooks" / "02-first-classifier.ipynb", project, slurm, torch_env,
                           "--time", "00:15:00", "--cpus-per-task", "1")
    env["RUN_DIR"] = str(tmp_path / "batch-run")
    job_id = sbatch(["job.sbatch"], project, env)
    state, fields = wait_for_job(job_id, slurm)
    log = (project / f"nb-02-first-classifier-{job_id}.out").read_text()
    assert state == "COMPLETED", log[-3000:]
    notebook = execute(REPO / "notebooks" / "02-first-classifier.ipynb", tmp_path, dict(notebook_env, RUN_DIR=str(tmp_path / "nb-run")))
    text = "".join(streams(c) for c in notebook["cells"] if c["cell_type"] == "code")
    assert accuracy_in(log) == accuracy_in(text), log[-3000:]


def final_weights(text):
    lines = [line for line in text.splitlines() if line.startswith("final weights: ")]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


def test_a_job_at_its_time_limit_checkpoints_resubmits_itself_and_finishes(slurm, torch_env, tmp_path):
    """8 epochs of 10 s in jobs of 2 minutes with SIGUSR1 50 s before the limit: Slurm's timer
    sends it 40-70 s into a job, so the first job stops with a checkpoint and later ones resume."""
    project = tmp_path / "resumable"
    env = export_and_build(REPO / "tests" / "notebooks" / "resumable-training.ipynb", project, slurm, torch_env,
                           "--time", "00:02:00", "--signal-seconds", "50", "--cpus-per-task", "1")
    binary = os.path.join(env.get("CARGO_TARGET_DIR", str(project / "target")), "release", "resumable-training")
    # The same training without interruptions, for comparison, on as many threads as the job's
    # task has (`--cpus-per-task 1`, which its script passes on as OMP_NUM_THREADS): libtorch's
    # CPU kernels split sums by thread, so the last bits of float results depend on the count.
    straight = subprocess.run([binary], cwd=project, capture_output=True, text=True, timeout=600,
                              env=dict(env, EPOCHS="8", CHECKPOINT_DIR=str(tmp_path / "straight"), OMP_NUM_THREADS="1"))
    assert straight.returncode == 0, straight.stderr
    env.update(EPOCHS="8", SECONDS_PER_EPOCH="10")
    chain, job_id = [], sbatch(["job.sbatch"], project, env)
    while job_id:
        assert len(chain) < 8, chain
        state, fields = wait_for_job(job_id, slurm)
        log = (project / f"resumable-training-{job_id}.out").read_text()
        chain.append((job_id, state, log))
        assert state == "COMPLETED", log[-3000:]
        resubmitted = [line.split()[-1] for line in log.splitlines() if line.startswith("Submitted batch job ")]
        job_id = resubmitted[0] if resubmitted else None
    first, last = chain[0][2], chain[-1][2]
    assert len(chain) >= 2, first
    assert "starting at epoch 0" in first and "stopping after epoch" in first and "resubmitting" in first, first
    stopped_at = int(first.split("stopping after epoch ")[1].split()[0])
    assert f"starting at epoch {stopped_at}" in chain[1][2], chain[1][2]
    # Checkpointed weights, per-epoch data order and a stateless optimizer: the same numbers.
    assert final_weights(last) == final_weights(straight.stdout)


def test_notebook_05_submits_a_job_from_a_cell_and_shows_it_live(slurm, torch_env, notebook_env, tmp_path):
    env = dict(notebook_env, **slurm, RUN_DIR=str(tmp_path / "runs"))
    executed = execute(REPO / "notebooks" / "05-from-notebook-to-slurm.ipynb", tmp_path, env)
    assert_cells_ran_as_tagged(executed)
    cells = {c["id"]: c for c in executed["cells"]}
    assert "not submitted" not in streams(cells["c06b"]), cells["c06b"]["outputs"]
    # The wait cell's status output, as the last update left it.
    shown = [o for o in cells["c06c"]["outputs"] if o["output_type"] == "display_data"]
    assert shown, cells["c06c"]["outputs"]
    status = shown[-1]["data"]["text/plain"]
    assert status.startswith("job ") and "nb-02-first-classifier: completed in" in status, status
    assert "completed in" in shown[-1]["data"]["text/html"]
    assert "ended: completed" in streams(cells["c06c"])
    result = [o for o in cells["c06d"]["outputs"] if o["output_type"] == "execute_result"]
    assert "test accuracy" in result[0]["data"]["text/plain"], cells["c06d"]["outputs"]
    # The sweep: notebook 04 as a job array over two batch sizes, and results() over its runs.
    assert "not submitted" not in streams(cells["c06f"]), cells["c06f"]["outputs"]
    sweep_status = [o for o in cells["c06g"]["outputs"] if o["output_type"] == "display_data"][-1]["data"]["text/plain"]
    assert sweep_status.startswith("array job ") and "(2 tasks): 2 completed" in sweep_status, sweep_status
    table = [o for o in cells["c06g"]["outputs"] if o["output_type"] == "execute_result"][0]["data"]
    rows = table["text/plain"].splitlines()
    assert rows[0] == "device | job | world size | status | time to train | accuracy | images/s" and len(rows) == 3, rows
    assert all(row.startswith("CPU") and float(row.split(" | ")[-1]) > 0 for row in rows[1:]), rows
    assert "<svg" in table["text/html"]


def test_a_job_submitted_from_a_cell_can_be_cancelled(slurm, torch_env, tmp_path):
    """submit() from a cell, the job observed running, cancel(), and result() says how it ended."""
    km, kc = start_torch(dict(slurm, RUN_DIR=str(tmp_path / "runs")))
    try:
        notebook = REPO / "tests" / "notebooks" / "resumable-training.ipynb"
        ok(kc, f'let job = submit(Submit::notebook({json.dumps(str(notebook))}).time("00:10:00").cpus_per_task(1)'
               f'.env("SECONDS_PER_EPOCH", 60).env("CHECKPOINT_DIR", {json.dumps(str(tmp_path / "ckpt"))})).unwrap();')
        job_id = result(ok(kc, "job.id().to_string()"))[0].strip('"')
        # Running: its log says it started its first epoch's wait.
        log = tmp_path / "runs" / "jobs" / "resumable-training" / f"resumable-training-{job_id}.out"
        deadline = time.monotonic() + 300
        while not (log.exists() and "starting at epoch 0" in log.read_text(errors="replace")):
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.5)
        ok(kc, "job.cancel().unwrap();")
        ended = stdout_of(ok(kc, 'println!("{}", job.result().unwrap_err());'))
        assert ended.startswith("the job ended cancelled"), ended
        state, _ = wait_for_job(job_id, slurm)
        assert state == "CANCELLED"
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
