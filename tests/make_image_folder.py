"""Image folders made of real photos, for the data-loading tests, notebook 08 and
bench/data_loading.py: the photos scikit-image's wheel ships (astronaut, coffee, chelsea, rocket,
...), fetched once with pip (the wheel only, 14 MB, nothing installed) into target/test-data/,
then cropped and re-encoded at several sizes and qualities, some grayscale, CMYK, 16-bit or
palette, and (on request) one truncated file.

    python tests/make_image_folder.py DIR [--benchmark N]
"""

import argparse
import io
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "target" / "test-data"
SKIMAGE = "scikit-image==0.26.0"


def photos():
    """scikit-image's sample photos (RGB, at least 256 pixels a side), as PIL images."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("scikit_image-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--only-binary", ":all:", SKIMAGE, "-d", str(CACHE)],
            check=True,
        )
        wheels = sorted(CACHE.glob("scikit_image-*.whl"))
    images = []
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name in sorted(wheel.namelist()):
            if name.startswith("skimage/data/") and name.endswith((".png", ".jpg")):
                image = Image.open(io.BytesIO(wheel.read(name)))
                image.load()
                if min(image.size) >= 256 and image.mode in ("RGB", "RGBA", "L"):
                    images.append(image.convert("RGB"))
    assert len(images) >= 8, f"only {len(images)} photos in {wheels[-1]}"
    return images


def _crop(rng, photo, width, height):
    """A random part of `photo` (40% to 100% of each side) resized to width x height."""
    w, h = photo.size
    cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return photo.crop((left, top, left + cw, top + ch)).resize((width, height), Image.BILINEAR)


def write_folder(root, classes=4, per_class=12, truncated=True, seed=0):
    """A class-per-folder tree; returns {"files": [...], "special": {kind: path}}. Every class
    draws from its own photos, so a model can tell them apart."""
    rng = random.Random(seed)
    root = Path(root)
    all_photos = photos()
    special = {}
    files = []
    kinds = ["gray", "cmyk", "png16", "palette", "png_rgba", "progressive"]
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        mine = all_photos[c::classes]
        for i in range(per_class):
            size = (rng.choice([96, 160, 240, 333]), rng.choice([80, 128, 200, 301]))
            image = _crop(rng, mine[i % len(mine)], *size)
            kind = kinds.pop(0) if kinds and i in (1, 2) else "jpeg"
            path = folder / f"{i:03d}.jpg"
            if kind == "gray":
                image.convert("L").save(path, quality=85)
            elif kind == "cmyk":
                image.convert("CMYK").save(path, quality=90)
            elif kind == "progressive":
                image.save(path, quality=80, progressive=True)
            elif kind == "png16":
                path = path.with_suffix(".png")
                # The full 16-bit range (v * 257), as a scanner or a microscope writes it.
                gray = np.asarray(image.convert("L")).astype(np.uint16) * 257
                Image.fromarray(gray.astype("<u2")).save(path)
            elif kind == "palette":
                path = path.with_suffix(".png")
                image.convert("P", palette=Image.ADAPTIVE).save(path)
            elif kind == "png_rgba":
                path = path.with_suffix(".PNG")
                image.convert("RGBA").save(path)
            else:
                image.save(path, quality=rng.choice([50, 75, 90, 95]))
            if kind != "jpeg":
                special[kind] = path
            files.append(path)
    if truncated:
        path = root / "class_0" / "truncated.jpg"
        good = io.BytesIO()
        _crop(rng, all_photos[0], 200, 150).save(good, "JPEG", quality=90)
        path.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
        special["truncated"] = path
        files.append(path)
    return {"files": files, "special": special}


def write_benchmark_folder(root, count=2000, classes=10, seed=0):
    """`count` JPEGs of ImageNet's typical size (500x375, quality 90) in `classes` folders."""
    rng = random.Random(seed)
    all_photos = photos()
    root = Path(root)
    for i in range(count):
        folder = root / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (500, 375) if rng.random() < 0.7 else (375, 500)
        _crop(rng, all_photos[i % len(all_photos)], *size).save(folder / f"{i:06d}.JPEG", quality=90)
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--benchmark", type=int, metavar="N", help="N ImageNet-sized JPEGs instead")
    args = parser.parse_args()
    if args.benchmark:
        write_benchmark_folder(args.dir, args.benchmark)
    else:
        write_folder(args.dir)
    print(args.dir)
