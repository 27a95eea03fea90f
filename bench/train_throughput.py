"""Training throughput: the same small CNN trained with the kernel's prelude (tch, in a cell of
the installed kernel) and with PyTorch in Python, in one run, on the same synthetic data, batch
size and thread count. Prints images/s for each and the ratio tch / Python.

    .venv/bin/python bench/train_throughput.py [--kernel rust-tch] [--steps 30] [--batch 64]

The network (MNIST-sized input, 1x28x28): conv(1->32, 3x3) relu, conv(32->64, 3x3) relu,
max-pool 2, linear(9216->128) relu, linear(128->10); SGD with momentum, cross-entropy.
"""

import argparse
import time

RUST_CELL = """
manual_seed(0);
let vs = nn::VarStore::new(Device::Cpu);
let net = {{
    let root = vs.root();
    nn::seq()
        .add(nn::conv2d(&root / "c1", 1, 32, 3, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::conv2d(&root / "c2", 32, 64, 3, Default::default()))
        .add_fn(|x| x.relu().max_pool2d_default(2).flatten(1, -1))
        .add(nn::linear(&root / "f1", 9216, 128, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "f2", 128, 10, Default::default()))
}};
let mut opt = nn::Sgd {{ momentum: 0.9, ..Default::default() }}.build(&vs, 0.01).unwrap();
let x = Tensor::randn([{batch}, 1, 28, 28], (Kind::Float, Device::Cpu));
let y = Tensor::randint(10, [{batch}], (Kind::Int64, Device::Cpu));
tch::set_num_threads({threads});
for _ in 0..{warmup} {{ opt.backward_step(&net.forward(&x).cross_entropy_for_logits(&y)); }}
let started = std::time::Instant::now();
for _ in 0..{steps} {{ opt.backward_step(&net.forward(&x).cross_entropy_for_logits(&y)); }}
({steps} * {batch}) as f64 / started.elapsed().as_secs_f64()
"""


def rust_images_per_second(kernel, batch, steps, warmup, threads, settle):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel, startup_timeout=120)
    try:
        # The kernel loads rust-analyzer (completion) on a background, low-priority thread for a
        # few seconds after start; --settle 0 measures right away.
        kc.execute_interactive("1", timeout=600, output_hook=lambda m: None)
        time.sleep(settle)
        results = []
        reply = kc.execute_interactive(
            RUST_CELL.format(batch=batch, steps=steps, warmup=warmup, threads=threads),
            timeout=600,
            output_hook=lambda m: results.append(m["content"]["data"]["text/plain"]) if m["msg_type"] == "execute_result" else None,
        )
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the Rust cell failed: {reply['content']}")
        return float(results[-1])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def python_images_per_second(batch, steps, warmup, threads):
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(9216, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(10, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="rust-tch")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both (0: torch's default here)")
    ap.add_argument("--settle", type=float, default=0.0, help="seconds to let the kernel's start-up work finish before timing")
    ap.add_argument("--repeats", type=int, default=3, help="alternate the two this many times; report medians")
    args = ap.parse_args()
    import statistics

    import torch

    threads = args.threads or torch.get_num_threads()
    rust, python = [], []
    for _ in range(args.repeats):
        rust.append(rust_images_per_second(args.kernel, args.batch, args.steps, args.warmup, threads, args.settle))
        python.append(python_images_per_second(args.batch, args.steps, args.warmup, threads))
    r, p = statistics.median(rust), statistics.median(python)
    print(f"small CNN, batch {args.batch}, {args.steps} steps, {threads} threads, median of {args.repeats}")
    print(f"{'tch (kernel prelude)':24} {r:10.1f} images/s   runs: {', '.join(f'{v:.1f}' for v in rust)}")
    print(f"{'PyTorch (Python)':24} {p:10.1f} images/s   runs: {', '.join(f'{v:.1f}' for v in python)}")
    print(f"{'ratio tch / Python':24} {r / p:10.2f}")


if __name__ == "__main__":
    main()
