"""The workshop notebooks run top to bottom under `jupyter nbconvert --execute` (nbclient)."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, TORCH_KERNEL_NAME

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(autouse=True)
def _needs_torch(torch_env):
    """The notebooks use tch, like the kernel users install."""


def execute(notebook, out_dir):
    jupyter = Path(sys.executable).parent / "jupyter"
    subprocess.run(
        [
            str(jupyter), "nbconvert", "--to", "notebook", "--execute", str(notebook),
            f"--ExecutePreprocessor.kernel_name={TORCH_KERNEL_NAME}",
            "--ExecutePreprocessor.timeout=600",
            "--output-dir", str(out_dir),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return nbformat.read(out_dir / notebook.name, as_version=4)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end(notebook, tmp_path):
    executed = execute(notebook, tmp_path)
    for cell in executed["cells"]:
        if cell["cell_type"] != "code":
            continue
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        if "raises-exception" in cell["metadata"].get("tags", []):
            assert errors, f"cell {cell['id']} was expected to fail"
        else:
            assert not errors, f"cell {cell['id']} failed: {errors}"


def test_basics_notebook_outputs(tmp_path):
    executed = execute(REPO / "notebooks" / "00-rust-basics.ipynb", tmp_path)
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
