"""The compile loop through a real client: Tab on a fresh kernel answers from what the kernel
knows while rust-analyzer warms up, and never holds up the cell sent after it; compile errors
point at their line and column; variables of every kind cross cells with types rustc names in
the cell's own build; many items defined at once stay usable."""

import re

import pytest

from conftest import ok, result, run, start_torch, torch_client, wait_for_analyzer

SOURCE_KEY = "tch_kernel"


def completion(kc, code, cursor=None):
    cursor = len(code) if cursor is None else cursor
    reply = kc.complete(code, cursor, reply=True, timeout=300)["content"]
    return reply["matches"], reply["metadata"].get(SOURCE_KEY, {}).get("source"), reply


@pytest.fixture
def fresh(torch_env):
    """A new libtorch kernel for each test."""
    yield from torch_client()


@pytest.fixture
def fresh_with_stderr(torch_env, tmp_path):
    """A new libtorch kernel whose stderr goes to a file: (client, that file)."""
    stderr = tmp_path / "kernel-stderr.txt"
    with open(stderr, "w") as err:
        km, kc = start_torch(stderr=err)
    yield kc, stderr
    kc.stop_channels()
    km.shutdown_kernel()


def test_the_first_requests_get_right_answers_before_the_analyzer_is_warm(fresh_with_stderr):
    fresh, stderr = fresh_with_stderr
    # rust-analyzer needs seconds for its first analysis, which starts with the kernel; the
    # first Tab does not wait for it. What it knew at install (paths, associated functions,
    # methods with signatures, docs) answers until then; these are asked at once after start.
    first = [
        ("std::collections::HashMa", "HashMap"),
        ("let t = Tensor::ze", "zeros("),
        ("let v = vec![1];\nv.pu", "push("),
        ("use std::collections::HashMap;\nlet mut m = HashMap::new();\nm.ins", "insert("),
        ("let x = Tens", "Tensor"),
        ("std::mem::swa", "swap(x, y)"),
    ]
    sources = set()
    for code, expected in first:
        matches, source, reply = completion(fresh, code)
        sources.add(source)
        assert any(m.startswith(expected) for m in matches), (code, reply)
    matches, _, reply = completion(fresh, "let x = Tens")
    assert reply["cursor_start"] == len("let x = ") and reply["cursor_end"] == len("let x = Tens")
    # Shift-Tab: docs of a type in scope, and of a method of a variable of the same cell.
    reply = fresh.inspect("Vec", 3, reply=True, timeout=300)["content"]
    assert reply["found"] and "growable array" in reply["data"]["text/plain"], reply
    assert "<code>" in reply["data"]["text/html"] or "<p>" in reply["data"]["text/html"]
    code = "let v = vec![1.0];\nv.push"
    reply = fresh.inspect(code, len(code), reply=True, timeout=300)["content"]
    assert reply["found"] and "fn push" in reply["data"]["text/plain"], reply
    # std's names and keywords.
    matches, _, _ = completion(fresh, "")
    assert {"Vec", "println!()"} <= set(matches), matches
    matches, _, _ = completion(fresh, "whi")
    assert any(m.startswith("while") for m in matches), matches
    ok(fresh, "let learning_rate = 0.01f64; let weights = Tensor::zeros([3], (Kind::Float, Device::Cpu));")
    # Variables, and the methods of a variable's type, from whichever source answers.
    assert "learning_rate" in completion(fresh, "let y = lea")[0]
    assert any(m.startswith("matmul") for m in completion(fresh, "weights.mat")[0])
    # rust-analyzer was never needed so far: the kernel has not loaded it (hundreds of MB).
    # What the saved names cannot answer (a field of the cell's own struct) loads it.
    assert sources == {"known-names"}, sources
    assert "warm_field" in wait_for_analyzer(fresh)["matches"]
    matches, source, _ = completion(fresh, "weights.mat")
    assert any(m.startswith("matmul") for m in matches), (source, matches)
    # rust-analyzer panicked in its term search on these (a 15-frame backtrace on the kernel's
    # stderr at every start); its panics go to the log at debug level only.
    for code in ["let t = Tensor::ze", "let v = vec![1];\nv.pu", "let x: i64 = "]:
        completion(fresh, code)
    text = stderr.read_text()
    assert "panicked" not in text and "stack backtrace" not in text, text


