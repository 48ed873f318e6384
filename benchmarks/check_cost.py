"""Cost of the up-front file checks: every image (and mask) of a folder decoded in full.

``python -m benchmarks.check_cost --images 1000 --size 256 --format png`` writes a folder of random images
(half of them with a binary mask) and times :func:`anomalib_surface.data.checked_dataset.check_image_files`
on it, with the default thread count and with one thread.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from anomalib_surface.data import checked_dataset
from anomalib_surface.data.checked_dataset import check_image_files


def _folder(root: Path, count: int, size: int, suffix: str) -> list[tuple[Path, Path | None]]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    pairs = []
    for index in range(count):
        image = root / f"{index:04d}.{suffix}"
        Image.fromarray(np.roll(base, index, axis=1)).save(image)
        mask = None
        if index % 2:
            mask = root / f"{index:04d}_mask.png"
            array = np.zeros((size, size), dtype=np.uint8)
            array[index % size : index % size + 8, :8] = 255
            Image.fromarray(array).save(mask)
        pairs.append((image, mask))
    return pairs


def main() -> None:
    """Print seconds for the default thread count and for one thread."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--format", default="png", choices=["png", "jpg"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        pairs = _folder(Path(root), args.images, args.size, args.format)
        for threads in (checked_dataset.CHECK_THREADS, 1):
            checked_dataset.CHECK_THREADS = threads
            start = time.perf_counter()
            check_image_files(pairs)
            print(f"{args.images} {args.format} images of {args.size} px (+{args.images // 2} masks), {threads} threads: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
