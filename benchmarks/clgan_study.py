"""CLGAN claim check (issue 22): contrastive + adversarial terms vs single-term ablations and the paper's baselines.

The paper (Table 3) reports CLGAN ahead of UDCAE, DCGAN and VAE-SSIM on pixel precision, recall, accuracy, F1 and
IoU, and (Table 4) F1 rising as the threshold factor ``k`` goes from 2.0 to 3.0. Every arm here is the same code
(:class:`~anomalib_surface.models.Clgan`, the benchmark's CPU preset: ``ngf`` 32, 4 residual blocks, ``ndf`` 32)
with one thing changed, trained for the same number of epochs with the same warm-up / full / decay schedule:

- single-term ablations, each adding one term to the previous row: ``L1``, ``+SSIM``, ``+GAN``, ``+NCE``,
  ``+GAN+NCE`` (= CLGAN), on clean inputs (the paper) and on corrupted inputs (ours: synthetic anomalies in the
  input, clean target);
- the paper's baselines in the same code: ``UDCAE`` (``generator="conv_ae"``, L1) and ``VAE-SSIM``
  (``generator="vae"``, SSIM + KL), clean inputs.

Per arm, category and seed it records, on the test set:

- the model's own segmentation (``DoubleThresholdMorphology`` with statistics and factor calibrated on the
  datamodule's held-out validation set, never a test image): pixel P, R, ACC, F1, IoU;
- the threshold-free pixel AUROC and AP of the raw anomaly map (:func:`benchmarks.protocol.raw_map_metrics`);
- the paper's inference: per-channel residual ``|x - G(x)|`` without smoothing, per-image ``mean + k * std``
  double threshold of each channel (low factor ``k - 1``), channels OR-ed, 3x3 opening and closing; pixel P, R,
  ACC, F1, IoU pooled over the category's test pixels for ``k`` = 2.0, 2.1, ..., 3.0 (Table 4);
- the mean training loss (and L1 term) of the first and last epoch, to show whether training moved.

The summary gives paired differences (same category and seed) with 95 % t intervals: CLGAN minus each other arm on
pixel F1, IoU and AUROC (the claim: > 0), and CLGAN's paper-inference F1 at ``k = 3.0`` minus ``k = 2.0`` (claim: > 0).

Run: ``python -m benchmarks.clgan_study --seeds 0 1 2`` (``--categories``, ``--epochs``, ``--image-size``,
``--arms``); slices run apart (say one ``--output`` per seed) make one study with ``--merge DIR [DIR ...]`` (no fit,
tables over their ``results.json``). Output (``--output``, default ``benchmarks/output/clgan_study``):
``results.md`` (also printed), ``results.json``.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_surface.post_processing import DoubleThresholdMorphology

from . import report
from .protocol import paired_difference, raw_map_metrics
from .runner import Entry, build_model, metric_values, raw_predictions, test_set, use_offline_weights
from .suites import build_datamodule, clgan_entries

PRESET = {key: value for key, value in clgan_entries(pre_trained=False)[0].init_args.items() if key != "corrupt_inputs"}
"""The benchmark's Clgan CPU preset (networks only)."""
TERMS = {
    "L1": {"lambda_ssim": 0.0, "lambda_adv": 0.0, "lambda_nce": 0.0},
    "+SSIM": {"lambda_adv": 0.0, "lambda_nce": 0.0},
    "+GAN": {"lambda_nce": 0.0},
    "+NCE": {"lambda_adv": 0.0},
    "+GAN+NCE": {},
}
"""Loss terms of each ablation (the rest of Clgan's defaults: ``lambda_rec`` 10, SSIM, GAN and NCE weights 1)."""
CLGAN = "CLGAN (+GAN+NCE, clean)"
BASELINES = {
    "UDCAE (conv AE, L1)": {"generator": "conv_ae", "n_downsampling": 4, "lambda_ssim": 0.0, "lambda_adv": 0.0, "lambda_nce": 0.0},
    "VAE-SSIM": {"generator": "vae", "n_downsampling": 4, "lambda_rec": 0.0, "lambda_ssim": 1.0, "lambda_adv": 0.0, "lambda_nce": 0.0},
}
"""The paper's baselines: 4 stride-2 stages (16x smaller latent), no residual blocks or skips."""
FACTORS = tuple(round(2.0 + 0.1 * step, 1) for step in range(11))
"""High factors ``k`` of the paper's Table 4; the low factor is ``k - 1``."""
SEGMENTATION_KEYS = ("Precision", "Recall", "Accuracy", "F1", "IoU")
CLAIM_KEYS = ("pixel_F1", "pixel_IoU", "raw_pixel_AUROC")


def arms() -> dict[str, dict[str, Any]]:
    """Arm name -> Clgan options (the preset plus the arm's changes), in the order they run: CLGAN, its clean-input
    ablations, the baselines, then the corrupted-input ablations (a study cut short still has complete pairs)."""
    result = {CLGAN: {**PRESET, "corrupt_inputs": False}}
    result |= {f"{name}, clean": {**PRESET, **terms, "corrupt_inputs": False} for name, terms in TERMS.items() if terms}
    for name, options in BASELINES.items():
        baseline = {**PRESET, **options, "corrupt_inputs": False}
        baseline.pop("nce_layers")  # no PatchNCE in the baselines
        result[name] = baseline
    result |= {f"{name}, corrupted": {**PRESET, **terms, "corrupt_inputs": True} for name, terms in TERMS.items()}
    return result


