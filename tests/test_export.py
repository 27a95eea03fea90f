"""`tch-kernel export`: notebook 02 becomes a Cargo project and an sbatch script; the project
builds (offline, against the kernel's prelude and libtorch) and prints the same test accuracy
as the notebook."""

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import KERNEL_BIN, REPO, TORCH_KERNEL_NAME
from test_notebooks import execute, streams


def accuracy_in(text):
    return text.split("test accuracy: ")[1].split()[0]


@pytest.fixture(scope="module")
def exported(torch_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "digits-job"
    result = subprocess.run(
        [str(KERNEL_BIN), "export", str(REPO / "notebooks" / "02-first-classifier.ipynb"), str(out),
         "--kernel", TORCH_KERNEL_NAME, "--partition", "gpu", "--gres", "gpu:a40:1", "--time", "00:20:00"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    return out


def test_export_writes_project_and_job(exported, torch_env):
    assert {p.name for p in exported.iterdir()} >= {"Cargo.toml", "Cargo.lock", "build.rs", "src", "job.sbatch", ".cargo"}
    assert f'LIBTORCH = "{torch_env["LIBTORCH"]}"' in (exported / ".cargo" / "config.toml").read_text()
    main = (exported / "src" / "main.rs").read_text()
    assert "fn main()" in main and "digits()" in main and "(&(" in main
    job = (exported / "job.sbatch").read_text()
    for line in ["#SBATCH --partition=gpu", "#SBATCH --gres=gpu:a40:1", "#SBATCH --time=00:20:00", "#SBATCH --signal=USR1@120",
                 f"export LIBTORCH='{torch_env['LIBTORCH']}'", "cargo build --release --offline", 'srun "${CARGO_TARGET_DIR:-target}/release/nb-02-first-classifier"']:
        assert line in job, line
    assert "CUDA_VISIBLE_DEVICES" not in job
    subprocess.run(["bash", "-n", str(exported / "job.sbatch")], check=True)


def shell_env():
    """A login shell's environment: none of the kernel's settings (libtorch, library path)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("LIBTORCH", "LD_LIBRARY_PATH", "LIBTORCH_BYPASS_VERSION_CHECK") and not k.startswith("TCH_KERNEL_")}


def build(project, torch_env):
    """Builds an exported project exactly as a user would, in a new shell (`cargo build
    --release`); returns that shell's environment and the target dir."""
    env = shell_env()
    # Reuse a target dir next to the kernel's build cache when there is one (it is outside the
    # checkout); a cold build compiles tch (a few minutes on 2 cores).
    cache = torch_env.get("TCH_KERNEL_CACHE_DIR")
    if cache:
        env["CARGO_TARGET_DIR"] = str(Path(cache) / "jobs-target")
    built = subprocess.run(["cargo", "build", "--release"], cwd=project, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-5000:]
    return env, Path(env.get("CARGO_TARGET_DIR", project / "target"))


def test_exported_program_builds_and_gives_the_notebooks_result(exported, torch_env, tmp_path):
    env, target = build(exported, torch_env)
    env["RUN_DIR"] = str(tmp_path / "batch-run")
    run = subprocess.run([str(target / "release" / "nb-02-first-classifier")], cwd=exported, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    # Outside a notebook, pictures and tables go to files in RUN_DIR, named by cell, and the log
    # says where; the rest prints as text.
    assert "images [1797, 1, 8, 8]" in run.stdout
    outputs = Path(env["RUN_DIR"]) / "outputs"
    named = [line.rsplit(" -> ", 1) for line in run.stdout.splitlines() if " -> " + str(outputs) in line]
    assert named and sorted(Path(path).name for _, path in named) == sorted(p.name for p in outputs.iterdir()), run.stdout
    assert all(text and Path(path).stat().st_size > 0 for text, path in named), named
    kinds = {Path(path).suffix for _, path in named}
    assert {".png", ".svg"} <= kinds, named
    for _, path in named:
        if path.endswith(".png"):
            assert Path(path).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        elif path.endswith(".svg"):
            ET.parse(path)
    assert all(Path(path).name.startswith("cell-") for _, path in named)
    notebook = execute(REPO / "notebooks" / "02-first-classifier.ipynb", tmp_path, dict(os.environ, RUN_DIR=str(tmp_path / "nb-run")))
    text = "".join(streams(c) for c in notebook["cells"] if c["cell_type"] == "code")
    assert accuracy_in(run.stdout) == accuracy_in(text)


def test_an_exported_job_trains_on_images_with_the_loader(torch_env, notebook_env, tmp_path):
    """Notebook 08 as a batch job: the loader's workers, PyTorch's weights and the saved
    fine-tuned weights work in the exported program as in the notebook."""
    out = tmp_path / "images-job"
    result = subprocess.run([str(KERNEL_BIN), "export", str(REPO / "notebooks" / "08-your-own-images.ipynb"), str(out),
                             "--kernel", TORCH_KERNEL_NAME], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    env, target = build(out, torch_env)
    for key in ("IMAGE_DIR", "WEIGHTS", "IMAGE_SIZE", "BATCH_SIZE", "EPOCHS"):
        env[key] = notebook_env[key]
    env["RUN_DIR"] = str(tmp_path / "run")
    run = subprocess.run([str(target / "release" / "nb-08-your-own-images")], cwd=out, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-5000:]
    assert "loader alone:" in run.stdout and "validation accuracy" in run.stdout, run.stdout
    assert "truncated.jpg" in run.stderr, run.stderr[-2000:]
    assert (tmp_path / "run" / "finetuned.pth").stat().st_size > 40_000_000
