"""Pgcn vs Patchcore across texture patterns, and the bidirectional intersection on vs off (issues 7, 20).

The PGCN paper (Table 2) trains on one cloth pattern and tests on another: pattern generation predicts a patch
from its neighbours, so it should not depend on which pattern it saw, whereas a memory bank only knows the patches
of its training pattern. This study fits each model once per training pattern and seed, then tests the fitted model
on every pattern (the training one: *same pattern*; the others: *cross pattern*), in several variants:

- Pgcn: the intersection of both directions (the paper's ``C_i = LC_i ∩ RC_i``), left to right alone and right
  to left alone (the torch model's ``direction``), plus how often the two directions disagree (patches where
  both exist whose mismatch probabilities fall on different sides of 0.5);
- Patchcore: plain, and with :class:`~anomalib_surface.post_processing.BidirectionalIntersection` (flip
  test-time augmentation, ``flip="horizontal"``).

The summary gives paired differences (same seed, training and test pattern) with 95 % t confidence intervals:
each model's drop from same to cross pattern, Pgcn's drop minus Patchcore's (the paper's claim: clearly
positive, Pgcn loses much less), and Pgcn's intersection minus its left-to-right direction.

The data is a TextureFolder collection (``--root``/``--material``; default: SurfaceDemo's periodic ``cloth``
patterns woven, plaid and motif). Before every test the post-processor is calibrated on the datamodule's
validation set, TextureFolder's default: anomalib's synthetic anomalies on held-out images of the *training*
pattern, never a test image. Thresholds and normalisation therefore come from the training pattern, as they
would in deployment; anomalib's clamped normalisation can saturate on another pattern, which is why AUROC, AP and
AUPRO are computed on un-normalised outputs (:func:`ranking_metrics`).

Budgets are epochs (``--epochs``, ``--pgcn-epochs GENERATOR COMPARATOR``); ``--generator-weights`` starts Pgcn
from a generator pretrained on a pool without the tested patterns (``python -m anomalib_surface.models.pgcn.pretrain``).

Run: ``python -m benchmarks.pgcn_study [--material cloth --patterns woven plaid motif] [--seeds 0 1 2]``; slices run
apart (say one ``--output`` per seed, ``--train-patterns`` and ``--models``) make one study with ``--merge DIR [DIR ...]`` (no fit, tables over their
``results.json``). Output (``--output``, default ``benchmarks/output/pgcn_study``): ``results.md`` (also printed),
``results.csv``, ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib.models.components import AnomalibModule

from anomalib_surface.components.phase_schedule import PhaseSchedule

from . import report
from .protocol import paired_difference, raw_map_metrics
from .runner import (
    Entry,
    Record,
    build_model,
    instantiate_post_processor,
    metric_values,
    test_set,
    use_offline_weights,
)
from .suites import PATTERN_CATEGORIES, baselines, build_datamodule, plugin_entries

DEFAULT_MATERIAL = "cloth"
DEFAULT_PATTERNS = [name.split("/")[1] for name in PATTERN_CATEGORIES if name.startswith(f"{DEFAULT_MATERIAL}/")]

PLAIN = {"class_path": "anomalib.post_processing.PostProcessor"}
INTERSECTION = {
    "class_path": "anomalib_surface.post_processing.BidirectionalIntersection",
    "init_args": {"flip": "horizontal"},
}
SUMMARY_KEYS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "pixel_AP", "pixel_F1", "pixel_IoU")
CLAIM_KEYS = ("image_AUROC", "pixel_AUROC")
"""The paper's Table 2 metrics, of which paired differences are reported."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One test of a fitted model: row-name suffix, post-processor and (Pgcn) the torch model's ``direction``."""

    suffix: str
    post_processor: dict[str, Any]
    direction: str | None = None


INTERSECTED = " (intersection)"
LEFT_TO_RIGHT = " left to right"
VARIANTS = {
    "Pgcn": (
        Variant(INTERSECTED, PLAIN, "both"),
        Variant(LEFT_TO_RIGHT, PLAIN, "left_to_right"),
        Variant(" right to left", PLAIN, "right_to_left"),
    ),
    "Patchcore": (Variant("", PLAIN), Variant(" + BidirectionalIntersection", INTERSECTION)),
}
"""The tests of each fitted model."""
DISAGREEMENT = "direction_disagreement"


def study_entries(
    pre_trained: bool,
    pgcn_epochs: tuple[int, int] | None = None,
    generator_weights: str | None = None,
) -> list[Entry]:
    """Pgcn in its demo preset and Patchcore, on the shared backbone.

    ``pgcn_epochs`` (generator, comparator) replaces the preset's epochs of the two phases (as a budget and its ratio); ``generator_weights`` is Pgcn's
    ``generator_weights_path``.
    """
    (pgcn,) = [entry for entry in plugin_entries(pre_trained) if entry.model == "Pgcn"]
    options, max_epochs = {}, pgcn.max_epochs
    if pgcn_epochs:
        generator, comparator = pgcn_epochs
        options["generator_ratio"] = generator / (generator + comparator)
        max_epochs = generator + comparator
    if generator_weights:
        options["generator_weights_path"] = generator_weights
    pgcn = dataclasses.replace(pgcn, init_args={**pgcn.init_args, **options}, max_epochs=max_epochs)
    return [pgcn, *[entry for entry in baselines(pre_trained) if entry.model == "Patchcore"]]


def pattern_category(material: str, train: str, test: str) -> str:
    """TextureFolder category of training on pattern ``train`` and testing on ``test`` (see ``build_datamodule``)."""
    return f"{material}/{train}" if train == test else f"{material}/{train}_to_{test}"


def engine_arguments(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Keyword arguments of every Engine of the study, writing under ``root``."""
    return {"accelerator": args.accelerator, "devices": 1, "default_root_dir": root, "logger": False,
            "enable_progress_bar": args.progress}


