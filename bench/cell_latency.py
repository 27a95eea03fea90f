#!/usr/bin/env python3
"""Cell latency benchmark: starts a kernel through jupyter_client and measures what a notebook
user feels. Every figure is printed next to the same measurement of a reference kernel taken in
the same run (ipykernel by default), as a ratio, because absolute timings on shared machines
are noisy.

    .venv/bin/python bench/cell_latency.py [--kernel rust-tch] [--reference python3] [--cells 10]

Figures: start-to-ready, first cell sent right after the kernel is ready (it includes the
evaluator's background warm-up), median of later cells, median trivial cell, and RSS growth of
the kernel's child processes over 20 cells (tch-kernel's evaluation child).
"""

import argparse
import statistics
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

WORKLOADS = {
    # (language, workload) -> (first cell, repeated "work" cell template, trivial cell)
    ("rust", "plain"): ("let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();",
                        "v.iter().map(|x| x * {i}.0).sum::<f64>()",
                        "1 + 1"),
    ("python", "plain"): ("v = [float(i) for i in range(1000)]",
                          "sum(x * {i} for x in v)",
                          "1 + 1"),
    # The first cell is what a notebook starts with; later cells do small tensor work.
    ("rust", "tensor"): ("let x = Tensor::randn([64, 64], (Kind::Float, Device::Cpu));",
                         "x.matmul(&x).mean(Kind::Float).double_value(&[]) * {i}.0",
                         "1 + 1"),
    ("python", "tensor"): ("import torch\nx = torch.randn(64, 64)",
                           "x.matmul(x).mean().item() * {i}",
                           "1 + 1"),
}


def execute(kc, code, timeout=600):
    t = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: None)
    elapsed = time.perf_counter() - t
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code!r} failed: {reply['content']}")
    return elapsed


def child_rss_kb(pid):
    """RSS of the kernel's child processes (tch-kernel's evaluation child)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            status = Path(f"/proc/{child}/status").read_text()
            total += int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmRSS:")))
    return total


def measure(kernel_name, cells, workload):
    t = time.perf_counter()
    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=120)
    ready = time.perf_counter() - t
    try:
        kc.kernel_info()
        info = kc.get_shell_msg(timeout=60)
        language = info["content"]["language_info"]["name"].lower()
        first, work, trivial = WORKLOADS[(language, workload)]
        result = {"start_to_ready": ready, "first_cell": execute(kc, first)}
        result["later_cells_median"] = statistics.median(execute(kc, work.format(i=i)) for i in range(cells))
        result["trivial_cell_median"] = statistics.median(execute(kc, trivial) for _ in range(cells))
        pid = km.provisioner.pid
        rss0 = child_rss_kb(pid)
        for i in range(20):
            execute(kc, work.format(i=i))
        result["child_rss_growth_mb_20_cells"] = (child_rss_kb(pid) - rss0) / 1024
        return result
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="rust-tch")
    ap.add_argument("--reference", default="python3", help="kernel measured in the same run for ratios ('' for none)")
    ap.add_argument("--cells", type=int, default=10)
    ap.add_argument("--workload", choices=["tensor", "plain"], default="tensor",
                    help="tensor: tch cells vs PyTorch (needs torch in the reference kernel); plain: Rust vs Python")
    args = ap.parse_args()

    ours = measure(args.kernel, args.cells, args.workload)
    ref = measure(args.reference, args.cells, args.workload) if args.reference else None
    print(f"workload: {args.workload}")
    print(f"{'figure':32} {args.kernel:>14} {args.reference or '':>14} {'ratio':>8}")
    for key, value in ours.items():
        unit = "MB" if key.endswith("_mb_20_cells") else "s"
        line = f"{key:32} {value:13.3f}{unit}"
        if ref is not None:
            r = ref[key]
            ratio = f"{value / r:8.1f}x" if unit == "s" and r > 0 else ""
            line += f" {r:13.3f}{unit} {ratio}"
        print(line)


if __name__ == "__main__":
    main()
