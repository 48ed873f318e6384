"""Regenerate benchmarks/RESULTS.md: every model on the three kinds of data, with seeds, paired CIs and claims.

One command::

    python -m benchmarks.results --seeds 0 1 2 --epochs 10

runs, with :mod:`benchmarks.run`'s runner, the five plugin models and anomalib's Patchcore, Padim, Stfpm
and Draem (plus the ablations the papers' claims need) on

- ``textures``: SurfaceDemo's stochastic textures;
- ``patterns``: SurfaceDemo's periodic cloth and leather patterns;
- ``objects``: SurfaceDemo's aligned objects, and ``objects_rto``: their MadRto variant (rotation + translation);
- ``cross_pattern``: Pgcn and Patchcore trained on one cloth pattern and tested on it and on the others;

then writes RESULTS.md (``--results``): what each category tests (:mod:`benchmarks.data_properties`), one
table per kind (threshold-free metrics on raw maps, mean ± std over seeds; thresholded metrics with
thresholds from the validation set, which holds no test image; paired difference to Patchcore with a 95 %
CI; wall time beside) and the paper-claims table. ``--categories-per-kind N`` and ``--models`` run a
subset (RESULTS.md says so and names the command). Runs go to ``--output`` (deleted with ``--clean``).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import data_properties, run
from .protocol import RAW_METRIC_KEYS, paired_difference, summarise, verdict
from .runner import Entry, Record, use_offline_weights
from .suites import OBJECT_CATEGORIES, PATTERN_CATEGORIES, SURFACE_DEMO_CATEGORIES, Suite, claim_entries, main_entries

REFERENCE = "Patchcore"
THRESHOLDED_KEYS = ("image_F1", "pixel_F1", "pixel_IoU")


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of data: datamodule, categories, and the claim ablations that run on it."""

    title: str
    data: str
    categories: tuple[str, ...]
    extra: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None


def _cross_pattern_categories() -> tuple[str, ...]:
    patterns = [name.split("/")[1] for name in PATTERN_CATEGORIES if name.startswith("cloth/")]
    return tuple(f"cloth/{a}" if a == b else f"cloth/{a}_to_{b}" for a in patterns for b in patterns)


KINDS = {
    "textures": Kind("Stochastic textures (SurfaceDemo)", "SurfaceDemo", SURFACE_DEMO_CATEGORIES,
                     ("Clgan-AE (L1 only)", "Dmp small kernels (5x5)", "Dmp no feature consistency", "Dmp plain synthesis",
                      "Tocoad stage 2 off (frozen features)")),
    "patterns": Kind("Periodic patterns (SurfaceDemo cloth and leather)", "SurfaceDemo", PATTERN_CATEGORIES, ("Clgan-AE (L1 only)",)),
    "objects": Kind("Aligned objects (SurfaceDemo)", "SurfaceDemo", OBJECT_CATEGORIES, ("Locc one centre (vector)",)),
    "objects_rto": Kind("Misaligned objects (MadRto: rotation + translation of SurfaceDemo's objects)", "MadRto",
                        OBJECT_CATEGORIES, ("Locc one centre (vector)", "Locc -IMM", "Locc -DGM")),
    "cross_pattern": Kind("Cross pattern (TextureFolder on SurfaceDemo's cloth: train on A, test on B)", "TextureFolder",
                          _cross_pattern_categories(), only=("Pgcn", "Patchcore")),
}


@dataclasses.dataclass(frozen=True)
class Claim:
    """One central claim of a seed paper, tested as the paired difference ``better - worse`` on ``kinds``.

    The claim holds when the difference is positive, except for ``fit_seconds`` (lower is better).
    """

    paper: str
    claim: str
    kinds: tuple[str, ...]
    better: str
    worse: str
    metric: str = "raw_image_AUROC"


