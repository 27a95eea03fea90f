#!/usr/bin/env python3
"""What the interrupt poll in every loop of a cell costs: tight numeric loops timed inside the
cell (compile time excluded), in three kernels in the same run, alternating: the kernel's
chunked polls (the default), the simple poll at every iteration (TCH_KERNEL_LOOP_POLL=every),
and no polls (TCH_KERNEL_LOOP_POLL=0, the reference). Prints each polling kernel's ratio of
medians to the reference per loop; the goal for the chunked polls is at most 1.03. Then what
the polls cost rustc: a cell of nested loops, timed whole (compile and run, the run negligible).

    .venv/bin/python bench/loop_poll.py [--kernel rust-tch] [--runs 7] [--only 'a Vec']
"""

import argparse
import os
import re
import statistics
import time

from jupyter_client import KernelManager

SETUP = "let data: Vec<f64> = (0..4_000_000).map(|i| (i % 1000) as f64 * 0.001).collect();\nlet other: Vec<f64> = data.iter().map(|v| 1.0 - v).collect();\nlet n = 200usize;\nlet a: Vec<f64> = (0..n * n).map(|i| (i % 7) as f64).collect();\nlet rec_steps = 60_000_000u64;"

# (name, cell body; each prints `elapsed <seconds>` for its loop only). `{i}` makes each run a
# new cell, as in a notebook.
LOOPS = [
    # A recurrence LLVM rewrites algebraically when it sees the whole counted loop.
    ("for over a range (integer recurrence)",
     "let t = std::time::Instant::now();\nlet mut x = {i}u64;\n"
     "for k in 0..60_000_000u64 { x = x.wrapping_mul(6364136223846793005).wrapping_add(k); }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), x);"),
    # The same with its bound in a variable of an earlier cell, as `for step in 0..steps` has
    # it: LLVM then gives the plain loop the form it gives every chunk (see the README).
    ("for over a range (integer recurrence, bound in a variable)",
     "let t = std::time::Instant::now();\nlet mut x = {i}u64;\n"
     "for k in 0..rec_steps { x = x.wrapping_mul(6364136223846793005).wrapping_add(k); }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), x);"),
    ("for over a range (float arithmetic)",
     "let t = std::time::Instant::now();\nlet mut s = {i}.0f64;\n"
     "for k in 0..40_000_000u64 { s += ((k % 7) as f64).sqrt() * 0.5; }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), s);"),
    ("for over a Vec (sum of squares)",
     "let t = std::time::Instant::now();\nlet mut s = {i}.0;\n"
     "for _ in 0..10 { for v in &data { s += v * v; } }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), s > 0.0);"),
    ("for over a Vec, in place (iter_mut)",
     "let t = std::time::Instant::now();\nlet mut w = data.clone();\n"
     "for _ in 0..10 { for v in w.iter_mut() { *v = *v * 0.5 + {i}.0; } }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), w[7] > 0.0);"),
    ("for over two zipped Vecs (dot product)",
     "let t = std::time::Instant::now();\nlet mut s = {i}.0;\n"
     "for _ in 0..10 { for (x, y) in data.iter().zip(&other) { s += x * y; } }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), s > 0.0);"),
    ("for over an enumerated Vec (weighted sum)",
     "let t = std::time::Instant::now();\nlet mut s = {i}.0;\n"
     "for _ in 0..10 { for (k, v) in data.iter().enumerate() { s += v * (k & 7) as f64; } }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), s > 0.0);"),
    ("while (Collatz steps)",
     "let t = std::time::Instant::now();\nlet mut steps = 0u64;\nlet mut m = 1u64 + {i};\n"
     "while m < 3_000_000 { let mut c = m; while c != 1 { c = if c % 2 == 0 { c / 2 } else { 3 * c + 1 }; steps += 1; } m += 1; }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), steps % 2);"),
    ("nested for (naive 200x200 matmul)",
     "let t = std::time::Instant::now();\nlet mut c = vec![0.0f64; n * n];\n"
     "for _ in 0..{reps} { for r in 0..n { for k in 0..n { let x = a[r * n + k]; for j in 0..n { c[r * n + j] += x * a[k * n + j]; } } } }\n"
     "println!(\"elapsed {} {}\", t.elapsed().as_secs_f64(), c[{i} % (n * n)] > 0.0);"),
]


