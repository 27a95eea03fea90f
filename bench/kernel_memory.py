"""Memory of idle notebooks: one kernel after a tensor cell and a Tab, and four such kernels of
one user on a node, against ipykernel with torch imported doing the same, measured in the same
run. Memory is PSS summed over each kernel's processes, read from /proc, so that libraries mapped
by several processes (libtorch in four evaluation processes) count once in total, as the node's
memory sees them. A kernel's processes: itself and every process below it, the evaluation
process its usage_reply names, and that process's zygote (which forked it, and forks the other
notebooks' too: counted once in all) with everything below it.

    .venv/bin/python bench/kernel_memory.py [--kernel rust-tch] [--reference python3]

Also measures one and four notebooks with TCH_KERNEL_ZYGOTE=off (each evaluation process loads
libtorch itself: the figures before the zygote), and the kernel with TCH_KERNEL_ANALYZER=first (rust-analyzer warmed at start and asked
first: the behaviour before the saved names answered Tab), after it answered.
"""

import argparse
import os
import signal
import time

import jupyter_client

RUST_CELL = "let t = Tensor::ones([1000, 1000], (Kind::Float, Device::Cpu)); t.sum(Kind::Float)"
PY_CELL = "import torch\nt = torch.ones(1000, 1000)\nt.sum()"
# Only rust-analyzer completes a field of the cell's own struct (see tests/conftest.py).
ANALYZER_PROBE = "struct WarmUpProbe { warm_field: i32 }\nlet probe = WarmUpProbe { warm_field: 1 };\nprobe.warm_f"


def tree(pid):
    out, i = [pid], 0
    while i < len(out):
        try:
            tasks = os.listdir(f"/proc/{out[i]}/task")
        except OSError:  # ended since it was listed
            tasks = []
        for task in tasks:
            try:
                with open(f"/proc/{out[i]}/task/{task}/children") as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                pass
        i += 1
    return out


def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


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


# Zygotes seen: ended before the figures without one, whose libtorch pages they would share.
ZYGOTES = set()


def end_zygotes():
    for pid in ZYGOTES:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        while os.path.exists(f"/proc/{pid}") and parent(pid) != 0:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)
    ZYGOTES.clear()


class Kernel:
    def __init__(self, name, env=None, rust=False):
        self.rust = rust
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

    def usage_pids(self):
        msg = self.kc.session.msg("usage_request", {})
        self.kc.control_channel.send(msg)
        while True:
            reply = self.kc.control_channel.get_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                return [p["pid"] for p in reply["content"].get("processes", [])]

    def processes(self):
        pids = set(tree(self.pid()))
        if not self.rust:
            return pids
        for pid in self.usage_pids():
            pids.update(tree(pid))
            zygote = parent(pid)
            if zygote not in pids and zygote > 1 and exe(zygote) == exe(self.pid()):
                ZYGOTES.add(zygote)
                pids.update(tree(zygote))
        return pids

    def stop(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def idle_notebook(name, rust, env=None, analyzer=False):
    k = Kernel(name, env, rust)
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
        now = pss_mib(set().union(*(k.processes() for k in kernels)))
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
    per_process = [(p, round(pss_mib([p]))) for p in sorted(one.processes())]
    others = [idle_notebook(args.kernel, rust=True) for _ in range(3)]
    four_mib = settled([one, *others])
    for k in [one, *others]:
        k.stop()

    end_zygotes()
    off = {"TCH_KERNEL_ZYGOTE": "off"}
    kernels = [idle_notebook(args.kernel, rust=True, env=off)]
    one_off_mib = settled(kernels)
    kernels += [idle_notebook(args.kernel, rust=True, env=off) for _ in range(3)]
    four_off_mib = settled(kernels)
    for k in kernels:
        k.stop()

    first = idle_notebook(args.kernel, rust=True, env={"TCH_KERNEL_ANALYZER": "first"}, analyzer=True)
    first_mib = settled([first])
    first.stop()

    print(f"memory of idle notebooks (PSS of each kernel's processes, MiB), {args.kernel} vs {args.reference} + torch")
    print(f"{'figure':58} {'MiB':>7} {'ratio':>7}  target")
    print(f"{args.reference} + torch, after a tensor cell and a Tab{'':8} {ref_mib:7.0f}")
    ok = "ok" if one_mib <= ref_mib else "MISSED"
    print(f"{args.kernel}, after a tensor cell and a Tab{'':16} {one_mib:7.0f} {one_mib / ref_mib:6.2f}x  <= 1x ({ok})")
    print(f"  per process (kernel, zygote, evaluation process, by pid): {per_process}")
    ok = "ok" if four_mib <= 2 * one_mib else "MISSED"
    print(f"four such notebooks of one user, in all{'':19} {four_mib:7.0f} {four_mib / one_mib:6.2f}x  <= 2x one ({ok})")
    print(f"four {args.reference} + torch notebooks, in all{'':17} {ref_four_mib:7.0f} {ref_four_mib / ref_mib:6.2f}x  (of one)")
    print(f"four {args.kernel} against four {args.reference} + torch{'':14} {four_mib / ref_four_mib:14.2f}x")
    print(f"{args.kernel}, TCH_KERNEL_ZYGOTE=off: one notebook{'':15} {one_off_mib:7.0f} {one_off_mib / ref_mib:6.2f}x  (before)")
    print(f"{args.kernel}, TCH_KERNEL_ZYGOTE=off: four notebooks{'':14} {four_off_mib:7.0f} {four_off_mib / one_off_mib:6.2f}x  (of one; before)")
    print(f"{args.kernel} with TCH_KERNEL_ANALYZER=first, analyzer warm{'':4} {first_mib:7.0f} {first_mib / ref_mib:6.2f}x  (before)")


if __name__ == "__main__":
    main()
