#!/usr/bin/env python3
"""Snapshot benchmark: what the kernel's snapshot of a notebook's variables costs, through
jupyter_client, against PyTorch's own checkpoint (`torch.save` / `torch.load` of the same bytes in
this Python, timed in the same run: the machines are shared and noisy).

    .venv/bin/python bench/snapshot.py [--kernel rust-tch] [--repeats 5]

Figures:
- the snapshot of a ResNet-9 `VarStore` and of 1 GiB of tensors (four 256 MiB variables): time
  (the writer's own, from `:snapshot`) and bytes, against `torch.save` of as many bytes;
- a trivial cell sent right after a cell that changed the 1 GiB (its snapshot being written)
  against the same cell once the snapshot is done: the next cell must not wait;
- that change itself (1 GiB updated in place) while the last snapshot of it is being written,
  against the same once it is written: the pages the writer still reads are copied first;
- `:restore` of both after a restart of the kernel, against `torch.load` of the same bytes.
"""

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client import KernelManager

RESNET9 = """
fn conv_bn(p: &nn::Path, c_in: i64, c_out: i64) -> nn::SequentialT {
    let conv = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
    nn::seq_t()
        .add(nn::conv2d(p / "conv", c_in, c_out, 3, conv))
        .add(nn::batch_norm2d(p / "bn", c_out, Default::default()))
        .add_fn(|x| x.relu())
}

fn residual_layer(p: &nn::Path, c_in: i64, c_out: i64) -> nn::FuncT<'static> {
    let pre = conv_bn(&(p / "pre"), c_in, c_out);
    let block1 = conv_bn(&(p / "b1"), c_out, c_out);
    let block2 = conv_bn(&(p / "b2"), c_out, c_out);
    nn::func_t(move |x, train| {
        let pre = x.apply_t(&pre, train).max_pool2d_default(2);
        let residual = pre.apply_t(&block1, train).apply_t(&block2, train);
        pre + residual
    })
}

fn resnet9(p: &nn::Path) -> nn::SequentialT {
    nn::seq_t()
        .add(conv_bn(&(p / "prep"), 3, 64))
        .add(residual_layer(&(p / "layer1"), 64, 128))
        .add(conv_bn(&(p / "layer2"), 128, 256))
        .add_fn(|x| x.max_pool2d_default(2))
        .add(residual_layer(&(p / "layer3"), 256, 512))
        .add_fn(|x| x.adaptive_max_pool2d([1, 1]).0.flatten(1, -1))
        .add(nn::linear(p / "classifier", 512, 10, Default::default()))
        .add_fn(|x| x * 0.125)
}
"""
MODEL = "let vs = nn::VarStore::new(Device::Cpu);\nlet net = resnet9(&vs.root());"
# 1 GiB in four variables of 256 MiB (64 Mi floats each).
BIG = "\n".join(f"let mut g{i} = Tensor::randn([67_108_864], (Kind::Float, Device::Cpu));" for i in range(4))
TOUCH = "\n".join(f"g{i} += 1.0;" for i in range(4))
STATUS = re.compile(r"Last written after cell (\d+): (\d+) variables written, (\d+) bytes, (\d+) ms, (\d+) failed")


def run(kc, code, timeout=900):
    outputs = []
    start = time.perf_counter()
    reply = kc.execute_interactive(code, output_hook=lambda m: outputs.append(m), timeout=timeout)
    elapsed = time.perf_counter() - start
    if reply["content"]["status"] != "ok":
        sys.exit(f"cell failed: {code[:80]!r}: {reply['content'].get('evalue')}")
    text = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    return elapsed, text


def status(kc):
    m = STATUS.search(run(kc, ":snapshot")[1])
    return None if m is None else tuple(int(g) for g in m.groups())


def wait_written(kc, after, deadline_s=600):
    """The status of the first snapshot written after the one `after` (cell number)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        s = status(kc)
        if s is not None and s[0] > after:
            if s[4]:
                sys.exit(f"the snapshot failed: {s}")
            return s
        time.sleep(0.05)
    sys.exit("no snapshot was written")


def torch_reference(nbytes, directory, repeats):
    """Median seconds of torch.save and torch.load of `nbytes` of float32 in one tensor."""
    import torch

    t = torch.randn(nbytes // 4)
    path = Path(directory) / "reference.pt"
    saves, loads = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.save({"t": t}, path)
        os.sync()
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch.load(path)
        loads.append(time.perf_counter() - start)
    path.unlink()
    return statistics.median(saves), statistics.median(loads)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", default="rust-tch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tch-kernel-snapshot-bench-")
    km = KernelManager(kernel_name=args.kernel)
    env = dict(os.environ, TCH_KERNEL_SNAPSHOTS=str(Path(work) / "snapshots"), JPY_SESSION_NAME=str(Path(work) / "bench.ipynb"))
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=300)
    try:
        run(kc, RESNET9)
        before = (status(kc) or (0,))[0]
        run(kc, MODEL)
        model = wait_written(kc, before)
        before = model[0]
        run(kc, BIG)
        big = wait_written(kc, before)

        during, idle, touch_writing, touch_idle = [], [], [], []
        for i in range(args.repeats):
            before = status(kc)[0]
            touch_idle.append(run(kc, TOUCH)[0])
            during.append(run(kc, f"1 + {i}")[0])
            wait_written(kc, before)
            idle.append(run(kc, f"2 + {i}")[0])
            # Again at once, while this change's own snapshot is being written.
            before = status(kc)[0]
            run(kc, TOUCH)
            touch_writing.append(run(kc, TOUCH)[0])
            wait_written(kc, before)

        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=300)
        restore_s, restored = run(kc, ":restore")
        if "g3: Tensor" not in restored or "vs: VarStore" not in restored:
            sys.exit(f"restore did not bring everything back:\n{restored}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    try:
        model_save, model_load = torch_reference(model[2], work, args.repeats)
        big_save, big_load = torch_reference(big[2], work, args.repeats)
    finally:
        # A gigabyte of snapshots.
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("snapshot of a ResNet-9 VarStore", model[3] / 1000, model_save, f"{model[2] / 2**20:.1f} MiB", "torch.save"),
        ("snapshot of 1 GiB of tensors", big[3] / 1000, big_save, f"{big[2] / 2**20:.1f} MiB", "torch.save"),
        ("trivial cell while the 1 GiB is written", statistics.median(during), statistics.median(idle), "", "same cell, idle"),
        ("1 GiB updated in place while written", statistics.median(touch_writing), statistics.median(touch_idle), "", "same cell, idle"),
        (":restore of both (with its compile)", restore_s, model_load + big_load, "", "torch.load"),
    ]
    print(f"snapshots: {args.kernel} against a reference measured in this run (medians of {args.repeats})")
    print(f"{'figure':44}{'kernel':>9}{'reference':>11}{'ratio':>8}  {'bytes':>11}  reference")
    for name, value, reference, size, what in rows:
        print(f"{name:44}{value:8.3f}s{reference:10.3f}s{value / reference:7.2f}x  {size:>11}  {what}")


if __name__ == "__main__":
    main()
