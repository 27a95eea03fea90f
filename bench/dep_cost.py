#!/usr/bin/env python3
"""What a `:dep` costs: a fresh kernel's `:dep CRATE` cell with the crate's first use, against
`cargo build` of a fresh project that depends only on that crate (the same first use in its
`main`, the kernel's opt-level, the crates already downloaded, fresh target dir), alternating in
the same run; and a trivial cell right after the `:dep` against one right before it.

    .venv/bin/python bench/dep_cost.py [--kernel rust-tch] [--runs 3] [--only anyhow,image]

Every figure is a ratio of medians measured in the same run (the machines are shared and noisy).
Targets (issue "The Rust ecosystem in a cell"): `:dep` + first use <= 1.3x cargo for anyhow and
image; the trivial cell after it within the compile loop's targets (bench/cell_latency.py).
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cell_latency import execute  # the same timed cell as the compile-loop benchmark
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel

# name -> (dependency line, first use as a cell's last expression)
CASES = {
    # Every cell has anyhow already (tch's examples start with `use anyhow::Result;`).
    "anyhow": ('anyhow = "1"', 'anyhow::anyhow!("no {}", 42).to_string()'),
    # evcxr's tour: a small crate no kernel has built.
    "base64": ('base64 = "0.10.1"', "base64::encode(&vec![1u8, 2, 3, 4])"),
    # evcxr's tour: a heavy crate (image codecs, rayon).
    "image": ('image = "0.23"',
              "image::ImageBuffer::from_fn(16, 16, |x, y| image::Rgb([x as u8, y as u8, 0u8])).width()"),
}


def kernel_run(kernel, dep, use, i):
    """(the `:dep` cell, a trivial cell before it, one after it) in a fresh kernel."""
    km, kc = start_new_kernel(kernel_name=kernel, startup_timeout=300)
    try:
        execute(kc, "let warm = 1;")
        before = execute(kc, f"warm + {i}")
        dep_cell = execute(kc, f":dep {dep}\n{use}")
        after = execute(kc, f"warm + {i + 1}")
        return dep_cell, before, after
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def cargo_project(root, dep, use, opt_level):
    root.mkdir(parents=True)
    (root / "src").mkdir()
    (root / "Cargo.toml").write_text(
        f'[package]\nname = "fresh"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n{dep}\n\n'
        f"[profile.dev]\nopt-level = {opt_level}\n\n[workspace]\n")
    (root / "src" / "main.rs").write_text(f'fn main() {{\n    println!("{{:?}}", {use});\n}}\n')
    return root


def cargo_run(work, dep, use, opt_level, i, env):
    """`cargo build` of a fresh project with its own target dir (crates already downloaded)."""
    root = cargo_project(work / f"fresh-{i}", dep, use, opt_level)
    t = time.perf_counter()
    subprocess.run(["cargo", "build", "--offline", "--quiet"], cwd=root, env=env, check=True)
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", default="rust-tch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(CASES))
    args = parser.parse_args()
    spec = KernelSpecManager().get_kernel_spec(args.kernel)
    env = dict(__import__("os").environ)
    env.update({k: v for k, v in spec.env.items() if "${" not in v})
    opt_level = spec.env.get("TCH_KERNEL_OPT_LEVEL", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.only.split(","):
            dep, use = CASES[name]
            # Download once, untimed: both sides build from crates on this machine.
            subprocess.run(["cargo", "fetch", "--quiet"], cwd=cargo_project(work / f"fetch-{name}", dep, use, opt_level),
                           env=env, check=True)
            kernel, cargo, before, after = [], [], [], []
            for i in range(args.runs):
                dep_cell, b, a = kernel_run(args.kernel, dep, use, i)
                kernel.append(dep_cell)
                before.append(b)
                after.append(a)
                cargo.append(cargo_run(work / name, dep, use, opt_level, i, env))
                print(f"  {name} run {i + 1}: :dep cell {dep_cell:.2f} s, cargo build {cargo[-1]:.2f} s, "
                      f"trivial cell before {b:.3f} s, after {a:.3f} s", flush=True)
            rows.append({
                "crate": name,
                "dep_cell_s": statistics.median(kernel),
                "cargo_build_s": statistics.median(cargo),
                "ratio": statistics.median(kernel) / statistics.median(cargo),
                "trivial_before_s": statistics.median(before),
                "trivial_after_s": statistics.median(after),
                "trivial_ratio": statistics.median(after) / statistics.median(before),
            })
    print()
    print(f"{'crate':8} {':dep + first use':>16} {'cargo build':>12} {'ratio':>7} {'trivial after/before':>22}")
    for r in rows:
        print(f"{r['crate']:8} {r['dep_cell_s']:>14.2f} s {r['cargo_build_s']:>10.2f} s {r['ratio']:>6.2f}x "
              f"{r['trivial_after_s']:>9.3f}/{r['trivial_before_s']:.3f} s = {r['trivial_ratio']:.2f}x")
    print("target: :dep + first use <= 1.3x cargo build (anyhow, image)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
