"""Rich display and control through jupyter_client: display / update / clear_output, tensors,
plots (SVG and PNG validity), images, progress bars, live charts and cooperative interrupt."""

import base64
import struct
import xml.etree.ElementTree as ET
import zlib

import pytest

from conftest import busy, ok, printed, result, run, run_interrupted, start_torch


@pytest.fixture(scope="module")
def k(torch_env):
    km, kc = start_torch()
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel()


def outputs_of(kc, code):
    return [(t, c) for t, c in ok(kc, code) if t != "execute_input"]


def assert_svg(text):
    root = ET.fromstring(text)
    assert root.tag.endswith("svg"), root.tag
    return root


def png_chunks(data):
    """Checks a PNG's signature and every chunk's CRC; returns (width, height, chunk types)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, types, size = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        types.append(kind)
        pos += 12 + length
    assert types[0] == b"IHDR" and types[-1] == b"IEND" and b"IDAT" in types
    return size[0], size[1], types


def test_display_mid_cell_keeps_order_with_printed_text(k):
    _, kc = k
    outs = outputs_of(kc, """
println!("one");
display(Html("<b>two</b>"));
println!("three");
display(Markdown("**four**"));
display(Text("five"));
display_debug(&vec![6, 7]);
println!("eight");
""")
    kinds = [(t, c["text"].strip() if t == "stream" else c["data"]["text/plain"]) for t, c in outs]
    assert kinds == [
        ("stream", "one"), ("display_data", "<HTML>"), ("stream", "three"),
        ("display_data", "**four**"), ("display_data", "five"), ("display_data", "[6, 7]"), ("stream", "eight"),
    ], kinds
    html = outs[1][1]
    assert html["data"]["text/html"] == "<b>two</b>"
    assert outs[3][1]["data"]["text/markdown"] == "**four**"


def test_update_display_data_carries_the_same_display_id(k):
    _, kc = k
    outs = outputs_of(kc, """
