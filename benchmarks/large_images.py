"""Eval-forward cost of every plugin model on 640 x 512 camera frames: peak RSS and ms/image.

Each model is built with its default (paper) configuration and random weights (``pre_trained=False``; weights do
not change the cost) and predicts ``[1, 3, 512, 640]`` frames through its exportable forward (pre-processing
and post-processing included), in three modes:

- ``resize``: the default pre-processor resizes the frame to the model's default input size;
- ``full``: the pre-processor keeps 512 x 640 (models whose networks take any input size);
- ``tiled``: full resolution with anomalib's ``Tiler`` (Tocoad; ``--tile-size``, stride = tile size).

Models that need training state to predict get it synthetically: Tocoad a random memory bank of
``--bank-rows`` rows, Locc a random template and the centres of that template. Every measurement runs in its own
process so that its peak RSS is its own.

Usage:
    python -m benchmarks.large_images [--models Clgan Tocoad] [--repeats 3] [--bank-rows 16384] [--tile-size 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from importlib.metadata import entry_points

FRAME = (512, 640)  # height, width
MODES = {
    "Clgan": ("resize", "full"),
    "Dmp": ("resize", "full"),
    "Locc": ("resize",),
    "Pgcn": ("resize",),
    "Tocoad": ("resize", "full", "tiled"),
}


def build(name: str, mode: str, bank_rows: int, tile_size: int):  # noqa: ANN201 - AnomalibModule
    """Model ``name`` (default configuration, random weights) ready to predict frames in ``mode``."""
    import torch
    from anomalib.data.utils.tiler import Tiler

    model_class = next(ep for ep in entry_points(group="anomalib.models") if ep.name == name).load()
    image_size = None if mode == "resize" else FRAME
    options = {"pre_trained": False} if name in {"Dmp", "Locc", "Tocoad"} else {}
    model = model_class(pre_processor=model_class.configure_pre_processor(image_size=image_size), visualizer=False, **options)
    size = model.input_size
    if name == "Tocoad":
        width = model.model.embed(torch.rand(1, 3, 64, 64)).shape[1]
        model.model.memory_bank = torch.randn(bank_rows, width)
    if mode == "tiled":
        model.model.tiler = Tiler(tile_size=tile_size, stride=tile_size)
    if name == "Locc":
        template = torch.rand(3, *size)
        model.model.imm.set_template(template)
        alm = model.model.alm
        alm.set_centres(alm.reduce(alm.mixed_features(template[None]))[0])
    return model.eval()


def measure(name: str, mode: str, repeats: int, bank_rows: int, tile_size: int) -> dict:
    """Peak RSS (MiB, whole process) and median ms/image of ``repeats`` forwards after one warm-up."""
    import torch

    model = build(name, mode, bank_rows, tile_size)
    frame = torch.rand(1, 3, *FRAME)
    times = []
    with torch.no_grad():
        output = model(frame)
        for _ in range(repeats):
            start = time.perf_counter()
            model(frame)
            times.append(time.perf_counter() - start)
    return {
        "model": name,
        "mode": mode,
        "input": "x".join(map(str, model.input_size)),
        "map": "x".join(map(str, output.anomaly_map.shape[-2:])),
        "ms_per_image": 1000 * sorted(times)[len(times) // 2],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main() -> None:
    """Measure every (model, mode) in a child process and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bank-rows", type=int, default=16384, help="rows of Tocoad's random memory bank")
    parser.add_argument("--tile-size", type=int, default=256, help="tile size (and stride) of the tiled mode")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.repeats, args.bank_rows, args.tile_size)))  # noqa: T201
        return
    print("| model | mode | model input | map | ms/img | peak RSS MiB | params M |")  # noqa: T201
    print("|---|---|---|---|---:|---:|---:|")  # noqa: T201
    for name in args.models:
        for mode in MODES[name]:
            command = [sys.executable, "-m", "benchmarks.large_images", "--one", name, mode]
            command += ["--repeats", str(args.repeats), "--bank-rows", str(args.bank_rows), "--tile-size", str(args.tile_size)]
            result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
            if result.returncode != 0:
                print(f"| {name} | {mode} | failed: {result.stderr.strip().splitlines()[-1]} | | | | |")  # noqa: T201
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            print(  # noqa: T201
                f"| {name} | {mode} | {row['input']} | {row['map']} | {row['ms_per_image']:.0f} | "
                f"{row['peak_rss_mib']:.0f} | {row['params_m']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