def fit(entry: Entry, args: argparse.Namespace, pattern: str) -> AnomalibModule:
    """``entry`` built by the runner and fitted on ``pattern`` with seed ``args.seed`` (its model, on the Engine's device)."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(args.seed, workers=True)
    model = build_model(entry, args.image_size)
    root = Path(args.output) / "runs" / entry.name / pattern / f"seed{args.seed}"
    engine = Engine(max_epochs=entry.max_epochs or args.epochs, **engine_arguments(args, root))
    engine.fit(model, datamodule=build_datamodule(args, pattern_category(args.material, pattern, pattern), args.seed))
    return model


def direction_disagreement(model: AnomalibModule, datamodule: Any) -> float:  # noqa: ANN401
    """Fraction of patches with both directions whose left-to-right and right-to-left decisions differ.

    A direction calls a patch anomalous when its mismatch probability exceeds 0.5 (the comparator's own
    decision); patches only one direction predicts are left out. Measured on ``datamodule``'s test images.
    """
    import torch

    from anomalib_surface.models.pgcn.patches import scan_sequence

    torch_model = model.model.eval()
    differ, total = 0, 0
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            images = model.pre_processor.transform(batch.image.to(model.device))
            left, right = torch_model.forward_directional(images)
            decisions = [
                scan_sequence(result.pred_score > 0.5, torch_model.scan)[:, :, 2:-2]  # noqa: PLR2004
                for result in (left, right)
            ]
            differ += int((decisions[0] != decisions[1]).sum())
            total += decisions[0].numel()
    return differ / max(total, 1)


def evaluate(model: AnomalibModule, variant: Variant, args: argparse.Namespace, category: str) -> dict[str, float]:
    """Metrics of a fitted ``model`` in ``variant``, post-processor calibrated on and applied to ``category``'s test set."""
    from anomalib.engine import Engine

    model.post_processor = instantiate_post_processor(variant.post_processor)
    if variant.direction is not None:
        model.model.direction = variant.direction
    datamodule = build_datamodule(args, category, args.seed)
    engine = Engine(**engine_arguments(args, Path(args.output) / "runs" / "test"))
    engine.validate(model, datamodule=datamodule, verbose=False)
    (results,) = engine.test(model, datamodule=datamodule, verbose=False)
    metrics = metric_values(results) | ranking_metrics(engine, model, datamodule)
    if variant.direction == "both":
        metrics[DISAGREEMENT] = direction_disagreement(model, datamodule)
    return metrics