CLAIMS = (
    Claim("Clgan", "contrastive + adversarial terms beat a plain reconstruction model (pixel F1)", ("textures", "patterns"),
          "Clgan", "Clgan-AE (L1 only)", "pixel_F1"),
    Claim("Clgan", "contrastive + adversarial terms beat a plain reconstruction model (pixel IoU)", ("textures", "patterns"),
          "Clgan", "Clgan-AE (L1 only)", "pixel_IoU"),
    Claim("Dmp", "large kernels help", ("textures",), "Dmp", "Dmp small kernels (5x5)"),
    Claim("Dmp", "feature consistency helps", ("textures",), "Dmp", "Dmp no feature consistency"),
    Claim("Dmp", "realistic synthesis helps", ("textures",), "Dmp", "Dmp plain synthesis"),
    Claim("Dmp", "Dmp beats Draem", ("textures", "patterns", "objects"), "Dmp", "Draem"),
    Claim("Tocoad", "stage-2 fine-tuning beats frozen features", ("textures",), "Tocoad", "Tocoad stage 2 off (frozen features)"),
    Claim("Locc", "per-position map beats one vector", ("objects", "objects_rto"), "Locc", "Locc one centre (vector)"),
    Claim("Locc", "image matching helps on RTO", ("objects_rto",), "Locc", "Locc -IMM"),
    Claim("Locc", "defect generation helps", ("objects_rto",), "Locc", "Locc -DGM"),
    Claim("Locc", "faster than Padim (fit seconds; Locc − Padim < 0)", ("objects_rto",), "Locc", "Padim", "fit_seconds"),
)
NOT_TESTABLE = (
    ("Pgcn", "bidirectional intersection removes false positives",
     "not testable by this command: `python -m benchmarks.pgcn_study` measures it"),
)


def value(record: Record, metric: str) -> float:
    """``raw_<key>`` from the raw-map metrics, ``fit_seconds``, or a thresholded metric of the record."""
    if metric.startswith("raw_"):
        return record.raw_metrics.get(metric.removeprefix("raw_"), float("nan"))
    if metric == "fit_seconds":
        return record.fit_seconds if record.fit_seconds is not None else float("nan")
    return record.metrics.get(metric, float("nan"))


def by_unit(records: list[Record], entry: str, metric: str) -> dict[tuple, float]:
    """``{(category, seed): value}`` of one entry's finished records."""
    return {(r.category, r.seed): value(r, metric) for r in records if r.entry == entry and r.status == "ok"}


def seed_means(records: list[Record], entry: str, metric: str) -> list[float]:
    """Per seed, the mean over categories of one entry's metric (the values summarised as mean ± std)."""
    per_seed = defaultdict(list)
    for (_, seed), metric_value in by_unit(records, entry, metric).items():
        per_seed[seed].append(metric_value)
    return [float(np.mean(values)) for _, values in sorted(per_seed.items())]


