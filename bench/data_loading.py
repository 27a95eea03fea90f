"""Data loading: tch-kernel's `DataLoader` (worker threads) against torchvision's `ImageFolder` +
`DataLoader` (worker processes), in one run, on the same folder of ImageNet-sized JPEGs (about
500x375, quality 90, in the page cache), with the same transforms (RandomResizedCrop(224),
RandomHorizontalFlip, normalization), batch size and number of workers. Prints images/s of each,
their ratio, and the peak memory each loading took (resident memory of the process and its
workers above what it held before the epoch, sampled every 20 ms).

    .venv/bin/python bench/data_loading.py [--kernel rust-tch] [--images 2000] [--workers 1 2]

Each side runs one epoch to start its workers and fill caches, then times the next.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

RUST_CELL = """
let loader = DataLoader::new(ImageFolder::new({root})?.transform(Compose::new()
    .then(RandomResizedCrop::new(224)).then(RandomHorizontalFlip::default()).then(Normalize::imagenet())))
    .batch_size({batch}).shuffle(true).workers({workers});
let mut n = 0i64;
for (x, _) in loader.epoch(0) {{ n += x.size()[0]; }}
println!("ready {{}}", std::process::id());
let started = std::time::Instant::now();
let mut n = 0i64;
for (x, _) in loader.epoch(1) {{ n += x.size()[0]; }}
println!("rate {{}}", n as f64 / started.elapsed().as_secs_f64());
"""

PYTHON_SCRIPT = """
import os, sys, time, torch
from torchvision import datasets, transforms as T
torch.set_num_threads(1)
root, batch, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ds = datasets.ImageFolder(root, T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]))
loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                     persistent_workers=workers > 0)
for x, _ in loader: pass
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
started = time.perf_counter()
n = 0
for x, _ in loader: n += x.shape[0]
print("rate", n / (time.perf_counter() - started), flush=True)
"""


def rss_kib(pid):
    """Resident memory of `pid` and its descendants (worker processes), in KiB."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return total


class PeakRss:
    """Samples a process tree's resident memory until stopped; the peak above the start."""

    def __init__(self, pid):
        self.pid, self.base, self.peak, self.done = pid, rss_kib(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self):
        self.done.set()
        self.thread.join()
        return max(0, self.peak - self.base) / 1024


def torchvision_rate(root, batch, workers):
    proc = subprocess.Popen([sys.executable, "-c", PYTHON_SCRIPT, str(root), str(batch), str(workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = proc.stdout.readline().split()
    assert ready and ready[0] == "ready", ready
    peak = PeakRss(proc.pid)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    rate = float(proc.stdout.readline().split()[1])
    mib = peak.stop()
    proc.wait()
    return rate, mib


def rust_rate(kc, root, batch, workers):
    lines, peak = [], [None]

    def hook(msg):
        if msg["msg_type"] == "stream":
            for line in msg["content"]["text"].splitlines():
                lines.append(line)
                if line.startswith("ready "):
                    peak[0] = PeakRss(int(line.split()[1]))

    reply = kc.execute_interactive(RUST_CELL.format(root=json.dumps(str(root)), batch=batch, workers=workers),
                                   timeout=1200, output_hook=hook)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"the Rust cell failed: {reply['content'].get('evalue')}")
    rate = float(next(l for l in lines if l.startswith("rate ")).split()[1])
    return rate, peak[0].stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="rust-tch")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to let the kernel's rust-analyzer warm up (a background thread) first")
    args = parser.parse_args()

    from make_image_folder import write_benchmark_folder
    root = REPO / "target" / "bench-data" / f"imagenet-like-{args.images}"
    if not root.exists():
        print(f"writing {args.images} JPEGs to {root}", flush=True)
        write_benchmark_folder(root.with_suffix(".partial"), args.images)
        root.with_suffix(".partial").rename(root)
    for f in root.rglob("*.JPEG"):  # into the page cache
        f.read_bytes()

    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name=args.kernel, startup_timeout=120)
    try:
        kc.execute_interactive("1", timeout=600, output_hook=lambda m: None)
        time.sleep(args.settle)
        print(f"{args.images} JPEGs, batch {args.batch}, CPUs {os.cpu_count()}")
        print(f"{'workers':>7} {'tch-kernel img/s':>17} {'torchvision img/s':>18} {'ratio':>6} "
              f"{'tch-kernel MiB':>15} {'torchvision MiB':>16}")
        for workers in args.workers:
            ours, our_mib = rust_rate(kc, root, args.batch, workers)
            theirs, their_mib = torchvision_rate(root, args.batch, workers)
            print(f"{workers:>7} {ours:>17.1f} {theirs:>18.1f} {ours / theirs:>6.2f} "
                  f"{our_mib:>15.0f} {their_mib:>16.0f}", flush=True)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
