"""Memory of idle notebooks: one kernel after a tensor cell and a Tab, and four such kernels of
one user on a node, against ipykernel with torch imported doing the same, measured in the same
run. Memory is PSS summed over each kernel's process tree (the kernel and every process below
it), read from /proc, so that libraries mapped by several processes (libtorch in four
evaluation processes) count once in total, as the node's memory sees them.

    .venv/bin/python bench/kernel_memory.py [--kernel rust-tch] [--reference python3]

Also measures the kernel with TCH_KERNEL_ANALYZER=first (rust-analyzer warmed at start and asked
first: the behaviour before the saved names answered Tab), after it answered.
"""

import argparse
import os
import time

import jupyter_client

RUST_CELL = "let t = Tensor::ones([1000, 1000], (Kind::Float, Device::Cpu)); t.sum(Kind::Float)"
PY_CELL = "import torch\nt = torch.ones(1000, 1000)\nt.sum()"
# Only rust-analyzer completes a field of the cell's own struct (see tests/conftest.py).
ANALYZER_PROBE = "struct WarmUpProbe { warm_field: i32 }\nlet probe = WarmUpProbe { warm_field: 1 };\nprobe.warm_f"


def tree(pid):
    out, i = [pid], 0
    while i < len(out):
        for task in os.listdir(f"/proc/{out[i]}/task"):
            try:
                with open(f"/proc/{out[i]}/task/{task}/children") as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                pass
        i += 1
    return out


def pss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Kernel:
    def __init__(self, name, env=None):
        self.km = jupyter_client.KernelManager(kernel_name=name)
        full = dict(os.environ)
        full.update(env or {})
        self.km.start_kernel(env=full)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=300)

    def pid(self):
        return self.km.provisioner.process.pid

    def run(self, code):
        reply = self.kc.execute_interactive(code, timeout=600, output_hook=lambda m: None)
        assert reply["content"]["status"] == "ok", reply["content"]

    def tab(self, code):
        return self.kc.complete(code, len(code), reply=True, timeout=300)["content"]

    def stop(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def idle_notebook(name, rust, env=None, analyzer=False):
    k = Kernel(name, env)
    k.run(RUST_CELL if rust else PY_CELL)
    reply = k.tab("t.su")
    assert any(m.startswith("sum") for m in reply["matches"]), reply
    if analyzer:
        end = time.monotonic() + 600
        while k.tab(ANALYZER_PROBE)["metadata"].get("tch_kernel", {}).get("source") != "rust-analyzer":
            assert time.monotonic() < end, "rust-analyzer never answered"
            time.sleep(0.5)
    return k


def settled(kernels):
    """PSS of `kernels` once it stops falling (freed memory returned), in MiB."""
    last = None
    for _ in range(20):
        now = sum(pss_mib(tree(k.pid())) for k in kernels)
        if last is not None and abs(now - last) < 2:
            return now
        last = now
        time.sleep(0.5)
    return last


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="rust-tch")
    ap.add_argument("--reference", default="python3")
    args = ap.parse_args()

    refs = [idle_notebook(args.reference, rust=False)]
    ref_mib = settled(refs)
    refs += [idle_notebook(args.reference, rust=False) for _ in range(3)]
    ref_four_mib = settled(refs)
    for k in refs:
        k.stop()

    one = idle_notebook(args.kernel, rust=True)
    one_mib = settled([one])
    per_process = [(p, round(pss_mib([p]))) for p in tree(one.pid())]
    others = [idle_notebook(args.kernel, rust=True) for _ in range(3)]
    four_mib = settled([one, *others])
    for k in [one, *others]:
        k.stop()

    first = idle_notebook(args.kernel, rust=True, env={"TCH_KERNEL_ANALYZER": "first"}, analyzer=True)
    first_mib = settled([first])
    first.stop()

    print(f"memory of idle notebooks (PSS of each kernel's processes, MiB), {args.kernel} vs {args.reference} + torch")
    print(f"{'figure':58} {'MiB':>7} {'ratio':>7}  target")
    print(f"{args.reference} + torch, after a tensor cell and a Tab{'':8} {ref_mib:7.0f}")
    ok = "ok" if one_mib <= ref_mib else "MISSED"
    print(f"{args.kernel}, after a tensor cell and a Tab{'':16} {one_mib:7.0f} {one_mib / ref_mib:6.2f}x  <= 1x ({ok})")
    print(f"  per process (kernel, evaluation process): {per_process}")
    ok = "ok" if four_mib <= 2 * one_mib else "MISSED"
    print(f"four such notebooks of one user, in all{'':19} {four_mib:7.0f} {four_mib / one_mib:6.2f}x  <= 2x one ({ok})")
    print(f"four {args.reference} + torch notebooks, in all{'':17} {ref_four_mib:7.0f} {ref_four_mib / ref_mib:6.2f}x  (of one)")
    print(f"four {args.kernel} against four {args.reference} + torch{'':14} {four_mib / ref_four_mib:14.2f}x")
    print(f"{args.kernel} with TCH_KERNEL_ANALYZER=first, analyzer warm{'':4} {first_mib:7.0f} {first_mib / ref_mib:6.2f}x  (before)")


if __name__ == "__main__":
    main()
