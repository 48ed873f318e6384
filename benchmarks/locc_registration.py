"""Is Locc's image matching module at the minimum of its own loss? A check on the RTO runs of ``locc_study``.

The study measures the IMM's rotation error against the transforms MadRto records. A large error has two possible
causes: the network did not reach the minimum of the registration loss ``MSE(I_M, I_T)`` (a training problem), or
that minimum is not the true pose (a property of the loss on the part, e.g. a rotation-symmetric one). For every
``Locc +IMM ...`` checkpoint kept under a study's ``--output``, this reports, on the RTO test images: the registration
loss before and after the IMM, and the extra rotation about the IMM's prediction (a search over ±``--max-angle``°
in 1° steps, shift kept) that minimises the loss, with the loss there. An IMM at its loss's minimum has extra
rotations near 0 and nearly the same loss; a rotation error that remains is then the loss's, not the training's.

Run: ``python -m benchmarks.locc_registration [--output benchmarks/output/locc_study] [--entry "Locc +IMM +DGM"]``
(after ``python -m benchmarks.locc_study``, whose checkpoints it reads; prints a Markdown table).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from anomalib_surface.models.locc.spatial_transformer import rigid_matrix, warp

from .locc_study import RTO, anomaly_source_folder, data_args, locc_entries
from .runner import build_model, use_offline_weights
from .suites import build_datamodule


def registration_losses(imm: torch.nn.Module, images: torch.Tensor, max_angle: float = 40.0) -> dict[str, np.ndarray]:
    """Per image: loss before and after ``imm``, the loss-minimising extra rotation (degrees) and the loss there."""
    template = imm.template
    angles = torch.deg2rad(torch.arange(-max_angle, max_angle + 0.5, 1.0))
    with torch.no_grad():
        aligned, params = imm(images)
        best_angle, best_loss = [], []
        for image, param in zip(images, params, strict=True):
            candidates = param.expand(len(angles), 3).clone()
            candidates[:, 2] += angles.to(candidates)
            warped = warp(image.expand(len(angles), *image.shape), rigid_matrix(candidates, *image.shape[-2:]),
                          padding_mode=imm.padding_mode)
            losses = ((warped - template) ** 2).mean(dim=(1, 2, 3))
            best_angle.append(float(torch.rad2deg(angles[losses.argmin()])))
            best_loss.append(float(losses.min()))
    return {
        "before": ((images - template) ** 2).mean(dim=(1, 2, 3)).numpy(),
        "after": ((aligned - template) ** 2).mean(dim=(1, 2, 3)).numpy(),
        "extra_rotation": np.asarray(best_angle),
        "at_minimum": np.asarray(best_loss),
    }


def checkpoints(output: Path, entry: str) -> list[tuple[int, str, Path]]:
    """``(seed, category, checkpoint)`` of ``entry``'s RTO runs kept under a study's ``output``."""
    found = []
    for path in sorted((output).glob(f"seed*/runs/{entry}/{RTO}/*/**/model.ckpt")):
        seed = int(path.relative_to(output).parts[0].removeprefix("seed"))
        category = path.relative_to(output / f"seed{seed}" / "runs" / entry / RTO).parts[0]
        found.append((seed, category, path))
    return found


def main(argv: list[str] | None = None) -> list[str]:
    """Parse the options, load every checkpoint of the entry and print one table row per run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="benchmarks/output/locc_study", help="a locc_study --output")
    parser.add_argument("--entry", default="Locc +IMM +DGM", help="a study entry with the IMM")
    parser.add_argument("--max-angle", type=float, default=40.0, help="extra rotations searched, ± degrees")
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    use_offline_weights(pretrained=True)
    (entry,) = [entry for entry in locc_entries(1, 1, anomaly_source_folder())[RTO] if entry.name == args.entry]
    found = checkpoints(Path(args.output), args.entry)
    if not found:
        parser.error(f"no checkpoint of '{args.entry}' under {args.output}/seed*/runs/ (run benchmarks.locc_study first)")
    lines = ["| category | seed | loss before IMM | after IMM | at the loss's minimum | mean abs extra rotation ° | share > 5° |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for seed, category, path in found:
        model = build_model(entry, args.image_size)
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        model.model.imm.template = state["model.imm.template"]
        model.load_state_dict(state)
        model.eval()
        datamodule = build_datamodule(data_args(argparse.Namespace(**vars(args), batch_size=32, seeds=[seed]), RTO),
                                      category, seed)
        datamodule.setup()
        test_data = datamodule.test_data
        images = torch.stack([model.pre_processor.transform(test_data[index].image) for index in range(len(test_data))])
        losses = registration_losses(model.model.imm, images, args.max_angle)
        extra = np.abs(losses["extra_rotation"])
        lines.append(f"| {category} | {seed} | {losses['before'].mean():.4f} | {losses['after'].mean():.4f} | "
                     f"{losses['at_minimum'].mean():.4f} | {extra.mean():.1f} | {np.mean(extra > 5):.2f} |")  # noqa: PLR2004
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