let h = display(Markdown("step 0"));
for i in 1..=3 { h.update(&Markdown(format!("step {i}"))); }
h.id().to_string()
""")
    shown = [c for t, c in outs if t == "display_data"]
    updates = [c for t, c in outs if t == "update_display_data"]
    assert len(shown) == 1 and len(updates) == 3
    display_id = shown[0]["transient"]["display_id"]
    assert display_id and all(u["transient"]["display_id"] == display_id for u in updates)
    assert [u["data"]["text/markdown"] for u in updates] == ["step 1", "step 2", "step 3"]
    assert result(outs) == [repr(display_id).replace("'", '"')]
    # The handle lives on: a later cell updates the output of an earlier one.
    outs = outputs_of(kc, 'h.update(&Markdown("later"));')
    assert [(t, c["transient"]["display_id"]) for t, c in outs] == [("update_display_data", display_id)]


def test_clear_output(k):
    _, kc = k
    outs = outputs_of(kc, 'println!("gone"); clear_output_wait(); println!("kept");')
    assert [t for t, _ in outs] == ["stream", "clear_output", "stream"]
    assert outs[1][1]["wait"] is True


def test_tensor_is_shown_like_pytorch_and_as_html(k):
    _, kc = k
    outs = outputs_of(kc, "Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3])")
    data = outs[-1][1]["data"]
    assert data["text/plain"] == "tensor([[0., 1., 2.],\n        [3., 4., 5.]])"
    html = data["text/html"]
    for needle in ["shape <code>[2, 3]</code>", "torch.float32", "device <code>cpu</code>", "requires_grad <code>false</code>", "mean <code>2.5000</code>"]:
        assert needle in html, needle
    outs = outputs_of(kc, "Tensor::from_slice(&[1.5f64, -2.25]).set_requires_grad(true)")
    assert outs[-1][1]["data"]["text/plain"] == "tensor([ 1.5000, -2.2500], dtype=torch.float64, requires_grad=True)"
    assert result(outputs_of(kc, "Tensor::from_slice(&[3i64, 40])")) == ["tensor([ 3, 40])"]
    assert result(outputs_of(kc, "Tensor::from_slice(&[true, false])")) == ["tensor([ True, False])"]


def test_large_tensors_are_summarised(k):
    _, kc = k
    # Four million numbers: the output stays small, with PyTorch's "..." summary.
    outs = outputs_of(kc, "let big = Tensor::ones([2000, 2000], (Kind::Float, Device::Cpu)); display(&big); big.size()")
    data = next(c["data"] for t, c in outs if t == "display_data")
    assert len(data["text/plain"]) < 1000 and "..." in data["text/plain"]
    assert len(data["text/html"]) < 10000 and "⋮" in data["text/html"]


def test_plots_are_valid_svg_and_png(k):
    _, kc = k
    charts = {
        "line": 'LinePlot::new().title("loss").x_label("epoch").series("train", &[3.0, 2.0, 1.2]).series("val", &[3.2, 2.4, 1.9])',
        "scatter": 'ScatterPlot::new(&[1.0, 2.0, 3.0], &[2.0, 1.0, 3.0]).with_classes(&[0, 1, 1], &["a", "b"])',
        "histogram": 'Histogram::new(&Vec::<f64>::try_from(Tensor::randn([500], (Kind::Double, Device::Cpu))).unwrap(), 20).title("weights")',
        "confusion": 'ConfusionMatrix::from_predictions(&[0, 1, 2, 2], &[0, 2, 2, 2], 3).labels(&["cat", "dog", "car"])',
    }
    for name, chart in charts.items():
        data = outputs_of(kc, chart)[-1][1]["data"]
        root = assert_svg(data["image/svg+xml"])
        texts = " ".join(t.text.strip() for t in root.iter() if t.tag.endswith("text") and t.text)
        assert texts, f"{name}: no text in the SVG"
        data = outputs_of(kc, f"({chart}).size(320, 240).to_png().unwrap()")[-1][1]["data"]
        assert png_chunks(base64.b64decode(data["image/png"]))[:2] == (320, 240), name
        assert data["text/plain"] == "<PNG image 320x240>"
    svg = outputs_of(kc, charts["line"])[-1][1]["data"]["image/svg+xml"]
    assert "loss" in svg and "train" in svg and "val" in svg


def test_images_from_tensors(k):
    _, kc = k
    data = outputs_of(kc, "image(&Tensor::rand([3, 12, 20], (Kind::Float, Device::Cpu))).unwrap()")[-1][1]["data"]
    assert png_chunks(base64.b64decode(data["image/png"]))[:2] == (20, 12)
    # A batch of 5 gray 8x8 images, 3 per row: 2 rows, 2-pixel padding.
    data = outputs_of(kc, "image_grid(&Tensor::rand([5, 1, 8, 8], (Kind::Float, Device::Cpu)), 3).unwrap()")[-1][1]["data"]
    assert png_chunks(base64.b64decode(data["image/png"]))[:2] == (3 * 10 + 2, 2 * 10 + 2)
    reply, _ = run(kc, "image(&Tensor::rand([5, 8, 8], (Kind::Float, Device::Cpu))).unwrap()", timeout=300)
    assert reply["status"] == "error" and "1, 3 or 4 channels" in reply["evalue"]


def test_progress_is_one_throttled_updating_display(k):
    _, kc = k
    outs = outputs_of(kc, """
