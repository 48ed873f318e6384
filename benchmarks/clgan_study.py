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
- the mean training loss (and L1 term) of the first and last epoch, to show whether training moved, and after
  every epoch the loss, the L1 term and the pixel AP of the raw maps on the validation set (``history``; SurfaceDemo's
  generated images, no test image): training has converged when they are flat over the last quarter of the epochs.

The summary gives paired differences (same category and seed) with 95 % t intervals: CLGAN minus each other arm on
pixel F1, IoU and AUROC and on the paper-inference F1 and IoU at ``k = 3.0`` (the claim: > 0), and CLGAN's
paper-inference F1 at ``k = 3.0`` minus ``k = 2.0`` (claim: > 0).

**Weights of the two terms.** The paper does not give them. ``--select-weights`` fits CLGAN for every pair
(``lambda_adv``, ``lambda_nce``) of ``--weight-grid`` (default 0.1, 1, 10) and chooses the pair with the highest mean
pixel AP of the raw maps on SurfaceDemo's generated validation set (normal and defective images of another seed; no
test image); the study then runs with ``--lambda-adv`` / ``--lambda-nce`` (default: Clgan's own, 1 and 0.1), which set
the term in every arm that has it (``+GAN``, ``+NCE``, CLGAN; clean and corrupted).

Run: ``python -m benchmarks.clgan_study --select-weights --seeds 0``, then ``python -m benchmarks.clgan_study
--seeds 0 1 2 --lambda-adv A --lambda-nce B`` (``--categories``, ``--epochs``, ``--image-size``, ``--arms``); slices
run apart (say one ``--output`` per seed) make one study with ``--merge DIR [DIR ...]`` (no fit, tables over their
``results.json``). Output (``--output``, default ``benchmarks/output/clgan_study``):
``results.md`` (also printed), ``results.json``.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule

from anomalib_surface.models import Clgan
from anomalib_surface.post_processing import DoubleThresholdMorphology

from . import report
from .convergence import HELD_OUT_AP, HeldOutHistory, curve_table, histories, last_quarter_change
from .protocol import paired_difference, raw_map_metrics
from .runner import Entry, build_model, labelled_set, metric_values, raw_predictions, test_set, use_offline_weights
from .suites import build_datamodule, clgan_entries

PRESET = {key: value for key, value in clgan_entries(pre_trained=False)[0].init_args.items() if key != "corrupt_inputs"}
"""The benchmark's Clgan CPU preset (networks only)."""
WEIGHTS = ("lambda_adv", "lambda_nce")
"""The weights of the two terms the paper adds; chosen on held-out data (``--select-weights``), the rest fixed."""
DEFAULT_WEIGHTS = {name: inspect.signature(Clgan).parameters[name].default for name in WEIGHTS}
"""Clgan's default GAN and NCE weights: the study's weights unless ``--lambda-adv`` / ``--lambda-nce`` say otherwise."""
TERMS = ("L1", "+SSIM", "+GAN", "+NCE", "+GAN+NCE")
"""The single-term ablations, each adding one term to the previous row (``+GAN`` and ``+NCE`` add to ``+SSIM``)."""


def terms(lambda_adv: float, lambda_nce: float) -> dict[str, dict[str, float]]:
    """Loss weights of each ablation in :data:`TERMS` with the GAN and NCE terms at ``lambda_adv`` / ``lambda_nce``
    (the rest of Clgan's defaults: ``lambda_rec`` 10, SSIM weight 1)."""
    return {
        "L1": {"lambda_ssim": 0.0, "lambda_adv": 0.0, "lambda_nce": 0.0},
        "+SSIM": {"lambda_adv": 0.0, "lambda_nce": 0.0},
        "+GAN": {"lambda_adv": lambda_adv, "lambda_nce": 0.0},
        "+NCE": {"lambda_adv": 0.0, "lambda_nce": lambda_nce},
        "+GAN+NCE": {"lambda_adv": lambda_adv, "lambda_nce": lambda_nce},
    }


CLGAN = "CLGAN (+GAN+NCE, clean)"
BASELINES = {
    "UDCAE (conv AE, L1)": {"generator": "conv_ae", "n_downsampling": 4, "lambda_ssim": 0.0, "lambda_adv": 0.0, "lambda_nce": 0.0},
    "VAE-SSIM": {"generator": "vae", "n_downsampling": 4, "lambda_rec": 0.0, "lambda_ssim": 1.0, "lambda_adv": 0.0, "lambda_nce": 0.0},
}
"""The paper's baselines: 4 stride-2 stages (16x smaller latent), no residual blocks or skips."""
FACTORS = tuple(round(2.0 + 0.1 * step, 1) for step in range(11))
"""High factors ``k`` of the paper's Table 4; the low factor is ``k - 1``."""
SEGMENTATION_KEYS = ("Precision", "Recall", "Accuracy", "F1", "IoU")
CLAIM_KEYS = ("pixel_F1", "pixel_IoU", "raw_pixel_AUROC", "paper_k3.0_F1", "paper_k3.0_IoU")
"""Own segmentation F1 / IoU, raw-map AUROC, and F1 / IoU of the paper's inference at ``k = 3`` (its Table 3)."""
SELECTION_KEY = "pixel_AP"
"""The validation metric by which ``--select-weights`` chooses the GAN and NCE weights (threshold-free)."""


def arms(
    lambda_adv: float = DEFAULT_WEIGHTS["lambda_adv"], lambda_nce: float = DEFAULT_WEIGHTS["lambda_nce"],
) -> dict[str, dict[str, Any]]:
    """Arm name -> Clgan options (the preset plus the arm's changes), in the order they run: CLGAN, its clean-input
    ablations, the baselines, then the corrupted-input ablations (a study cut short still has complete pairs).
    ``lambda_adv`` / ``lambda_nce``: the weights of the GAN and NCE terms wherever an arm has them."""
    ablations = terms(lambda_adv, lambda_nce)
    result = {CLGAN: {**PRESET, **ablations["+GAN+NCE"], "corrupt_inputs": False}}
    result |= {f"{name}, clean": {**PRESET, **weights, "corrupt_inputs": False} for name, weights in ablations.items()
               if name != "+GAN+NCE"}
    for name, options in BASELINES.items():
        baseline = {**PRESET, **options, "corrupt_inputs": False}
        baseline.pop("nce_layers")  # no PatchNCE in the baselines
        result[name] = baseline
    result |= {f"{name}, corrupted": {**PRESET, **weights, "corrupt_inputs": True} for name, weights in ablations.items()}
    return result


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


def fit_arm(
    name: str, options: dict[str, Any], args: argparse.Namespace, category: str, seed: int,
) -> tuple[Any, LightningModule, Any, HeldOutHistory]:
    """Fit Clgan with ``options`` on ``category`` with ``seed``: the engine, the model, its datamodule and its
    per-epoch history (loss, L1 term, pixel AP on the validation set)."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(seed, workers=True)
    model = build_model(Entry(name, "Clgan", options), args.image_size)
    datamodule = build_datamodule(args, category, seed)
    history = HeldOutHistory(terms=("rec_loss",))
    engine = Engine(
        accelerator=args.accelerator, devices=1, max_epochs=args.epochs, logger=False, enable_progress_bar=False,
        default_root_dir=Path(args.output) / "runs" / name / category / f"seed{seed}", callbacks=[history],
    )
    engine.fit(model, datamodule=datamodule)
    return engine, model, datamodule, history


def loss_values(history: HeldOutHistory) -> dict[str, Any]:
    """The mean training loss and L1 term of the first and last epoch (did training move?), the last held-out pixel
    AP and its change over the last quarter of the epochs (has training converged?), and the whole history."""
    first, last = history.history[0], history.history[-1]
    return {"loss_first": first["train_loss"], "loss_last": last["train_loss"],
            "rec_first": first["train_rec_loss"], "rec_last": last["train_rec_loss"],
            "held_out_AP_last": last[HELD_OUT_AP], "held_out_AP_change": last_quarter_change(history.history, HELD_OUT_AP),
            "rec_change": last_quarter_change(history.history, "train_rec_loss"), "history": history.history}


def raw_metrics(model: LightningModule, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Threshold-free metrics of ``model``'s raw maps and scores on ``images`` (:func:`benchmarks.protocol.raw_map_metrics`)."""
    raw_maps, raw_scores = raw_predictions(model, images)
    return raw_map_metrics(raw_scores.numpy(), labels.numpy(), raw_maps.numpy(), masks.numpy())


def run_arm(name: str, options: dict[str, Any], args: argparse.Namespace, category: str, seed: int) -> dict[str, Any]:
    """Fit one arm on ``category`` with ``seed``; its metrics (see the module docstring) or its error."""
    weights = {key: options[key] for key in WEIGHTS if key in options}
    row: dict[str, Any] = {"arm": name, "category": category, "seed": seed, **weights}
    try:
        engine, model, datamodule, history = fit_arm(name, options, args, category, seed)
        (results,) = engine.test(model, datamodule=datamodule, verbose=False)
        row |= metric_values(results)
        images, masks, labels = test_set(datamodule)
        row |= {f"raw_{key}": value for key, value in raw_metrics(model, images, masks, labels).items()}
        row |= paper_inference(model, images, masks)
        row |= loss_values(history)
        row["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - a failing arm is reported and the others go on
        row |= {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return row


def run_candidate(weights: dict[str, float], args: argparse.Namespace, category: str, seed: int) -> dict[str, Any]:
    """Fit CLGAN (clean inputs) with the GAN / NCE ``weights``; its raw-map metrics on the **validation** set
    (``validation_<metric>``; SurfaceDemo's generated validation images, never a test image) or its error."""
    row: dict[str, Any] = {**weights, "category": category, "seed": seed}
    try:
        options = arms(**weights)[CLGAN]
        _, model, datamodule, history = fit_arm(f"{CLGAN} {weights}", options, args, category, seed)
        images, masks, labels = labelled_set(datamodule.val_dataloader())
        row |= {f"validation_{key}": value for key, value in raw_metrics(model, images, masks, labels).items()}
        row |= loss_values(history)
        row["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - a failing candidate is reported and the others go on
        row |= {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return row


def chosen_weights(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """The candidate with the highest mean validation pixel AP over its (category, seed) runs; None if none ran."""
    scores: dict[tuple[float, ...], list[float]] = {}
    for row in rows:
        if row["status"] == "ok":
            scores.setdefault(tuple(row[name] for name in WEIGHTS), []).append(row[f"validation_{SELECTION_KEY}"])
    if not scores:
        return None
    best = max(scores, key=lambda weights: float(np.mean(scores[weights])))
    return dict(zip(WEIGHTS, best, strict=True))


def selection_markdown(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any]) -> str:
    """The weight selection's table (mean validation metrics per candidate), its choice and the study's command."""
    candidates = list(dict.fromkeys(tuple(row[name] for name in WEIGHTS) for row in rows))
    keys = (SELECTION_KEY, "pixel_AUROC", "image_AUROC")
    lines = ["| lambda_adv | lambda_nce | runs | " + " | ".join(f"validation {key}" for key in keys) + " | L1 last |",
             "|---:|---:|---:|" + "---:|" * (len(keys) + 1)]
    for candidate in candidates:
        ok = [row for row in rows if tuple(row[name] for name in WEIGHTS) == candidate and row["status"] == "ok"]
        cells = [percent(float(np.mean([row[f"validation_{key}"] for row in ok])) if ok else None) for key in keys]
        l1 = f"{np.mean([row['rec_last'] for row in ok]):.3f}" if ok else "–"
        lines.append(f"| {candidate[0]:g} | {candidate[1]:g} | {len(ok)} | " + " | ".join(cells) + f" | {l1} |")
    best = chosen_weights(rows)
    flags = "" if best is None else f"--lambda-adv {best['lambda_adv']:g} --lambda-nce {best['lambda_nce']:g}"
    choice = ("no candidate ran." if best is None else
              f"Chosen (highest mean validation {SELECTION_KEY}): `{flags}`; the study with them: "
              f"`python -m benchmarks.clgan_study {flags}` (plus the same --categories, --epochs, --image-size, "
              "--batch-size).")
    failed = [f"- {row['lambda_adv']:g} / {row['lambda_nce']:g} / {row['category']} / seed {row['seed']}: {row['error']}"
              for row in rows if row["status"] != "ok"]
    sections = [
        *report.study_header("Clgan: GAN and NCE weights chosen on held-out data", command, env),
        f"CLGAN (clean inputs, every other option as in the study) for each (lambda_adv, lambda_nce) in "
        f"{list(args.weight_grid)}², on {', '.join(args.categories)}, seeds {', '.join(map(str, args.seeds))}, "
        f"{args.image_size} px, {args.epochs} epochs, batch {args.batch_size}. Scored on SurfaceDemo's generated "
        "validation images (normal and defective; no test image), raw maps, in %.",
        "\n".join(lines),
        choice,
    ]
    if failed:
        sections += ["Failed:", "\n".join(failed)]
    return "\n\n".join(sections) + "\n"


def select_weights(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit CLGAN for every pair of ``--weight-grid`` weights; write ``results.json`` / ``results.md`` after each."""
    env = report.environment(args.seeds, args.accelerator)
    rows: list[dict[str, Any]] = []
    text = ""
    for adversarial, contrastive in itertools.product(args.weight_grid, repeat=2):
        for seed, category in itertools.product(args.seeds, args.categories):
            weights = {"lambda_adv": adversarial, "lambda_nce": contrastive}
            rows.append(run_candidate(weights, args, category, seed))
            text = selection_markdown(rows, args, args.command, env)
            report.write_study(Path(args.output), args.command, env, "selection", rows, text,
                               options=report.stored_options(args))
            print(f"{weights} / {category} / seed {seed}: {rows[-1]['status']}", flush=True)
    print(text)
    return rows


def term_weights(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The GAN and NCE weights of the rows whose arm has the term (None: no such row).

    A study has one weight per term: rows with two (slices run with other ``--lambda-adv`` / ``--lambda-nce``) are an
    error naming the values. The check reads the rows, so slices of arms without the terms (say ``L1``) merge with
    any weights."""
    weights: dict[str, float | None] = {}
    for name in WEIGHTS:
        values = sorted({row[name] for row in rows if row.get(name)})
        if len(values) > 1:
            msg = f"the rows differ in --{name.replace('_', '-')}: {values}; only runs of one study can be merged."
            raise ValueError(msg)
        weights[name] = values[0] if values else None
    return weights


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
    weights = {name: "–" if value is None else f"{value:g}" for name, value in term_weights(rows).items()}
    failed = [f"- {row['arm']} / {row['category']} / seed {row['seed']}: {row['error']}" for row in rows if row["status"] != "ok"]
    own = tuple(f"pixel_{key}" for key in SEGMENTATION_KEYS)
    paper = tuple(f"paper_k3.0_{key}" for key in SEGMENTATION_KEYS)
    sweep = tuple(f"paper_k{factor}_F1" for factor in FACTORS)
    sections = [
        *report.study_header("Clgan claim check: ablations and baselines", command, env, sources),
        f"Categories {', '.join(args.categories)}, seeds {', '.join(map(str, args.seeds))}, {args.image_size} px, "
        f"{args.epochs} epochs per arm (warm-up / full / decay by Clgan's default ratios), batch {args.batch_size}; "
        f"GAN and NCE weights {weights['lambda_adv']} and {weights['lambda_nce']} wherever an arm has the term. "
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
    curves = histories(rows, "arm", names)
    if curves:
        sections += [
            "### Convergence: pixel AP of the raw maps on the validation set (SurfaceDemo's generated images, no test "
            "image) and the L1 term, per epoch (mean over the runs that recorded it)",
            mean_table([row for row in rows if "history" in row], list(curves),
                       ("held_out_AP_last", "held_out_AP_change", "rec_last", "rec_change"),
                       ("held-out AP, last epoch", "its change over the last 25 % of epochs", "L1 last",
                        "L1 change, last 25 %")),
            curve_table(curves, HELD_OUT_AP),
            curve_table(curves, "train_rec_loss", percent=False),
        ]
    if failed:
        sections += ["Failed:", "\n".join(failed)]
    return "\n\n".join(sections) + "\n"


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
                  sources: Sequence[report.Source] = ()) -> str:
    """Write ``results.json`` and ``results.md`` into ``args.output``; return the text."""
    text = markdown(rows, args, command, env, sources)
    return report.write_study(Path(args.output), command, env, "rows", rows, text, sources, report.stored_options(args))


def run_study(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit every arm on every category and seed; write ``results.json`` and ``results.md`` after every fit."""
    env = report.environment(args.seeds, args.accelerator)
    selected = {name: options for name, options in arms(args.lambda_adv, args.lambda_nce).items()
                if not args.arms or name in args.arms}
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
    for name in WEIGHTS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=DEFAULT_WEIGHTS[name],
                            help=f"weight of the {'GAN' if name == 'lambda_adv' else 'NCE'} term in every arm that has it "
                                 "(choose it with --select-weights)")
    parser.add_argument("--select-weights", action="store_true",
                        help="fit no arm: fit CLGAN for every (lambda_adv, lambda_nce) pair of --weight-grid and choose "
                             f"the pair by validation {SELECTION_KEY} (SurfaceDemo's generated validation set)")
    parser.add_argument("--weight-grid", type=float, nargs="+", default=[0.1, 1.0, 10.0])
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
    return select_weights(args) if args.select_weights else run_study(args)


if __name__ == "__main__":
    main()