def kind_table(records: list[Record]) -> str:
    """One row per entry: raw metrics and held-out thresholded metrics (mean ± std over seeds), Δ to Patchcore."""
    entries = list(dict.fromkeys(record.entry for record in records))
    metrics = [f"raw_{key}" for key in RAW_METRIC_KEYS] + list(THRESHOLDED_KEYS)
    headers = ["img AUROC", "img AP", "px AUROC", "px AP", "AUPRO", "img F1*", "px F1*", "px IoU*",
               "Δ img AUROC vs Patchcore [95% CI]", "Δ AUPRO vs Patchcore [95% CI]", "fit s", "epochs", "runs"]
    lines = ["| model | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    failures = []
    for entry in entries:
        entry_records = [record for record in records if record.entry == entry]
        ok = [record for record in entry_records if record.status == "ok"]
        failures += [f"- {r.entry} / {r.category} / seed {r.seed}: {r.error}" for r in entry_records if r.status != "ok"]
        if not ok:
            lines.append(f"| {entry} | failed" + " |" * len(headers))
            continue
        cells = [str(summarise(seed_means(records, entry, metric))) for metric in metrics]
        for metric in ("raw_image_AUROC", "raw_pixel_AUPRO"):
            if entry == REFERENCE:
                cells.append("ref.")
            else:
                cells.append(str(paired_difference(by_unit(records, entry, metric), by_unit(records, REFERENCE, metric))))
        fit = summarise([record.fit_seconds for record in ok])
        cells += [f"{fit.mean:.1f}", str(ok[0].epochs), f"{len(ok)}/{len(entry_records)}"]
        lines.append(f"| {entry} | " + " | ".join(cells) + " |")
    return "\n".join(lines + (["", "Failed runs:", *failures] if failures else []))


def cross_pattern_table(records: list[Record]) -> str:
    """Drop of raw image AUROC from the training pattern to another pattern, Pgcn vs Patchcore (paired)."""
    drops = defaultdict(dict)
    for record in records:
        if record.status != "ok" or "_to_" not in record.category:
            continue
        material, _, pair = record.category.partition("/")
        train, _, test = pair.partition("_to_")
        same = [r for r in records if r.status == "ok" and r.entry == record.entry and r.seed == record.seed
                and r.category == f"{material}/{train}"]
        if same:
            drops[record.entry][(record.category, record.seed)] = value(same[0], "raw_image_AUROC") - value(record, "raw_image_AUROC")
    lines = ["| model | AUROC drop same → cross pattern (mean ± std over units) |", "|---|---:|"]
    lines += [f"| {entry} | {summarise(list(units.values()))} |" for entry, units in drops.items()]
    difference = paired_difference(drops.get("Pgcn", {}), drops.get("Patchcore", {}))
    return "\n".join(lines), difference


def claims_table(records_by_kind: dict[str, list[Record]]) -> str:
    """The claims with our measurement (paired difference ``better - worse``, 95 % CI) and a verdict."""
    lines = ["| paper | claim | data | metric | our measurement: better − worse [95% CI] | verdict |", "|---|---|---|---|---:|---|"]
    for claim in CLAIMS:
        pooled_better, pooled_worse = {}, {}
        for kind in claim.kinds:
            records = records_by_kind.get(kind, [])
            pooled_better |= {(kind, *unit): v for unit, v in by_unit(records, claim.better, claim.metric).items()}
            pooled_worse |= {(kind, *unit): v for unit, v in by_unit(records, claim.worse, claim.metric).items()}
        difference = paired_difference(pooled_better, pooled_worse)
        scale = 100 if claim.metric != "fit_seconds" else 1
        if difference.n == 0:
            measured, outcome = "–", "not testable here (not run)"
        else:
            measured = str(difference) if scale == 100 else f"{difference.mean:+.1f} s [{difference.low:+.1f}, {difference.high:+.1f}]"
            outcome = verdict(difference, claimed_sign=-1 if claim.metric == "fit_seconds" else 1)
        lines.append(f"| {claim.paper} | {claim.claim} | {', '.join(claim.kinds)} | {claim.metric} | {measured} | {outcome} |")
    if "cross_pattern" in records_by_kind:
        _, difference = cross_pattern_table(records_by_kind["cross_pattern"])
        measured = "–" if difference.n == 0 else f"Pgcn drop − Patchcore drop: {difference}"
        outcome = "not testable here (not run)" if difference.n == 0 else verdict(difference, claimed_sign=-1)
        lines.append(f"| Pgcn | loses less than Patchcore across patterns | cross_pattern | raw_image_AUROC drop | {measured} | {outcome} |")
    lines += [f"| {paper} | {claim} | – | – | – | {reason} |" for paper, claim, reason in NOT_TESTABLE]
    return "\n".join(lines)


def kind_suite(name: str, kind: Kind, pre_trained: bool, models: list[str] | None, categories: int | None) -> Suite:
    """The runner suite of one kind: main entries (or ``kind.only``) and its claim ablations, limited as asked."""

    def build(pt: bool) -> list[Entry]:
        extra = [entry for entry in claim_entries(pt) if entry.name in kind.extra]
        entries = [entry for entry in main_entries(pt) + extra if kind.only is None or entry.name in kind.only]
        return [entry for entry in entries if not models or entry.name in models or entry.model in models]

    chosen = kind.categories
    if categories is not None and name == "cross_pattern":
        patterns = sorted({category.split("/")[1].split("_to_")[0] for category in chosen})[: max(2, categories)]
        chosen = tuple(c for c in chosen if all(p in patterns for p in c.split("/")[1].split("_to_")))
    elif categories is not None:
        chosen = chosen[:categories]
    return Suite(kind.title, build, categories=chosen, data=kind.data)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Regenerate benchmarks/RESULTS.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="epoch budget of every entry (multi-phase models split it)")
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=list(KINDS))
    parser.add_argument("--categories-per-kind", type=int, default=None, help="subset: the first N categories of each kind")
    parser.add_argument("--models", nargs="*", default=None, help="subset: only these entries or model classes")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--no-timing", dest="timing", action="store_false")
    parser.add_argument("--output", default="benchmarks/output/results")
    parser.add_argument("--results", default="benchmarks/RESULTS.md")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--clean", action="store_true", help="delete --output (runs, checkpoints, arrays) at the end")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Run every kind, then write RESULTS.md."""
    args = parse_args(argv)
    command = "python -m benchmarks.results " + shlex.join(sys.argv[1:] if argv is None else argv)
    use_offline_weights(pretrained=True)
    start = time.perf_counter()
    properties = data_properties.markdown(data_properties.measure(args.image_size))
    records_by_kind, sections = {}, []
    for name in args.kinds:
        kind = KINDS[name]
        suite = kind_suite(name, kind, True, args.models, args.categories_per_kind)
        run_args = argparse.Namespace(
            suite=name, data=kind.data, root=None, categories=None, models=None, image_size=args.image_size,
            epochs=args.epochs, seeds=args.seeds, batch_size=args.batch_size, accelerator=args.accelerator,
            pretrained=True, resume=args.resume, output=str(Path(args.output) / name), progress=args.progress,
            timing=args.timing, figures=False,
        )
        records = run.run_suite(run_args, suite)
        records_by_kind[name] = records
        body = kind_table(records)
        if name == "cross_pattern":
            body += "\n\n" + cross_pattern_table(records)[0]
        sections.append(f"## {kind.title}\n\nCategories: {', '.join(suite.categories)}.\n\n{body}\n")
    minutes = (time.perf_counter() - start) / 60
    subset = args.categories_per_kind is not None or args.models or set(args.kinds) != set(KINDS)
    scope = " — a SUBSET of the full protocol (fewer categories, kinds or models than the default command)" if subset else ""
    header = f"""# Benchmark results

Generated by `{command}` in {minutes:.0f} minutes on this project's machine (2 shared CPU cores){scope}.
Training seeds {args.seeds}; budget {args.epochs} epochs per entry (multi-phase models split it by their own
options; no wall-clock cap); {args.image_size} px. Every pretrained backbone is `tf_efficientnet_lite0`.

Protocol (`benchmarks/protocol.py`): img AUROC/AP, px AUROC/AP and AUPRO are threshold-free and computed on the raw
scores and maps (before normalisation). Columns marked * are thresholded: image F1 and pixel F1/IoU after the
model's post-processing, calibrated on the validation set, which holds no test image (SurfaceDemo: its generated
validation set; MadRto/TextureFolder: anomalib's synthetic split). Values are mean ± std over seeds of the
per-seed mean over categories, in %. Δ vs Patchcore: mean over (category, seed) of the model's metric minus
Patchcore's on the same backbone, with a 95 % Student-t interval (Clgan, Dmp, Draem and Pgcn use no pretrained
backbone). Wall time (fit s) is reported beside, never used as a budget.

## What each category tests

Measured on 60 training images per category (`benchmarks/data_properties.py`): autocorrelation along x at the
pattern's period and the highest one at any lag ≥ 8 px (periodic patterns repeat; textures do not), and the mean
cosine of per-position feature centres (EfficientNet-Lite0 stage 2) to their mean (near 1: no layout, a
per-position model degenerates to one centre; lower: aligned objects).

{properties}
"""
    markdown = header + "\n" + "\n".join(sections) + "\n## Paper claims\n\n" + claims_table(records_by_kind) + "\n"
    Path(args.results).write_text(markdown)
    if args.clean:
        shutil.rmtree(args.output, ignore_errors=True)
    print(markdown)
    return markdown


if __name__ == "__main__":
    main()