def test_execute_right_after_tab_is_not_held_up(fresh):
    # The same as JupyterLab: Tab, then Shift+Enter without waiting for the completion.
    complete_id = fresh.complete("Tens", 4)
    execute_id = fresh.execute("40 + 2")
    replies = {}
    while execute_id not in replies:
        msg = fresh.get_shell_msg(timeout=300)
        replies[msg["parent_header"]["msg_id"]] = msg
    complete = replies[complete_id]["content"]
    # The completion did not wait for rust-analyzer (which is still warming up) ...
    assert complete["metadata"][SOURCE_KEY]["source"] == "known-names"
    assert "Tensor" in complete["matches"]
    # ... and the cell ran.
    assert replies[execute_id]["content"]["status"] == "ok"
    iopub = []
    while True:
        msg = fresh.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == execute_id:
            iopub.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
    assert [m["content"]["data"]["text/plain"] for m in iopub if m["msg_type"] == "execute_result"] == ["42"]


def header_position(reply):
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(reply["traceback"]))
    found = re.search(r"\[\s*cell:(\d+):(\d+)\s*\]", text)
    assert found, text
    return int(found.group(1)), int(found.group(2))


def test_compile_error_header_points_at_the_error(tk):
    reply, _ = run(tk, "let a = 1;\nlet b = 2;\nlet c = a + undefined_name;", timeout=600)
    assert reply["status"] == "error"
    assert header_position(reply) == (3, 13)
    reply, _ = run(tk, "fn f(x: i32) -> i32 {\n    x + \"s\"\n}", timeout=600)
    assert reply["status"] == "error"
    assert header_position(reply)[0] == 2
    # A type error in an expression cell, after a line of statements.
    reply, _ = run(tk, "let s = String::new();\n    s.no_such_method()", timeout=600)
    assert reply["status"] == "error"
    assert header_position(reply) == (2, 7)


def test_inferred_types_cross_cells(tk):
    """Variables without annotations are stored as rustc inferred them and named from the
    cell's own build: numbers with Rust's defaults, references as 'static, tuples, std and tch
    types, user types, shadowing with another type."""
    ok(tk, """
let n = 41;
let x = 1.5;
let word = "tch";
let (count, mut names) = (3usize, vec![String::from("a")]);
let map: std::collections::HashMap<&str, Vec<f32>> = Default::default();
let set = std::collections::BTreeSet::from([3, 1, 2]);
let t = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
let vs = nn::VarStore::new(Device::Cpu);
let lin = nn::linear(vs.root(), 3, 2, Default::default());
#[derive(Debug)] struct Run { lr: f64 }
let run = Run { lr: 0.1 };
let slice: &[i64] = &[1, 2];
let nested = Some(vec![(1u8, 'c')]);
""")
    ok(tk, "names.push(word.to_uppercase());")
    assert result(ok(tk, "(n + 1, x * 2.0, word.len(), count, names, map.len(), set.iter().next().copied())")) == \
        ['(42, 3.0, 3, 3, ["a", "TCH"], 0, Some(1))']
    assert result(ok(tk, "lin.forward(&t).size()")) == ["[2, 2]"]
    assert result(ok(tk, "(run.lr, slice.len(), nested)")) == ["(0.1, 2, Some([(1, 'c')]))"]
    # Shadowing with another type, in the cell that reads the old one.
    ok(tk, "let n = format!(\"{n}!\");")
    assert result(ok(tk, "n")) == ['"41!"']
    # A value moved into a function is no longer kept; the cell still runs.
    ok(tk, "let moved = vec![1]; drop(moved); let kept = 5;")
    assert result(ok(tk, "kept")) == ["5"]
    # An iterator holding a closure cannot be written out: clear error, the cell does not run.
    reply, _ = run(tk, "let evens = (0..10).filter(|i| i % 2 == 0);", timeout=600)
    assert reply["status"] == "error" and "cannot be written out" in reply["evalue"]
    assert result(ok(tk, "n.len()")) == ["3"]


def test_fifty_items_then_a_cell_using_them(tk):
    items = "\n".join(
        f"#[derive(Clone, Debug)] struct Layer{i} {{ width: usize }}\n"
        f"impl Layer{i} {{ fn params(&self) -> usize {{ self.width * {i + 1} }} }}\n"
        f"fn layer{i}() -> Layer{i} {{ Layer{i} {{ width: {i} }} }}"
        for i in range(25)
    )
    ok(tk, items)
    total = sum(i * (i + 1) for i in range(25))
    assert result(ok(tk, " + ".join(f"layer{i}().params()" for i in range(25)))) == [str(total)]
    ok(tk, "let l7 = layer7();")
    assert result(ok(tk, "l7.params()")) == ["56"]


