"""Inference time of Dmp before and after structural re-parameterisation of its large kernels.

Prints ms/image (median over interleaved runs) of the whole network and of the defect prediction network
alone (the only part that re-parameterisation changes) in three forms: the two-branch large-kernel blocks
(training structure, eval mode), the fused kernels run by direct convolution, and the fused kernels run through
the FFT (what Dmp uses at inference for kernels of at least ``fft_min_kernel_size``), and the largest difference
of each fused form's anomaly map from the two-branch one.

Usage::

    python benchmarks/dmp_reparam_speed.py                       # paper widths, 256 px, CPU
    python benchmarks/dmp_reparam_speed.py --device cuda --batch-size 8
    python benchmarks/dmp_reparam_speed.py --reconstruction-width 16 --prediction-width 16 --depth 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from anomalib_surface.models.dmp import DmpModel
from anomalib_surface.models.dmp.torch_model import ReparamLargeKernelConv


FORMS = ("two-branch", "fused, direct conv", "fused, FFT")


def set_form(model: DmpModel, form: str) -> None:
    """Put ``model`` in eval mode in one of :data:`FORMS`."""
    if form == "two-branch":
        model.train()  # leaving training mode un-fuses the kernels; no forward pass, so nothing is learnt
        model.eval()
        return
    model.reparameterize()
    for module in model.modules():
        if isinstance(module, ReparamLargeKernelConv):
            module.use_fft = form == "fused, FFT"


def ms_per_image(function: Callable[[], object], batch_size: int, device: torch.device) -> float:
    """Wall time of one call of ``function`` per image, in ms."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - start) / batch_size


def main() -> None:
    """Parse the options, time both forms of the network and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reconstruction-width", type=int, default=128)
    parser.add_argument("--prediction-width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--kernel-size", type=int, default=31)
    parser.add_argument("--small-kernel-size", type=int, default=5)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = DmpModel(
        reconstruction_width=args.reconstruction_width,
        prediction_width=args.prediction_width,
        depth=args.depth,
        kernel_size=args.kernel_size,
        small_kernel_size=args.small_kernel_size,
    ).to(device)
    model.eval()
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    forms = FORMS
    timings: dict[str, dict[str, list[float]]] = {form: {"whole": [], "prediction": []} for form in forms}
    maps = {}
    with torch.inference_mode():
        prediction_input = torch.cat([images, model.reconstruction(images)], dim=1)
        # Interleave the two forms, so that a busy machine slows both alike; two warm-up rounds are dropped.
        for round_index in range(args.repeats + 2):
            for form in forms:
                set_form(model, form)
                whole = ms_per_image(lambda: model(images), args.batch_size, device)
                prediction = ms_per_image(lambda: model.prediction(prediction_input), args.batch_size, device)
                if round_index >= 2:
                    timings[form]["whole"].append(whole)
                    timings[form]["prediction"].append(prediction)
        for form in forms:
            set_form(model, form)
            maps[form] = model(images).anomaly_map

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    kernels = f"{args.kernel_size}/{args.small_kernel_size}"
    print(f"Dmp at {args.image_size} px, batch {args.batch_size}, kernels {kernels}, {name}")
    print(f"{'form':<20}{'whole model ms/img':>20}{'prediction net ms/img':>24}{'max |map diff|':>16}")
    for form in forms:
        whole, prediction = (statistics.median(timings[form][part]) for part in ("whole", "prediction"))
        difference = (maps["two-branch"] - maps[form]).abs().max().item()
        print(f"{form:<20}{whole:>20.2f}{prediction:>24.2f}{difference:>16.1e}")
    print(f"(medians of {args.repeats} interleaved runs)")


if __name__ == "__main__":
    main()
