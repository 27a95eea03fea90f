"""Writes a small CIFAR-10 dataset in the real binary format (`cifar-10-batches-bin`): records of
one label byte and 3072 pixel bytes (R, G and B planes of 32x32). Each class is a colour with a
stripe pattern plus noise, so a network can learn it in an epoch. CI feeds it to
notebooks/03-cifar10-resnet and 04-benchmark-gpus; on a cluster they read the real files.

    python tests/make_cifar_sample.py OUTDIR [--per-file 64]
"""

import argparse
import random
from pathlib import Path

COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (128, 128, 128)]


def record(label, rng):
    base = COLOURS[label]
    planes = []
    for channel in range(3):
        plane = bytearray()
        for y in range(32):
            for x in range(32):
                stripe = 40 if ((x + label * y) // 4) % 2 == 0 else -40
                value = base[channel] + stripe + rng.randint(-30, 30)
                plane.append(max(0, min(255, value)))
        planes.append(bytes(plane))
    return bytes([label]) + b"".join(planes)


def write(out_dir, per_file=64, seed=0):
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        data = b"".join(record(rng.randrange(10), rng) for _ in range(per_file))
        (out_dir / name).write_bytes(data)
    (out_dir / "batches.meta.txt").write_text(
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"
    )
    return out_dir


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--per-file", type=int, default=64)
    args = ap.parse_args()
    print(write(args.out_dir, args.per_file))