# A cell whose time is its compile: a `for` around three small loops (an iterator's, a slice's,
# a `while`), as a training cell has them. `{i}` makes each run a new cell.
COMPILE_CELL = """let mut acc = {i}.0f64;
let data = vec![1.0f64; 8];
for epoch in 0..2 {
    for (i, x) in data.iter().enumerate() { acc += x * i as f64; }
    for x in &data { acc += x; }
    let mut k = 0; while k < 3 { k += 1; acc += k as f64; }
}
println!("{acc}");"""


def start(kernel, env_extra):
    km = KernelManager(kernel_name=kernel)
    env = dict(os.environ)
    env.update(env_extra)
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=300)
    return km, kc


def run(kc, code):
    """Runs a cell; returns what it printed and its wall time (compile included)."""
    out = []
    started = time.monotonic()
    reply = kc.execute_interactive(
        code,
        timeout=900,
        output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
    )
    wall = time.monotonic() - started
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code!r} failed: {reply['content']}")
    return "".join(out), wall


def elapsed(kc, code):
    """The time the cell measured for its loop alone."""
    return float(re.search(r"elapsed ([0-9.e-]+)", run(kc, code)[0]).group(1))


def alternating(kernels, runs, measure):
    """`measure(kc, i)` for run i in each kernel in turn: the times per kernel."""
    times = {k: [] for k in kernels}
    for i in range(runs):
        for k, (_, kc) in kernels.items():
            times[k].append(measure(kc, i))
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="rust-tch")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", default="", help="run only the loops whose name has this")
    args = parser.parse_args()
    # No snapshots: a snapshot written by one kernel after a cell would run during the other's.
    kernels = {
        "chunked": start(args.kernel, {"TCH_KERNEL_SNAPSHOTS": "off"}),
        "every": start(args.kernel, {"TCH_KERNEL_LOOP_POLL": "every", "TCH_KERNEL_SNAPSHOTS": "off"}),
        "no poll": start(args.kernel, {"TCH_KERNEL_LOOP_POLL": "0", "TCH_KERNEL_SNAPSHOTS": "off"}),
    }
    try:
        for _, kc in kernels.values():
            kc.execute_interactive(SETUP, timeout=900)
        print(f"loop poll overhead ({args.runs} runs each, alternating; ratio of medians to no poll, "
              "goal <= 1.03 for the chunked polls)")
        print(f"  {'loop':<58} {'chunked':>8} {'every it.':>10}  no poll (median)")
        worst = 0.0
        for name, body in [loop for loop in LOOPS if args.only in loop[0]]:
            times = alternating(kernels, args.runs, lambda kc, i: elapsed(kc, body.replace("{i}", str(i + 1)).replace("{reps}", "3")))
            plain = statistics.median(times["no poll"])
            chunked = statistics.median(times["chunked"]) / plain
            every = statistics.median(times["every"]) / plain
            worst = max(worst, chunked)
            print(f"  {name:<58} {chunked:7.3f}x {every:9.3f}x  {plain:.3f} s")
        print(f"  worst chunked {worst:.3f}x")
        if not args.only:
            times = alternating(kernels, args.runs, lambda kc, i: run(kc, COMPILE_CELL.replace("{i}", str(i + 1)))[1])
            plain = statistics.median(times["no poll"])
            print("compile and run of a cell with a for around three loops: "
                  f"chunked {statistics.median(times['chunked']) / plain:5.3f}x, "
                  f"every iteration {statistics.median(times['every']) / plain:5.3f}x "
                  f"(no poll {plain:.3f} s)")
    finally:
        for km, kc in kernels.values():
            kc.stop_channels()
            km.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
