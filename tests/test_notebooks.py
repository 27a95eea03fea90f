"""The workshop notebooks run top to bottom under `jupyter nbconvert --execute` (nbclient)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, TORCH_KERNEL_NAME, slurm_missing

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# Notebooks that submit jobs: where a local Slurm can run, the Slurm tests (test_slurm,
# test_distributed) run them whole with a cluster to submit to; here only where it cannot.
RUN_WITH_SLURM = {"05-from-notebook-to-slurm", "07-data-parallel"}
# Notebooks whose own test below runs them (with the same check of every cell) and checks what
# they show: each runs once (CI's time budget).
RUN_BY_OWN_TEST = {"00-rust-basics", "02-first-classifier", "04-benchmark-gpus", "06-display-plots-progress",
                   "08-your-own-images"}


@pytest.fixture(autouse=True)
def _needs_torch(torch_env):
    """The notebooks use tch, like the kernel users install."""


def execute(notebook, out_dir, env=None, kernel_name=TORCH_KERNEL_NAME):
    jupyter = Path(sys.executable).parent / "jupyter"
    r = subprocess.run(
        [
            str(jupyter), "nbconvert", "--to", "notebook", "--execute", str(notebook),
            f"--ExecutePreprocessor.kernel_name={kernel_name}",
            "--ExecutePreprocessor.timeout=600",
            "--output-dir", str(out_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        # Like JupyterLab: the kernel starts in the notebook's directory.
        cwd=notebook.parent,
    )
    assert r.returncode == 0, f"{notebook.name} on {kernel_name}:\n{r.stderr[-6000:]}"
    return nbformat.read(out_dir / notebook.name, as_version=4)


def streams(cell):
    return "".join(o["text"] for o in cell["outputs"] if o["output_type"] == "stream")


def assert_cells_ran_as_tagged(executed):
    """Every code cell ran without an error, but those tagged raises-exception, which failed."""
    for cell in executed["cells"]:
        if cell["cell_type"] != "code":
            continue
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        if "raises-exception" in cell["metadata"].get("tags", []):
            assert errors, f"cell {cell['id']} was expected to fail"
        else:
            assert not errors, f"cell {cell['id']} failed: {errors}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end(notebook, tmp_path, notebook_env):
    if notebook.stem in RUN_WITH_SLURM and slurm_missing() is None:
        pytest.skip("run whole by the Slurm tests, with a cluster to submit to")
    if notebook.stem in RUN_BY_OWN_TEST:
        pytest.skip("run by its own test in this file")
    assert_cells_ran_as_tagged(execute(notebook, tmp_path, notebook_env))


def test_basics_notebook_outputs(tmp_path):
    executed = execute(REPO / "notebooks" / "00-rust-basics.ipynb", tmp_path)
    assert_cells_ran_as_tagged(executed)
    cells = {c["id"]: c for c in executed["cells"]}

    def result(cell_id):
        return [o["data"]["text/plain"] for o in cells[cell_id]["outputs"] if o["output_type"] == "execute_result"]

    assert result("c01") == ["42"]
    assert result("c03") == ["4.0"]
    kinds = [o["output_type"] for o in cells["c07"]["outputs"]]
    assert kinds == ["stream", "display_data", "stream"]
    assert "<table>" in cells["c07"]["outputs"][1]["data"]["text/html"]
    assert cells["c10"]["outputs"][0]["ename"] == "Panic"
    assert result("c11") == ["46"]
    # Execution counts are consecutive from 1, as in ipykernel.
    counts = [c["execution_count"] for c in executed["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1))


def test_display_notebook_outputs(tmp_path):
    executed = execute(REPO / "notebooks" / "06-display-plots-progress.ipynb", tmp_path)
    assert_cells_ran_as_tagged(executed)
    cells = {c["id"]: c for c in executed["cells"]}

    def outputs(cell_id, kind):
        return [o for o in cells[cell_id]["outputs"] if o["output_type"] == kind]

    assert outputs("c02", "execute_result")[0]["data"]["text/plain"].startswith("tensor([[")
    assert "..." in outputs("c03", "execute_result")[0]["data"]["text/plain"]
    assert [o["output_type"] for o in cells["c05"]["outputs"]] == ["stream", "display_data", "display_data", "stream", "display_data"]
    # update_display_data replaced the shown output in the saved notebook.
    assert outputs("c07", "display_data")[0]["data"]["text/markdown"] == "step 3 of 3 done"
    for cell_id in ["c09", "c10", "c11", "c12"]:
        assert "image/svg+xml" in outputs(cell_id, "execute_result")[0]["data"], cell_id
    assert "image/png" in outputs("c13", "execute_result")[0]["data"]
    assert "image/png" in outputs("c15", "execute_result")[0]["data"]
    bar, chart = outputs("c18", "display_data")
    assert bar["data"]["text/plain"].startswith("training: 100%|") and "300/300" in bar["data"]["text/plain"]
    assert "image/svg+xml" in chart["data"]
    assert outputs("c23", "error")[0]["evalue"].startswith("input()")


def test_classifier_notebook_learns(tmp_path, notebook_env):
    executed = execute(REPO / "notebooks" / "02-first-classifier.ipynb", tmp_path, notebook_env)
    assert_cells_ran_as_tagged(executed)
    text = "".join(streams(c) for c in executed["cells"] if c["cell_type"] == "code")
    accuracy = float(text.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.9, text


def test_benchmark_notebook_writes_a_compliant_mlperf_log(tmp_path, notebook_env):
    env = dict(notebook_env, RUN_DIR=str(tmp_path / "runs"))
    executed = execute(REPO / "notebooks" / "04-benchmark-gpus.ipynb", tmp_path, env)
    assert_cells_ran_as_tagged(executed)
    log = tmp_path / "runs" / "mllog-local.txt"
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith(":::MLLOG {") for line in lines)
    keys = [json.loads(line[len(":::MLLOG "):])["key"] for line in lines]
    for key in ["submission_benchmark", "cache_clear", "init_start", "init_stop", "run_start", "epoch_start", "eval_accuracy", "run_stop"]:
        assert key in keys, key
    # The mlperf-logging package's parser reads every line, and its compliance checker
    # (training rules 4.0.0, open division) accepts the file.
    from mlperf_logging.compliance_checker.mlp_parser import parse_file
    parsed, errors = parse_file(str(log), ruleset="4.0.0")
    assert not errors and len(parsed) == len(lines)
    check = subprocess.run(
        [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", "4.0.0", str(log)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert check.returncode == 0 and "SUCCESS" in check.stdout + check.stderr, check.stdout + check.stderr
    results = (tmp_path / "runs" / "results.jsonl").read_text().splitlines()
    result = json.loads(results[-1])
    assert result["images_per_second"] > 0
    # ResNet-50 beside ResNet-9, on CIFAR-10-sized and ImageNet-sized inputs.
    assert result["resnet50_batch_size"] == 4
    assert result["resnet50_images_per_second"]["32"] > 0 and result["resnet50_images_per_second"]["224"] > 0, result
    # And on real images from the loader, with the loader's own figure beside training's.
    assert result["resnet50_imagenet_images_per_second"]["loader"] > 0, result
    assert result["resnet50_imagenet_images_per_second"]["training"] > 0, result
    html = [o for c in executed["cells"] if c["id"] == "c12" for o in c["outputs"] if o["output_type"] == "execute_result"]
    assert "ResNet-50 images/s, 224x224" in html[0]["data"]["text/html"]


def test_own_images_notebook_fine_tunes_from_pytorch_weights(tmp_path, notebook_env):
    """Notebook 08 on scikit-image's photos (one file truncated) with a torchvision ResNet-18
    state_dict saved by Python: the report, both throughputs, and weights Python reads back."""
    import torch
    import torchvision

    env = dict(notebook_env, RUN_DIR=str(tmp_path / "runs"))
    executed = execute(REPO / "notebooks" / "08-your-own-images.ipynb", tmp_path, env)
    assert_cells_ran_as_tagged(executed)
    cells = {c["id"]: c for c in executed["cells"]}
    assert "4 classes" in streams(cells["c03"])
    assert any("image/png" in o.get("data", {}) for o in cells["c05"]["outputs"])
    # The ImageNet head is reported, not loaded; the rest matched.
    report = streams(cells["c07"])
    assert "missing_keys (2)" in report and "unexpected_keys (2)" in report and "fc.weight" in report, report
    assert "loader alone:" in streams(cells["c09"])
    training = streams(cells["c11"])
    assert "validation accuracy" in training and "training" in training and "images/s" in training, training
    skipped = "".join(o["text"] for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"] if o.get("name") == "stderr")
    assert "truncated.jpg" in skipped, skipped
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    model.head = torch.nn.Linear(512, 4)
    model.load_state_dict(torch.load(tmp_path / "runs" / "finetuned.pth"))
