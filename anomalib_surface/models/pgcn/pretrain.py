"""Pretrain PGCN's pattern generator on a pool of patterns, and check it with the generator gate.

The paper pretrains the generator (random three-patch strips, MSE) on ImageNet and the authors' own data
before any target pattern is seen; the target pattern is then new to it, which is what should make PGCN
robust to a change of pattern. Here any image folder is the pool (the stand-in for ImageNet + own data;
choose one that excludes the patterns you will test on). Strips are cut once and cached in memory as
``uint8``, so thousands of steps cost only the generator's own forward and backward passes.

The *generator gate* is the patch AUROC of ``mean |generated - real|`` alone on held-out images of the pool
with synthetic defects (defective patches against the same patches clean): a generator that predicts
the pattern scores clearly above 0.5; one that predicts a blurred mean does not.

Run::

    python -m anomalib_surface.models.pgcn.pretrain --folder POOL --steps 3000 --output generator.pt \\
        --image-size 64 --patch-size 2 --embed-dim 12 --depths 1 1 1 1 --num-heads 1 2 2 4 --window-size 4

and train with ``Pgcn(generator_weights_path="generator.pt", ...)`` built with the same Swin options.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torchmetrics.functional.classification import binary_auroc

from anomalib_surface.components.synthetic_anomaly import SyntheticAnomalyGenerator, list_images
from anomalib_surface.io.image_io import read_image

from .generator import PatternGenerator
from .pairs import visible_change
from .patches import sample_triplets
from .torch_model import PgcnModel

__all__ = [
    "GENERATOR_OPTIONS",
    "build_generator",
    "cache_strips",
    "generator_gate",
    "load_generator_weights",
    "load_images",
    "pretrain_generator",
]

GENERATOR_OPTIONS = ("grid_size", "patch_size", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio")
"""PgcnModel options that define the generator's architecture (saved with the weights)."""


def build_generator(image_size: tuple[int, int], **options: Any) -> PatternGenerator:  # noqa: ANN401
    """The generator that :class:`PgcnModel` builds for ``image_size`` and the :data:`GENERATOR_OPTIONS` ``options``."""
    return PgcnModel(image_size, **options).generator


