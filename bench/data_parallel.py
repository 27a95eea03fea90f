#!/usr/bin/env python3
"""Data-parallel training on this machine's CPU, in two figures from one run:

1. all_reduce between 2 Gloo ranks: the c10d crate (Rust, through its C++ shim on libtorch's
   own ProcessGroupGloo) against Python's torch.distributed with Gloo, on the same torch,
   alternating. Seconds per all_reduce and the ratio Python / Rust per size (goal >= 0.95: the
   same C++ does the work).
2. One training step of an MLP (784-1024-1024-10, SGD through DataParallel) over the same
   global batch, 2 ranks against 1, each rank on one thread: the speed-up and the efficiency
   (speed-up / 2).

    .venv/bin/python bench/data_parallel.py [--runs 5] [--iterations 20] [--sizes 1 25 100]

Builds crates/c10d's examples against the venv's torch into target/tch-tests first (minutes
the first time: it compiles tch's C++ shim).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TORCH = Path(torch.__file__).parent
TARGET = REPO / "target" / "tch-tests"

PYTHON_RANK = r"""
import json, os, sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}",
                        rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
iterations = int(sys.argv[1])
for mb in sys.argv[2:]:
    t = torch.ones(int(float(mb) * 1024 * 1024 / 4))
    for _ in range(3):
        dist.all_reduce(t)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(t)
    seconds = (time.perf_counter() - started) / iterations
    if dist.get_rank() == 0:
        print(json.dumps({"mb": float(mb), "seconds": seconds}), flush=True)
dist.destroy_process_group()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build():
    env = dict(os.environ, LIBTORCH=str(TORCH), CARGO_TARGET_DIR=str(TARGET))
    subprocess.run(["cargo", "build", "--release", "-p", "c10d", "--example", "all_reduce_bench",
                    "--example", "train_step_bench"], cwd=REPO, env=env, check=True)
    return TARGET / "release" / "examples"


def launch(command, world):
    """Runs `command` as `world` ranks (torchrun's variables); rank 0's JSON lines."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(TORCH / "lib"), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(command, env=dict(env, RANK=str(r)), stdout=subprocess.PIPE, text=True)
             for r in range(world)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"{command[0]} failed")
    return [json.loads(line) for line in outs[0].splitlines()]


def two_ranks(command, iterations, sizes):
    rows = launch([*command, str(iterations), *map(str, sizes)], 2)
    return {row["mb"]: row["seconds"] for row in rows}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 25, 100])
    args = parser.parse_args()
    examples = build()
    rust = [str(examples / "all_reduce_bench")]
    python = [sys.executable, "-c", PYTHON_RANK]
    times = {"rust": {mb: [] for mb in args.sizes}, "python": {mb: [] for mb in args.sizes}}
    for _ in range(args.runs):
        for name, command in (("rust", rust), ("python", python)):
            for mb, seconds in two_ranks(command, args.iterations, args.sizes).items():
                times[name][mb].append(seconds)
    print(f"torch {torch.__version__}, 2 Gloo ranks on 127.0.0.1, {args.runs} runs of {args.iterations} all_reduce each")
    print(f"{'MB':>6} {'Rust s/op':>12} {'Python s/op':>12} {'Python/Rust':>12}")
    for mb in args.sizes:
        r, p = statistics.median(times["rust"][mb]), statistics.median(times["python"][mb])
        print(f"{mb:>6g} {r:>12.5f} {p:>12.5f} {p / r:>12.3f}")
    step = [str(examples / "train_step_bench"), "20", "256"]
    one, two = [], []
    for _ in range(args.runs):
        one.append(launch([*step, "overlap", "25"], 1)[0]["seconds"])
        two.append(launch([*step, "overlap", "25"], 2)[0]["seconds"])
    t1, t2 = statistics.median(one), statistics.median(two)
    print("training step, MLP 784-1024-1024-10, global batch 256, one thread per rank:")
    print(f"  1 rank {t1:.4f} s, 2 ranks {t2:.4f} s: speed-up {t1 / t2:.2f}, efficiency {t1 / t2 / 2:.2f}")
    # The reduction during backward (backward_step) against after it (backward, then
    # average_gradients), 2 ranks, alternating; DDP's 25 MB buckets (the model's 7.4 MB is then
    # a 1 MiB first bucket and one more) and 1 MB ones.
    print("  2 ranks, reducing during backward against after it (ratio of medians, < 1: faster):")
    for mb in ("25", "1"):
        during, after, share = [], [], []
        for _ in range(args.runs):
            row = launch([*step, "overlap", mb], 2)[0]
            during.append(row["seconds"])
            share.append(row["overlap"])
            after.append(launch([*step, "after", mb], 2)[0]["seconds"])
        d, a = statistics.median(during), statistics.median(after)
        print(f"  {mb:>3} MB buckets: {d:.4f} s against {a:.4f} s: {d / a:.3f}x; "
              f"{statistics.median(share):.0%} of the gradients started reducing during backward")

if __name__ == "__main__":
    main()