def test_cells_that_define_no_items_get_what_they_use(tk):
    """Cells that define no items are built with the items they use only (the evcxr fork's
    `needed_items`): what they reach through a method name, a trait impl on a prelude type, a
    macro, a type of a stored variable, or an item of an item, is still there."""
    ok(tk, """
trait Doubled { fn doubled(&self) -> Tensor; }
impl Doubled for Tensor { fn doubled(&self) -> Tensor { self * 2 } }
macro_rules! square { ($x:expr) => { $x * $x } }
#[derive(Debug)] struct Meter(f64);
impl std::fmt::Display for Meter { fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { write!(f, "{} m", self.0) } }
fn base() -> i32 { 20 }
fn answer() -> i32 { base() * 2 + 2 }
""")
    assert result(ok(tk, "Tensor::from_slice(&[1.5f32]).doubled().double_value(&[0])")) == ["3.0"]
    assert result(ok(tk, "square!(7)")) == ["49"]
    ok(tk, "let height = Meter(2.5);")
    assert result(ok(tk, 'format!("{height}")')) == ['"2.5 m"']
    assert result(ok(tk, "answer()")) == ["42"]
    # A redefinition that breaks an item using it fails at once, and the old one stays.
    reply, _ = run(tk, 'fn base() -> &\'static str { "twenty" }')
    assert reply["status"] == "error", reply
    assert result(ok(tk, "answer()")) == ["42"]
    # A mistake in a cell is reported as usual.
    reply, _ = run(tk, "answer() + undefined_thing")
    assert reply["status"] == "error" and "undefined_thing" in reply["evalue"], reply


REUSED = "(build reused)"


def timed(kc, code):
    """Runs `code` with `:timing` on; returns (its result, whether its earlier build ran again)."""
    outputs = ok(kc, code)
    printed = "".join(c["text"] for t, c in outputs if t == "stream" and c["name"] == "stdout")
    timing = [line for line in printed.splitlines() if line.startswith("compile ")]
    assert timing, printed
    return result(outputs), REUSED in timing[-1]


def test_an_unchanged_cell_runs_again_without_rustc_and_any_change_rebuilds_it(fresh):
    kc = fresh
    ok(kc, ":timing")
    ok(kc, "let mut steps = 0i64;\nfn step(v: i64) -> i64 { v + 1 }")
    train = ("steps = step(steps);\n"
             "let w = Tensor::full([2, 2], steps as f64, (Kind::Float, Device::Cpu));\n"
             "let total = w.sum(Kind::Float).double_value(&[]);\n"
             "(steps, total)")
    # The first run types the variables it defines; from the second its variables are inputs.
    assert timed(kc, train) == (["(1, 4.0)"], False)
    assert timed(kc, train) == (["(2, 8.0)"], False)
    # Unchanged source and inputs' types: the same build runs, with today's values.
    assert timed(kc, train) == (["(3, 12.0)"], True)
    assert timed(kc, train) == (["(4, 16.0)"], True)

    # An item it uses changed: built again, then reused.
    ok(kc, "fn step(v: i64) -> i64 { v + 10 }")
    assert timed(kc, train) == (["(14, 56.0)"], False)
    assert timed(kc, train) == (["(24, 96.0)"], True)
    # An item it does not use changed: still the same build.
    ok(kc, "fn unrelated() -> u8 { 7 }")
    assert timed(kc, train)[1] is True

    # Only a variable's type changed: built again (the old build would take a u8 from the
    # store). A cell that defines no variable is reused from its second run.
    count = "counter += 1; counter"
    ok(kc, "let mut counter = 0u8;")
    assert timed(kc, count) == (["1"], False)
    assert timed(kc, count) == (["2"], True)
    ok(kc, "let mut counter = 0u64;")
    assert timed(kc, count) == (["1"], False)
    assert timed(kc, count) == (["2"], True)

    # A variable's type and the item it is given to changed together: built again.
    ok(kc, "let mut steps: i32 = 100;\nfn step(v: i32) -> i32 { v + 1 }")
    assert timed(kc, train) == (["(101, 404.0)"], False)
    assert timed(kc, train) == (["(102, 408.0)"], True)

    # A crate added: built again.
    ok(kc, ':dep itoa = "1"')
    assert timed(kc, train) == (["(103, 412.0)"], False)
    assert timed(kc, train) == (["(104, 416.0)"], True)

    # After the evaluation process restarted (a crash), the build is loaded into the new one.
    reply, _ = run(kc, "std::process::abort();", timeout=300)
    assert reply["ename"] == "EvaluatorCrashed"
    ok(kc, "let mut steps: i32 = 0;")
    assert timed(kc, train) == (["(1, 4.0)"], False)
    assert timed(kc, train) == (["(2, 8.0)"], True)