let mut total = 0;
for i in progress(0..60).desc("steps") {
    total += i;
    progress_postfix(format!("total={total}"));
    std::thread::sleep(std::time::Duration::from_millis(10));
}
""")
    shown = [c for t, c in outs if t == "display_data"]
    updates = [c for t, c in outs if t == "update_display_data"]
    assert len(shown) == 1
    display_id = shown[0]["transient"]["display_id"]
    assert all(u["transient"]["display_id"] == display_id for u in updates)
    # 60 steps of 10 ms: about 0.6 s, redrawn at most 10 times a second (plus the final state).
    assert 2 <= len(updates) <= 12, len(updates)
    final = updates[-1]["data"]["text/plain"]
    assert final.startswith("steps: 100%|") and "60/60" in final and "total=1770" in final, final
    assert "<progress value=\"60\" max=\"60\"" in updates[-1]["data"]["text/html"]
    # Nothing is shown for the loop's `()` value.
    assert result(outs) == []


def test_live_chart_updates_in_place(k):
    _, kc = k
    outs = outputs_of(kc, """
let mut chart = LiveChart::new("loss").interval(std::time::Duration::from_millis(0));
for step in 0..5 { chart.push("train", step as f64, 1.0 / (step as f64 + 1.0)); }
""")
    shown = [c for t, c in outs if t == "display_data"]
    updates = [c for t, c in outs if t == "update_display_data"]
    assert len(shown) == 1 and len(updates) == 4
    assert {u["transient"]["display_id"] for u in updates} == {shown[0]["transient"]["display_id"]}
    for message in shown + updates:
        assert_svg(message["data"]["image/svg+xml"])


def test_interrupting_a_training_loop_keeps_the_model(k):
    km, kc = k
    ok(kc, """
let vs = nn::VarStore::new(Device::Cpu);
let net = nn::linear(vs.root(), 4, 1, Default::default());
let mut opt = nn::Sgd::default().build(&vs, 0.01).unwrap();
let data = Tensor::randn([16, 4], (Kind::Float, Device::Cpu));
let mut steps_done = 0usize;
""")
    reply, outs = run_interrupted(km, kc, """