def ranking_metrics(engine: Any, model: AnomalibModule, datamodule: Any) -> dict[str, float]:  # noqa: ANN401
    """AUROC, AP and AUPRO of the variant's scores and maps on the test set, without normalisation.

    anomalib's evaluator sees normalised outputs: min and max fitted on the training pattern's validation images,
    clamped to [0, 1], so on another pattern every score can saturate to 1 (AUROC exactly 50). Raw scores do not
    help inside the evaluator either: torchmetrics passes values outside [0, 1] through a sigmoid, which saturates
    too. So the variant (its post-processor included, e.g. the flip intersection) predicts with normalisation
    switched off, and :func:`benchmarks.protocol.raw_map_metrics` rescales scores and maps over the whole test set.
    """
    post_processor = model.post_processor
    normalised, post_processor.enable_normalization = post_processor.enable_normalization, False
    try:
        predictions = engine.predict(model, datamodule=datamodule, return_predictions=True)
    finally:
        post_processor.enable_normalization = normalised
    _, masks, labels = test_set(datamodule)
    scores = torch.cat([batch.pred_score.reshape(-1) for batch in predictions]).float().numpy()
    maps = torch.cat([batch.anomaly_map.reshape(-1, *masks.shape[-2:]) for batch in predictions]).float().numpy()
    return raw_map_metrics(scores, labels.numpy(), maps, masks.numpy())


def study_records(entry: Entry, args: argparse.Namespace, pattern: str, seed: int) -> list[Record]:
    """One record per variant and test pattern of ``entry`` fitted on ``pattern``; failures become ``failed`` records."""
    args = argparse.Namespace(**{**vars(args), "seed": seed})
    tests = [
        (entry.name + variant.suffix, variant, pattern_category(args.material, pattern, test_pattern))
        for variant, test_pattern in itertools.product(VARIANTS[entry.model], args.patterns)
    ]
    records = [Record(entry=name, model=entry.model, category=category, status="failed") for name, _, category in tests]
    for record in records:
        record.metrics["seed"] = seed
    try:
        model = fit(entry, args, pattern)
        for record, (_, variant, category) in zip(records, tests, strict=True):
            record.metrics.update(evaluate(model, variant, args, category))
            record.status = "ok"
    except Exception as error:  # noqa: BLE001 - a failing model is reported and the others go on
        for record in records:
            record.error = record.error or f"{type(error).__name__}: {error}"
    return records


def is_cross_category(category: str) -> bool:
    """Whether a :func:`pattern_category` tests another pattern than the one the model was fitted on."""
    return "_to_" in category


def is_cross_pattern(record: Record) -> bool:
    """Whether the record tests another pattern than the one the model was fitted on."""
    return is_cross_category(record.category)


def pair_table(records: list[Record], key: str) -> str:
    """``key`` (in %) per entry (rows) and training → test pattern (columns, same pattern first), mean over seeds."""
    entries = list(dict.fromkeys(record.entry for record in records))
    categories = sorted(dict.fromkeys(record.category for record in records), key=is_cross_category)
    lines = [
        "| model | " + " | ".join(category.split("/", 1)[1].replace("_to_", " → ") for category in categories) + " |",
        "|---|" + "---:|" * len(categories),
    ]
    for entry in entries:
        cells = [
            [record.metrics.get(key) for record in records if (record.entry, record.category, record.status) == (entry, category, "ok")]
            for category in categories
        ]
        lines.append(f"| {entry} | " + " | ".join(report.format_value(key, report.mean_or_none(values)) for values in cells) + " |")
    return "\n".join(lines)


def training_pattern(category: str) -> str:
    """The pattern a :func:`pattern_category` was fitted on."""
    return category.split("/", 1)[1].split("_to_")[0]


def tested_pattern(category: str) -> str:
    """The pattern a :func:`pattern_category` is tested on."""
    return category.split("/", 1)[1].split("_to_")[-1]


def metric_by_pair(records: list[Record], entry: str, key: str) -> dict[tuple[int, str, str], float]:
    """``key`` of ``entry``'s ok records by (seed, training pattern, category)."""
    return {
        (record.metrics.get("seed"), training_pattern(record.category), record.category): record.metrics[key]
        for record in records
        if record.entry == entry and record.status == "ok" and key in record.metrics
    }