class LossHistory(Callback):
    """Mean training loss and L1 term of every epoch (``train_loss`` / ``train_rec_loss`` logged by Clgan)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del pl_module
        metrics = trainer.callback_metrics
        self.epochs.append({key: float(metrics[key]) for key in ("train_loss", "train_rec_loss") if key in metrics})


def segmentation_metrics(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Pixel precision, recall, accuracy, F1 and IoU of bool masks ``[N, H, W]``, pooled over all pixels."""
    true_positive = float((predicted & truth).sum())
    false_positive = float((predicted & ~truth).sum())
    false_negative = float((~predicted & truth).sum())
    total = truth.numel()
    precision = true_positive / max(true_positive + false_positive, 1.0)
    recall = true_positive / max(true_positive + false_negative, 1.0)
    return {
        "Precision": precision,
        "Recall": recall,
        "Accuracy": (total - false_positive - false_negative) / total,
        "F1": 2 * true_positive / max(2 * true_positive + false_positive + false_negative, 1.0),
        "IoU": true_positive / max(true_positive + false_positive + false_negative, 1.0),
    }


def paper_inference(model: LightningModule, images: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """The paper's segmentation at every factor of :data:`FACTORS`: ``paper_k<k>_<metric>`` values.

    Per-channel residual of the pre-processed images (no smoothing), each channel thresholded with its own
    ``mean + k * std`` hysteresis (low ``k - 1``) and the channels OR-ed, then 3x3 opening and closing.
    """
    model.eval()
    residuals = []
    with torch.no_grad():
        for start in range(0, len(images), 8):
            batch = images[start : start + 8].to(model.device)
            residuals.append(model.model.residual(model.pre_processor(batch))[1].cpu())
    residual = torch.cat(residuals)
    masks = torch.nn.functional.interpolate(masks[:, None].float(), size=residual.shape[-2:], mode="nearest")[:, 0].bool()
    values = {}
    for factor in FACTORS:
        predicted = DoubleThresholdMorphology(low_factor=factor - 1.0, high_factor=factor).compute_mask(residual)
        values |= {f"paper_k{factor}_{key}": value for key, value in segmentation_metrics(predicted, masks).items()}
    return values


def run_arm(name: str, options: dict[str, Any], args: argparse.Namespace, category: str, seed: int) -> dict[str, Any]:
    """Fit one arm on ``category`` with ``seed``; its metrics (see the module docstring) or its error."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    row: dict[str, Any] = {"arm": name, "category": category, "seed": seed}
    try:
        seed_everything(seed, workers=True)
        model = build_model(Entry(name, "Clgan", options), args.image_size)
        datamodule = build_datamodule(args, category, seed)
        history = LossHistory()
        engine = Engine(
            accelerator=args.accelerator, devices=1, max_epochs=args.epochs, logger=False, enable_progress_bar=False,
            default_root_dir=Path(args.output) / "runs" / name / category / f"seed{seed}", callbacks=[history],
        )
        engine.fit(model, datamodule=datamodule)
        (results,) = engine.test(model, datamodule=datamodule, verbose=False)
        row |= metric_values(results)
        images, masks, labels = test_set(datamodule)
        raw_maps, raw_scores = raw_predictions(model, images)
        raw = raw_map_metrics(raw_scores.numpy(), labels.numpy(), raw_maps.numpy(), masks.numpy())
        row |= {f"raw_{key}": value for key, value in raw.items()}
        row |= paper_inference(model, images, masks)
        row["loss_first"], row["loss_last"] = history.epochs[0].get("train_loss"), history.epochs[-1].get("train_loss")
        row["rec_first"], row["rec_last"] = history.epochs[0].get("train_rec_loss"), history.epochs[-1].get("train_rec_loss")
        row["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - a failing arm is reported and the others go on
        row |= {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return row


def by_unit(rows: list[dict[str, Any]], arm: str, key: str) -> dict[tuple[str, int], float]:
    """``key`` of ``arm``'s ok rows by (category, seed)."""
    return {
        (row["category"], row["seed"]): row[key]
        for row in rows
        if row["arm"] == arm and row["status"] == "ok" and row.get(key) is not None
    }


def percent(value: float | None) -> str:
    """A metric in % with one decimal; "–" when missing."""
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def claim_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    """Paired differences CLGAN - arm (percentage points, 95 % t intervals) on :data:`CLAIM_KEYS`, and F1(k=3) - F1(k=2)."""
    lines = ["| CLGAN minus | " + " | ".join(CLAIM_KEYS) + " |", "|---|" + "---|" * len(CLAIM_KEYS)]
    for name in names:
        if name == CLGAN:
            continue
        cells = [str(paired_difference(by_unit(rows, CLGAN, key), by_unit(rows, name, key))) for key in CLAIM_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rising = paired_difference(by_unit(rows, CLGAN, "paper_k3.0_F1"), by_unit(rows, CLGAN, "paper_k2.0_F1"))
    lines.append(f"\nCLGAN, paper inference, F1 at k = 3.0 minus k = 2.0 (claim: > 0): {rising} (n = {rising.n}).")
    return "\n".join(lines)


def mean_table(rows: list[dict[str, Any]], names: list[str], keys: tuple[str, ...], headers: tuple[str, ...]) -> str:
    """Means over categories and seeds per arm (in %; losses as they are)."""
    lines = ["| arm | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(keys)]
    for name in names:
        cells = []
        for key in keys:
            values = [row[key] for row in rows if row["arm"] == name and row["status"] == "ok" and row.get(key) is not None]
            mean = float(np.mean(values)) if values else None
            cells.append(percent(mean) if not key.startswith(("loss", "rec")) else ("–" if mean is None else f"{mean:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
             sources: Sequence[report.Source] = ()) -> str:
    """The study's tables (``args``: categories, seeds, image size, epochs, batch; ``sources``: the runs merged)."""
    names = [name for name in arms() if name in {row["arm"] for row in rows}]
    failed = [f"- {row['arm']} / {row['category']} / seed {row['seed']}: {row['error']}" for row in rows if row["status"] != "ok"]
    own = tuple(f"pixel_{key}" for key in SEGMENTATION_KEYS)
    paper = tuple(f"paper_k3.0_{key}" for key in SEGMENTATION_KEYS)
    sweep = tuple(f"paper_k{factor}_F1" for factor in FACTORS)
    sections = [
        *report.study_header("Clgan claim check: ablations and baselines", command, env, sources),
        f"Categories {', '.join(args.categories)}, seeds {', '.join(map(str, args.seeds))}, {args.image_size} px, "
        f"{args.epochs} epochs per arm (warm-up / full / decay by Clgan's default ratios), batch {args.batch_size}. "
        "Metrics in %.",
        "### Paired differences (percentage points; same category and seed; 95 % t interval)",
        claim_table(rows, names),
        "### Own segmentation (validated DoubleThresholdMorphology) and ranking metrics",
        mean_table(rows, names, (*own, "raw_pixel_AUROC", "raw_pixel_AP"),
                   ("px P", "px R", "px ACC", "px F1", "px IoU", "px AUROC", "px AP")),
        "### Paper's inference (per-channel residual, per-image mean + 3.0 std, morphology): Table 3 metrics",
        mean_table(rows, names, paper, ("P", "R", "ACC", "F1", "IoU")),
        "### Paper's inference: F1 vs factor k (Table 4)",
        mean_table(rows, names, sweep, tuple(f"k {factor}" for factor in FACTORS)),
        "### Training loss, first and last epoch (mean over runs)",
        mean_table(rows, names, ("loss_first", "loss_last", "rec_first", "rec_last"),
                   ("loss first", "loss last", "L1 first", "L1 last")),
    ]
    if failed:
        sections += ["Failed:", "\n".join(failed)]
    return "\n\n".join(sections) + "\n"


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
                  sources: Sequence[report.Source] = ()) -> str:
    """Write ``results.json`` and ``results.md`` into ``args.output``; return the text."""
    text = markdown(rows, args, command, env, sources)
    return report.write_study(Path(args.output), command, env, "rows", rows, text, sources)


def run_study(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit every arm on every category and seed; write ``results.json`` and ``results.md`` after every fit."""
    env = report.environment(args.seeds, args.accelerator)
    selected = {name: options for name, options in arms().items() if not args.arms or name in args.arms}
    rows: list[dict[str, Any]] = []
    text = ""
    for (name, options), seed, category in itertools.product(selected.items(), args.seeds, args.categories):
        rows.append(run_arm(name, options, args, category, seed))
        text = write_results(rows, args, args.command, env)
        print(f"{name} / {category} / seed {seed}: {rows[-1]['status']}", flush=True)
    print(text)
    return rows


def merge(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The study's outputs in ``args.output`` over the rows of the runs in ``args.merge`` (no fit)."""
    merged = report.merge_runs(args.merge, "rows", lambda row: (row["arm"], row["category"], row["seed"]))
    options = merged.options(parse_args, ("image_size", "epochs", "batch_size"), categories=merged.unique("category"),
                             seeds=merged.unique("seed"), output=args.output)
    print(write_results(merged.rows, options, args.command, merged.environment(options.seeds), merged.sources))
    return merged.rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (SurfaceDemo categories, as the evaluation protocol's default data)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="*", default=None, help=f"only these arms (default: all of {list(arms())})")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--output", default="benchmarks/output/clgan_study")
    report.add_merge_option(parser)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.arms or ()) - set(arms()))
    if unknown:
        parser.error(f"--arms: unknown {unknown}; choose from {list(arms())}.")
    args.data, args.root = "SurfaceDemo", None
    args.command = report.command_line("benchmarks.clgan_study", argv)
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the options and run the study (no download: HF offline), or merge runs."""
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    use_offline_weights(pretrained=False)
    return run_study(args)


if __name__ == "__main__":
    main()