for _ in progress(0..100000).desc("training") {
    let loss = net.forward(&data).pow_tensor_scalar(2).mean(Kind::Float);
    opt.backward_step(&loss);
    steps_done += 1;
    if steps_done == 50 { println!("fifty steps"); }
    std::thread::sleep(std::time::Duration::from_millis(5));
}
""", printed("fifty steps"))
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert any("kept" in line for line in reply["traceback"])
    # The model, the optimizer and the counter the loop mutated are all still there.
    steps = int(result(ok(kc, "steps_done"))[0])
    assert steps > 10
    ok(kc, "let loss = net.forward(&data).pow_tensor_scalar(2).mean(Kind::Float); opt.backward_step(&loss);")
    assert result(ok(kc, "net.forward(&data).size()")) == ["[16, 1]"]
    # The progress bar's last state shows where it stopped.
    last = [c for t, c in outs if t == "update_display_data"][-1]["data"]["text/plain"]
    assert last.startswith("training:") and "/100000" in last


def test_check_interrupt_in_a_plain_loop(k):
    km, kc = k
    ok(kc, "let mut counter = 0u64;")
    reply, _ = run_interrupted(km, kc, 'loop { counter += 1; if counter == 100 { println!("running"); } check_interrupt(); std::thread::sleep(std::time::Duration::from_millis(1)); }', printed("running"))
    assert reply["ename"] == "KeyboardInterrupt"
    assert int(result(ok(kc, "counter"))[0]) > 0


def test_every_loop_a_cell_writes_stops_at_an_interrupt(k):
    """No check_interrupt() and no progress bar: the kernel polls in every loop of cell code,
    in statements, in functions and methods defined in cells, and in closures."""
    km, kc = k
    ok(kc, "let mut spins = 0u64;\nlet model = Tensor::ones([3], (Kind::Float, Device::Cpu));")
    ok(kc, "fn busy(n: &mut u64) { while *n < u64::MAX { *n = n.wrapping_add(1); } }\n"
           "struct Worker;\nimpl Worker { fn run(&self, n: &mut u64) { for i in 0.. { *n = i; } } }")
    cells = [
        'println!("running"); loop {}',
        'println!("running"); loop { spins = spins.wrapping_add(1); }',
        'println!("running"); for step in 0..u64::MAX { spins = step; }',
        'println!("running"); busy(&mut spins);',
        'println!("running"); Worker.run(&mut spins);',
        'println!("running"); { let spin = |n: &mut u64| loop { *n += 1; }; spin(&mut spins); }',
        # A for over an iterator: a slice's in chunks (this one, of zero-sized items, has
        # usize::MAX of them), a range of any integer type, a mutable slice, and any other
        # iterator at each item; and a while.
        'println!("running"); for _ in vec![(); usize::MAX].iter() { spins = spins.wrapping_add(1); }',
        'println!("running"); let (lo, hi) = (1i128, i128::MAX); for i in lo..hi { spins = i as u64; }',
        'println!("running"); let mut units = vec![(); usize::MAX]; for u in &mut units { *u = (); spins = spins.wrapping_add(1); }',
        'println!("running"); for x in std::iter::repeat(3u64) { spins = spins.wrapping_add(x); }',
        # Zipped and enumerated slices, by sub-slices.
        'println!("running"); let units = vec![(); usize::MAX]; for (u, v) in units.iter().zip(&units) { spins = spins.wrapping_add(1); }',
        'println!("running"); let mut units = vec![(); usize::MAX]; for (i, u) in units.iter_mut().enumerate() { *u = (); spins = i as u64; }',
        'println!("running"); while spins != 1 { spins = spins.wrapping_add(2); }',
        # A for around another loop polls at each of its iterations; the inner one in chunks.
        'println!("running"); let few = [1u64; 3]; for _ in 0..u64::MAX { for x in &few { spins = spins.wrapping_add(*x); } }',
    ]
    for cell in cells:
        reply, _ = run_interrupted(km, kc, cell, printed("running"))
        assert reply["ename"] == "KeyboardInterrupt", (cell, reply)
        assert any("kept" in line for line in reply["traceback"]), (cell, reply)
        assert result(ok(kc, "model.sum(Kind::Float).double_value(&[])")) == ["3.0"], cell
    # Counters the loops updated are kept too.
    assert int(result(ok(kc, "spins"))[0]) > 0


def test_chunked_loops_compute_what_they_would_without_the_polls(k):
    """Zipped and enumerated slices run by sub-slices, and any other `zip` or `enumerate` as
    written: every item once, in order, with `continue`, in place."""
    _, kc = k
    ok(kc, "let a: Vec<f64> = (0..10_000).map(|i| i as f64).collect();\nlet mut b = vec![0.0f64; 9_000];")
    code = """let mut dot = 0.0;