def cross_pattern_drops(records: list[Record], entry: str, key: str) -> dict[tuple[int, str, str], float]:
    """``key`` cross pattern minus same pattern (same seed and training pattern), per cross-pattern test."""
    values = metric_by_pair(records, entry, key)
    return {
        (seed, train, category): value - values[(seed, train, category.split("_to_")[0])]
        for (seed, train, category), value in values.items()
        if is_cross_category(category) and (seed, train, category.split("_to_")[0]) in values
    }


def claim_table(records: list[Record]) -> str:
    """Paired differences (percentage points) with 95 % confidence intervals, one row per comparison and metric."""
    pgcn, patchcore = "Pgcn" + INTERSECTED, "Patchcore"
    comparisons = []
    for key in CLAIM_KEYS:
        pgcn_drop = cross_pattern_drops(records, pgcn, key)
        patchcore_drop = cross_pattern_drops(records, patchcore, key)
        comparisons += [
            (f"Pgcn cross - same pattern, {key}", paired_difference(pgcn_drop, dict.fromkeys(pgcn_drop, 0.0))),
            (f"Patchcore cross - same pattern, {key}",
             paired_difference(patchcore_drop, dict.fromkeys(patchcore_drop, 0.0))),
            (f"Pgcn drop - Patchcore drop, {key} (claim: > 0)", paired_difference(pgcn_drop, patchcore_drop)),
            (f"Pgcn intersection - left to right, {key}",
             paired_difference(metric_by_pair(records, pgcn, key), metric_by_pair(records, "Pgcn" + LEFT_TO_RIGHT, key))),
        ]
    lines = ["| paired difference | pairs | mean [95 % CI] |", "|---|---:|---|"]
    for name, difference in comparisons:
        lines.append(f"| {name} | {difference.n} | {difference} |")
    disagreements = [record.metrics[DISAGREEMENT] for record in records if DISAGREEMENT in record.metrics]
    if disagreements:
        share = 100 * statistics.fmean(disagreements)
        lines.append(f"\nThe two directions disagree on {share:.1f} % of the patches where "
                     f"both exist (mean over {len(disagreements)} tests, decision threshold 0.5).")
    return "\n".join(lines)


def test_counts(records: list[Record]) -> str:
    """``entry n`` per entry: how many successful tests (training pattern, test pattern, seed) a mean is over."""
    counts = Counter(record.entry for record in records if record.status == "ok")
    return ", ".join(f"{entry} {count}" for entry, count in counts.items()) or "none"


