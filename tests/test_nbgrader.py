"""A course graded with the real nbgrader: the example course in examples/nbgrader-course is
released to students, and submissions are autograded: correct, a wrong answer, a panicking
one, one that does not compile, an endless loop (stopped by nbgrader's cell timeout), and the
released version unchanged. Each question is scored on its own, as under ipykernel."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TORCH_KERNEL_NAME

COURSE = REPO / "examples" / "nbgrader-course"
ASSIGNMENT = "tensors-101"
POINTS = {"q1-tests": 2, "q2-tests": 2, "q3-tests": 3}


def nbgrader(course, *args):
    env = dict(os.environ)
    # nbgrader runs `alembic` (its database migrations) from PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def code_cells(nb):
    return {c["metadata"]["nbgrader"]["grade_id"]: c for c in nb["cells"] if c["cell_type"] == "code"}


def answer(nb, grade_id, body):
    """Replaces the stub in the answer cell `grade_id` (released version) with `body`."""
    cell = code_cells(nb)[grade_id]
    source = "".join(cell["source"])
    assert "// YOUR CODE HERE\n    todo!()" in source, source
    cell["source"] = source.replace("// YOUR CODE HERE\n    todo!()", body)


CORRECT = {
    "q1-answer": "t.square().mean(Kind::Double).double_value(&[])",
    "q2-answer": "(t - t.mean(Kind::Float)) / t.std(true)",
    "q3-answer": """let vs = nn::VarStore::new(Device::Cpu);
    let line = nn::linear(vs.root(), 1, 1, Default::default());
    let mut opt = nn::Sgd::default().build(&vs, lr).unwrap();
    for _ in 0..steps {
        let loss = line.forward(&xs.view([-1, 1])).mse_loss(&ys.view([-1, 1]), Reduction::Mean);
        opt.backward_step(&loss);
    }
    (line.ws.double_value(&[0, 0]), line.bs.as_ref().unwrap().double_value(&[0]))""",
}

SUBMISSIONS = {
    # student: (answers replacing the stubs, expected points per test cell)
    "correct": (CORRECT, POINTS),
    # The mean instead of the mean of squares: 0 for question 1 only.
    "wrong": ({**CORRECT, "q1-answer": "t.mean(Kind::Double).double_value(&[])"}, {**POINTS, "q1-tests": 0}),
    # A libtorch error (a shape that does not fit) panics in question 1's test cell.
    "panicking": (
        {**CORRECT, "q1-answer": "t.view([3]).square().mean(Kind::Double).double_value(&[])"},
        {**POINTS, "q1-tests": 0},
    ),
    # Returns a Tensor where an f64 is due: the cell does not compile, so mean_square is not
    # defined; questions 2 and 3 still count.
    "broken": ({**CORRECT, "q1-answer": "t.square().mean(Kind::Double)"}, {**POINTS, "q1-tests": 0}),
    # An endless loop: nbgrader's cell timeout interrupts it, the loop stops at its poll, and
    # the set-up cell's variables are still there for the later questions.
    "endless": ({**CORRECT, "q1-answer": "let mut s = 0.0;\n    loop { s += 1.0; }"}, {**POINTS, "q1-tests": 0}),
    # The released notebook unchanged: every answer is todo!().
    "untouched": ({}, {k: 0 for k in POINTS}),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory, torch_env):
    course = tmp_path_factory.mktemp("course")
    shutil.copytree(COURSE, course, dirs_exist_ok=True)
    # The notebook names the kernel a course install registers; here it is the test kernel.
    source = course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    nb = json.loads(source.read_text())
    nb["metadata"]["kernelspec"]["name"] = TORCH_KERNEL_NAME
    source.write_text(json.dumps(nb))

    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    released = json.loads((course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
    for student, (answers, _) in SUBMISSIONS.items():
        nb = json.loads(json.dumps(released))
        for grade_id, body in answers.items():
            answer(nb, grade_id, body)
        target = course / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(nb))
    # A short cell timeout, for the endless loop; every other cell takes a second or two.
    nbgrader(course, "autograde", ASSIGNMENT, "--create", "--force", "--Execute.timeout=20")
    nbgrader(course, "export")
    with open(course / "grades.csv") as f:
        grades = {row["student_id"]: row for row in csv.DictReader(f)}
    return course, released, grades


def test_the_student_version_keeps_signatures_and_hides_solutions(graded):
    _, released, _ = graded
    cells = code_cells(released)
    for grade_id in CORRECT:
        source = "".join(cells[grade_id]["source"])
        assert source.startswith("fn "), source
        assert "// YOUR CODE HERE\n    todo!()\n}" in source, source
        assert "SOLUTION" not in source
    tests = "".join(cells["q1-tests"]["source"])
    assert "HIDDEN" not in tests and "-2.0f64" not in tests


@pytest.mark.parametrize("student", list(SUBMISSIONS))
def test_each_submission_gets_the_points_of_its_right_answers(graded, student):
    course, _, grades = graded
    expected = SUBMISSIONS[student][1]
    assert float(grades[student]["raw_score"]) == sum(expected.values()), grades[student]
    assert float(grades[student]["max_score"]) == sum(POINTS.values())
    autograded = json.loads((course / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
    cells = code_cells(autograded)
    for grade_id, points in expected.items():
        outputs = cells[grade_id]["outputs"]
        stderr = [o for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"]
        errors = [o for o in outputs if o["output_type"] == "error"]
        # nbgrader gives 0 to a test cell with any stderr: a passing cell has none.
        assert bool(stderr or errors) == (points == 0), (student, grade_id, outputs)
        for e in errors:
            # Feedback shows the libtorch message, not its C++ backtrace.
            assert not any("frame #" in line for line in e["traceback"]), e
    if student == "panicking":
        error = next(o for o in cells["q1-tests"]["outputs"] if o["output_type"] == "error")
        assert "shape '[3]' is invalid for input of size 4" in error["evalue"], error