for (x, y) in a.iter().zip(&a) { if *x >= 5000.0 { continue; } dot += x * y; }
for (i, v) in b.iter_mut().enumerate() { *v = i as f64 * 2.0; }
for (o, x) in b.iter_mut().zip(a.iter().rev()) { *o += x; }
let mut firsts = Vec::new();
for (i, x) in a.iter().enumerate() { if i % 4000 == 0 { firsts.push((i, *x as usize)); } }
let mut both = 0;
for (p, q) in Some(1u32).zip(Some(2u32)) { both = p + q; }
(dot, b[0], b[8_999], firsts, both)"""
    expected_dot = float(sum(i * i for i in range(5000)))
    assert result(ok(kc, code)) == [f"({expected_dot}, 9999.0, 18998.0, [(0, 0), (4000, 4000), (8000, 8000)], 3)"]


def test_a_loop_over_slow_steps_stops_at_the_next_step(k):
    """A training loop: each step takes a while (here a sleep). Every kind of chunked loop polls
    at every step from the first, so ■ stops it without a restart."""
    km, kc = k
    ok(kc, "let mut slow = 0u64;\nlet steps = vec![1u64; 1000];")
    nap = "std::thread::sleep(std::time::Duration::from_millis(50));"
    cells = [
        f'println!("running"); for step in 0..1000u64 {{ {nap} slow = step; }}',
        f'println!("running"); for s in &steps {{ {nap} slow += s; }}',
        f'println!("running"); for (i, s) in steps.iter().enumerate() {{ {nap} slow += s * i as u64; }}',
        f'println!("running"); while slow < u64::MAX {{ {nap} slow += 1; }}',
        f'println!("running"); for _epoch in 0..3 {{ for s in &steps {{ {nap} slow += s; }} }}',
    ]
    for cell in cells:
        reply, _ = run_interrupted(km, kc, cell, printed("running"))
        assert reply["ename"] == "KeyboardInterrupt", (cell, reply)
        assert any("kept" in line for line in reply["traceback"]), (cell, reply)
    assert int(result(ok(kc, "slow"))[0]) > 0


def test_a_destructor_runs_to_its_end_when_an_interrupt_unwinds(k):
    """■ stops the loop; the destructor of a value it held runs while the interrupt unwinds, and
    its own loop and check_interrupt() are not stopped by that interrupt (a second panic there
    would abort the process)."""
    km, kc = k
    ok(kc, "use std::sync::{Arc, atomic::{AtomicU64, Ordering}};\n"
           "struct Flush(Arc<AtomicU64>);\n"
           "impl Drop for Flush { fn drop(&mut self) { for _ in 0..100_000u64 { self.0.fetch_add(1, Ordering::Relaxed); } check_interrupt(); } }\n"
           "let flushed = Arc::new(AtomicU64::new(0));")
    reply, _ = run_interrupted(km, kc, 'println!("running"); let _f = Flush(flushed.clone()); loop { std::hint::black_box(&_f); }', printed("running"))
    assert reply["ename"] == "KeyboardInterrupt", reply
    assert any("kept" in line for line in reply["traceback"]), reply
    assert result(ok(kc, "flushed.load(Ordering::Relaxed)")) == ["100000"]


def test_compile_errors_in_loops_point_at_the_code_as_written(k):
    _, kc = k
    reply, _ = run(kc, "for i in 0..3 { let x: bool = i; }")
    assert reply["status"] == "error"
    text = "\n".join(reply["traceback"])
    assert "cell:1:31" in text, text
    assert "__tch" not in text and "poll" not in text


def test_a_cell_that_never_checks_is_stopped_by_a_restart():
    # Its own kernel, without snapshots: the restart loses every variable (with snapshots they
    # come back: test_snapshots.py).
    km, kc = start_torch({"TCH_KERNEL_INTERRUPT_GRACE": "1", "TCH_KERNEL_SNAPSHOTS": "off"})
    try:
        ok(kc, "let kept = 1;")
        # One long native call: no loop of the cell's own comes round to poll.
        never_checks = 'println!("running"); std::thread::sleep(std::time::Duration::from_secs(3600));'
        reply, _ = run_interrupted(km, kc, never_checks, printed("running"))
        assert reply["ename"] == "KeyboardInterrupt"
        assert any("restarted" in line for line in reply["traceback"])
        reply, _ = run(kc, "kept", timeout=120)
        assert reply["status"] == "error"
        # A second interrupt does not wait for the grace period.
        ok(kc, "let x = 1;")
        reply, _ = run_interrupted(km, kc, never_checks, printed("running"), interrupts=2)
        assert reply["ename"] == "KeyboardInterrupt"
        assert result(ok(kc, "1 + 1")) == ["2"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def test_an_interrupt_while_the_cell_compiles_stops_it_at_its_first_check(k):
    km, kc = k
    ok(kc, "let survivor = 7;")
    # The interrupt goes out when the kernel takes the cell, so it arrives while the cell
    # compiles, and the loop's first check stops it.
    reply, _ = run_interrupted(km, kc, "let mut spins = 0u64; loop { spins += 1; check_interrupt(); std::thread::sleep(std::time::Duration::from_millis(1)); }", busy)
    assert reply["ename"] == "KeyboardInterrupt" and any("kept" in line for line in reply["traceback"]), reply
    assert result(ok(kc, "survivor")) == ["7"]