def markdown(records: list[Record], args: argparse.Namespace, command: str, env: dict[str, Any],
             sources: Sequence[report.Source] = ()) -> str:
    """The study's tables: same vs cross pattern means, then image AUROC, pixel AUROC and AUPRO per pattern pair.

    ``args``: patterns, seeds, material, image size, epochs and Pgcn's options; ``sources``: the runs merged.
    """
    same = [record for record in records if not is_cross_pattern(record)]
    cross = [record for record in records if is_cross_pattern(record)]
    pgcn = study_entries(args.pretrained, args.pgcn_epochs, args.generator_weights)[0]
    ratio = pgcn.init_args["generator_ratio"]
    phase_epochs = PhaseSchedule({"generator": ratio, "comparator": 1 - ratio}).epochs(pgcn.max_epochs).values()
    sections = [
        *report.study_header("Pgcn vs Patchcore across patterns; BidirectionalIntersection on vs off",
                             command, env, sources),
        f"Patterns {', '.join(args.patterns)} of material `{args.material}`, seeds {', '.join(map(str, args.seeds))}, "
        f"{args.image_size} px, Pgcn {'+'.join(map(str, phase_epochs))} epochs "
        f"(generator weights: {args.generator_weights or 'random'}), other models {args.epochs} epochs; "
        "one fit per model, training pattern and seed. Metrics in %.",
        "### Paired differences (percentage points; same seed, training and test pattern)",
        claim_table(records),
        f"### Same pattern (train and test on one pattern; mean over the tests of each model: {test_counts(same)})",
        report.markdown_table(same, SUMMARY_KEYS),
        f"### Cross pattern (train on one pattern, test on another; mean over the tests of each model: {test_counts(cross)})",
        report.markdown_table(cross, SUMMARY_KEYS),
        *[f"### {report.HEADERS[key]} per training → test pattern\n\n{pair_table(records, key)}"
          for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")],
    ]
    return "\n\n".join(sections) + "\n"


def write_results(records: list[Record], args: argparse.Namespace, command: str, env: dict[str, Any],
                  sources: Sequence[report.Source] = ()) -> str:
    """``results.json`` and ``results.csv`` (:func:`benchmarks.report.write_tables`) and the study's ``results.md``."""
    report.write_tables(records, env, Path(args.output), "Pgcn study", command, sources, report.stored_options(args))
    text = markdown(records, args, command, env, sources)
    (Path(args.output) / "results.md").write_text(text)
    return text


def run_study(args: argparse.Namespace) -> list[Record]:
    """Fit every entry on every pattern and seed, test on every pattern and variant; write and print the tables."""
    from tqdm import tqdm

    env = report.environment(args.seeds, args.accelerator)
    entries = [
        entry
        for entry in study_entries(args.pretrained, args.pgcn_epochs, args.generator_weights)
        if not args.models or entry.model in args.models
    ]
    records: list[Record] = []
    jobs = list(itertools.product(args.seeds, args.train_patterns or args.patterns, entries))
    text = ""
    for seed, pattern, entry in tqdm(jobs, desc="pgcn study", unit="fit"):
        records += study_records(entry, args, pattern, seed)
        text = write_results(records, args, args.command, env)
    print(text)
    return records


def merge(args: argparse.Namespace) -> list[Record]:
    """The study's outputs in ``args.output`` over the records of the runs in ``args.merge`` (no fit)."""
    merged = report.merge_runs(args.merge, "records",
                               lambda row: (row["entry"], row["category"], row["metrics"].get("seed")))
    records = [Record(**row) for row in merged.rows]
    shared = ("root", "material", "image_size", "epochs", "pgcn_epochs", "generator_weights", "batch_size",
              "pretrained")
    patterns = [pattern(record.category) for record in records for pattern in (training_pattern, tested_pattern)]
    options = merged.options(parse_args, shared, patterns=list(dict.fromkeys(patterns)), output=args.output,
                             seeds=list(dict.fromkeys(record.metrics.get("seed") for record in records)))
    print(write_results(records, options, args.command, merged.environment(options.seeds), merged.sources))
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``data`` is always TextureFolder (SurfaceDemo's categories without ``--root``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="TextureFolder collection root (default: SurfaceDemo as one)")
    parser.add_argument("--material", default=DEFAULT_MATERIAL, help="material folder under --root (SurfaceDemo: cloth, leather)")
    parser.add_argument("--patterns", nargs="+", default=DEFAULT_PATTERNS, help="at least two patterns")
    parser.add_argument("--train-patterns", nargs="+", default=None,
                        help="train only on these of --patterns (each is still tested on every pattern); default: all")
    parser.add_argument("--models", nargs="*", default=None, help="only these model classes (Pgcn, Patchcore)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=30, help="epoch budget of single-phase models (Pgcn sets its own)")
    parser.add_argument("--pgcn-epochs", type=int, nargs=2, default=None, metavar=("GENERATOR", "COMPARATOR"),
                        help="Pgcn's phase epochs (default: the demo preset's)")
    parser.add_argument("--generator-weights", default=None,
                        help="Pgcn's generator_weights_path (pretrained on a pool without the tested patterns)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false")
    parser.add_argument("--output", default="benchmarks/output/pgcn_study")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    report.add_merge_option(parser)
    args = parser.parse_args(argv)
    if len(set(args.patterns)) < 2:  # noqa: PLR2004
        parser.error(f"--patterns needs at least two different patterns, got {args.patterns}.")
    if not set(args.train_patterns or ()) <= set(args.patterns):
        parser.error(f"--train-patterns {args.train_patterns} must be among --patterns {args.patterns}.")
    args.data = "TextureFolder"
    args.seed = args.seeds[0]  # of the datamodules built outside a fit; each fit uses its own seed
    args.command = report.command_line("benchmarks.pgcn_study", argv)
    return args


def main(argv: list[str] | None = None) -> list[Record]:
    """Parse the options, install the offline backbone weights when pretrained, run the study; or merge runs."""
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    use_offline_weights(pretrained=args.pretrained)
    return run_study(args)


if __name__ == "__main__":
    main()