def load_generator_weights(generator: PatternGenerator, path: str | Path) -> None:
    """Load weights written by this module's ``main`` into ``generator``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: Naming ``path`` and the saved options if the weights do not fit ``generator``.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"generator_weights_path '{path}' does not exist (write it with python -m {__name__})."
        raise FileNotFoundError(msg)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    try:
        generator.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError) as error:
        msg = (
            f"generator_weights_path '{path}' does not fit this Pgcn's generator (saved options: "
            f"{saved.get('options') if isinstance(saved, dict) else None}); build Pgcn with the same image_size and "
            f"{', '.join(GENERATOR_OPTIONS)}. {type(error).__name__}: {str(error).splitlines()[0]}"
        )
        raise ValueError(msg) from error


def load_images(paths: Sequence[Path], image_size: tuple[int, int]) -> torch.Tensor:
    """``[B, 3, H, W]`` images in ``[0, 1]`` of ``paths``, resized to ``image_size``."""
    return torch.stack([
        F.interpolate(read_image(path)[None], size=image_size, mode="bilinear", antialias=True)[0].clamp(0, 1)
        for path in paths
    ])


def cache_strips(images: torch.Tensor, patch_hw: tuple[int, int], strips_per_image: int) -> torch.Tensor:
    """``[B * strips_per_image, 3, 3, h, w]`` uint8 strips of ``[B, 3, H, W]`` images (random, both directions)."""
    return (sample_triplets(images, patch_hw, strips_per_image) * 255).round().to(torch.uint8)


def pretrain_generator(
    generator: PatternGenerator,
    strips: torch.Tensor,
    steps: int,
    batch_size: int,
    learning_rate: float,
) -> list[float]:
    """Train ``generator`` for ``steps`` Adam steps of MSE on random batches of cached uint8 ``strips``.

    Returns:
        The loss of every step.
    """
    optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate)
    generator.train()
    losses = []
    for _ in range(steps):
        batch = strips[torch.randint(0, strips.shape[0], (batch_size,))].float() / 255
        loss = F.mse_loss(generator(batch[:, 0], batch[:, 1]), batch[:, 2])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def generator_gate(
    generator: PatternGenerator,
    images: torch.Tensor,
    strips_per_image: int,
    min_visible_change: float = 0.05,
    anomaly_source_path: str | Path | None = None,
) -> dict[str, float]:
    """Patch AUROC of ``mean |generated - real|`` on ``[B, 3, H, W]`` images with synthetic defects.

    Every strip's target is scored twice: clean (label 0) and, where the synthetic defect visibly changes
    at least ``min_visible_change`` of it, defective (label 1).

    Returns:
        ``{"auroc": ..., "defective": count, "clean": count}``.
    """
    generator.eval()
    augmented, masks = SyntheticAnomalyGenerator(anomaly_source_path, probability=1.0)(images)
    channels = images.shape[1]
    strips = sample_triplets(torch.cat([images, augmented], dim=1), generator_patch_hw(generator), strips_per_image)
    generated = generator(strips[:, 0, :channels], strips[:, 1, :channels])
    clean, defective = strips[:, 2, :channels], strips[:, 2, channels:]
    visible = visible_change(defective, clean).flatten(1).mean(dim=1) >= min_visible_change
    errors = [(generated - clean).abs().flatten(1).mean(1), (generated - defective)[visible].abs().flatten(1).mean(1)]
    scores = torch.cat(errors)
    labels = torch.cat([torch.zeros(clean.shape[0]), torch.ones(int(visible.sum()))]).long()
    auroc = binary_auroc(scores, labels).item() if visible.any() else float("nan")
    return {"auroc": auroc, "defective": int(visible.sum()), "clean": clean.shape[0]}


def generator_patch_hw(generator: PatternGenerator) -> tuple[int, int]:
    """The patch ``(h, w)`` in pixels that ``generator`` predicts."""
    return tuple(side * generator.patch_size for side in generator.token_grid)


def _parser() -> argparse.ArgumentParser:
    defaults = {name: parameter.default for name, parameter in inspect.signature(PgcnModel).parameters.items()}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="pool of images (any depth) without the test patterns")
    parser.add_argument("--output", required=True, help="weights file to write (for generator_weights_path)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--image-size", type=int, nargs="+", default=[224], help="H [W] of Pgcn's input")
    parser.add_argument("--strips-per-image", type=int, default=64, help="cached strips per pool image")
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction of the pool's images kept for the gate")
    parser.add_argument("--anomaly-source-path", default=None, help="fill of the gate's synthetic defects")
    parser.add_argument("--seed", type=int, default=0)
    for name in GENERATOR_OPTIONS:
        default = defaults[name]
        kind = type(default[0]) if isinstance(default, tuple) else type(default)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default,
                            nargs="+" if isinstance(default, tuple) else None)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Cache strips of the pool, measure the gate, pretrain, measure the gate again, save weights and report."""
    args = _parser().parse_args(argv)
    torch.manual_seed(args.seed)
    size = tuple(args.image_size) * (2 // len(args.image_size))
    options = {name: getattr(args, name) for name in GENERATOR_OPTIONS}
    generator = build_generator(size, **options)
    paths = list_images(args.folder)
    held_out = max(1, round(args.holdout * len(paths)))
    if len(paths) <= held_out:
        msg = f"--folder '{args.folder}' has {len(paths)} images; pretraining needs more than the {held_out} held out."
        raise ValueError(msg)
    order = torch.randperm(len(paths)).tolist()
    train_images = load_images([paths[i] for i in order[held_out:]], size)
    gate_images = load_images([paths[i] for i in order[:held_out]], size)
    strips = cache_strips(train_images, generator_patch_hw(generator), args.strips_per_image)
    gate = {"images": gate_images, "strips_per_image": args.strips_per_image, "anomaly_source_path": args.anomaly_source_path}
    gate_before = generator_gate(generator, **gate)
    losses = pretrain_generator(generator, strips, args.steps, args.batch_size, args.learning_rate)
    gate_after = generator_gate(generator, **gate)
    report = {
        "folder": str(args.folder), "images": len(paths) - held_out, "held_out_images": held_out,
        "cached_strips": strips.shape[0], "steps": args.steps, "image_size": list(size), "options": options,
        "first_loss": losses[0] if losses else None,
        "last_loss": statistics.fmean(losses[-50:]) if losses else None,
        "gate_before": gate_before, "gate_after": gate_after,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": generator.state_dict(), "options": options, "image_size": list(size), "report": report},
               args.output)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
