"""Dmp ablation (issue 21): what large kernels, feature consistency, parameter copying and realistic synthesis bring.

Every variant is Dmp's CPU preset (the ``demo`` suite's Dmp entry: widths 16, ``depth`` 3, lr 1e-3 divided by 10
at 4/7 and 6/7 of the epochs, the photograph folder as anomaly source) with **one** option changed; the
DRAEM-equivalent changes the three things the paper adds to DRAEM (kernels, feature term, synthesis), as
``configs/model/dmp_draem_equivalent.yaml`` does. All variants share the learning-rate schedule and the budget,
which is a number of epochs (no wall-clock cap).

At 128 px with ``depth`` 3 the large-kernel blocks act on 32x32 (stride 4) and 16x16 (stride 8) maps: a 5x5 kernel
sees 5/32 of the stride-4 map, a 31x31 kernel all of it, so the kernel-size ablation can differ by construction (at
64 px both nearly cover the 16x16 and 8x8 maps).

**Convergence check.** The datamodule holds out ``--held-out`` of the *training* images (anomalib's
``val_split_mode="synthetic"``): they are never trained on, half of them get anomalib's Perlin-noise anomalies
(a synthesis none of the variants trains with), and after every epoch the pixel AP on them is recorded with the
epoch's mean training loss (``history`` in ``results.json``). The split and the held-out anomalies are drawn once
per run with ``--data-seed``, so every variant and seed sees the same held-out set. Test images are only used by
the final test.

**Claims.** Dmp minus each variant (:data:`CLAIMS`), paired by seed, on image AUROC, pixel AUROC, AUPRO and pixel
AP with 95 % t intervals; a claim is reproduced when the interval lies above 0.

Run: ``python -m benchmarks.dmp_ablation [--seeds 0 1 2] [--epochs 150] [--category brick] [--variants ...]``;
slices run apart (say ``--seeds 0 --output A`` and ``--seeds 1 --output B``) make one study with
``python -m benchmarks.dmp_ablation --merge A B --output C`` (no fit). Output (``--output``, default
``benchmarks/output/dmp_ablation``): ``results.md`` (also printed), ``results.csv``, ``results.json`` (records and
per-epoch histories).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from . import report
from .convergence import HELD_OUT_AP, HeldOutHistory, curve_table, histories, last_quarter_change
from .protocol import paired_difference, verdict
from .runner import Entry, Record, run_entry, use_offline_weights
from .suites import plugin_entries

DRAEM_EQUIVALENT = {"kernel_size": 5, "feature_consistency": False, "anomaly_synthesis": "draem"}
"""The options by which the DRAEM-equivalent differs from Dmp (``configs/model/dmp_draem_equivalent.yaml``)."""
VARIANTS: dict[str, dict[str, Any]] = {
    "Dmp": {},
    "small kernels (5x5)": {"kernel_size": 5},
    "no feature consistency": {"feature_consistency": False},
    "EMA extractor": {"feature_extractor": "ema"},
    "gradient extractor": {"feature_extractor": "gradient"},
    "DRAEM-style synthesis": {"anomaly_synthesis": "draem"},
    "self-fill synthesis": {"anomaly_synthesis": "self_fill"},
    "no lighting match": {"match_lighting": 0.0},
    "DRAEM-equivalent": DRAEM_EQUIVALENT,
}
"""Row name and the options changed from Dmp's preset."""
SUMMARY_KEYS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "pixel_AP")
CLAIMS = {
    "large kernels help": "small kernels (5x5)",
    "feature consistency helps": "no feature consistency",
    "parameter copying beats an EMA extractor": "EMA extractor",
    "parameter copying beats a gradient-trained extractor": "gradient extractor",
    "realistic synthesis beats DRAEM-style synthesis": "DRAEM-style synthesis",
    "realistic synthesis beats self-fill synthesis": "self-fill synthesis",
    "lighting match helps": "no lighting match",
    "Dmp beats DRAEM (the DRAEM-equivalent)": "DRAEM-equivalent",
}
"""The paper's claims (and the parts of realistic synthesis) as Dmp minus one variant, claimed > 0."""


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """Mean and half-width of its 95 % Student-t confidence interval (``None`` for a single value)."""
    mean = float(np.mean(values))
    if len(values) < 2:  # noqa: PLR2004
        return mean, None
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values))


def cell(values: list[float]) -> str:
    """``mean ± CI95`` in % (``mean`` alone for one value, ``–`` for none)."""
    if not values:
        return "–"
    mean, half_width = mean_ci(values)
    return f"{100 * mean:.1f}" + ("" if half_width is None else f" ± {100 * half_width:.1f}")


def last_held_out_ap(row: dict[str, Any]) -> float | None:
    """The held-out AP of a run's last epoch (``None`` without a history or without validation that epoch)."""
    return row["history"][-1].get(HELD_OUT_AP) if row.get("history") else None


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Per variant: test metrics and held-out AP as mean ± CI95 over seeds (paired differences: :func:`claims_table`)."""
    header = ["variant", "seeds", *(report.HEADERS[key] for key in SUMMARY_KEYS), "held-out AP", "held-out AP change, last 25 %", "fit s"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for variant in dict.fromkeys(row["variant"] for row in rows):
        ok = [row for row in rows if row["variant"] == variant and row["status"] == "ok"]
        held_out = [last_held_out_ap(row) for row in ok]
        changes = [change for row in ok if (change := last_quarter_change(row["history"], HELD_OUT_AP)) is not None]
        cells = [variant, str(len(ok)), *(cell([row["metrics"][key] for row in ok if key in row["metrics"]]) for key in SUMMARY_KEYS),
                 cell([v for v in held_out if v is not None]), cell(changes),
                 f"{np.mean([row['fit_seconds'] for row in ok]):.0f}" if ok else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(rows: list[dict[str, Any]]) -> str:
    """Per claim: Dmp minus the variant on each of :data:`SUMMARY_KEYS` and on the last epoch's held-out AP, paired
    by seed (percentage points, 95 % t interval), and the verdict on pixel AP (the paper's headline metric) and image
    AUROC of the test set."""
    def value(row: dict[str, Any], key: str) -> float | None:
        return last_held_out_ap(row) if key == HELD_OUT_AP else row["metrics"].get(key)

    def by_seed(variant: str, key: str) -> dict[tuple[int], float]:
        return {(row["seed"],): v for row in rows
                if row["variant"] == variant and row["status"] == "ok" and (v := value(row, key)) is not None}

    keys = (*SUMMARY_KEYS, HELD_OUT_AP)
    header = ["claim (Dmp minus)", *(f"Δ {report.HEADERS[key]}" for key in SUMMARY_KEYS), "Δ held-out AP", "verdict (px AP)",
              "verdict (img AUROC)"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(keys) + "---|---|"]
    for claim, variant in CLAIMS.items():
        differences = {key: paired_difference(by_seed("Dmp", key), by_seed(variant, key)) for key in keys}
        cells = [f"{claim} ({variant})", *(str(differences[key]) for key in keys),
                 verdict(differences["pixel_AP"]), verdict(differences["image_AUROC"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_datamodule(args: argparse.Namespace) -> Any:  # noqa: ANN401
    """SurfaceDemo ``args.category`` with ``args.held_out`` of its training images as a held-out synthetic validation set."""
    from anomalib.data import SurfaceDemo
    from lightning.pytorch import seed_everything

    datamodule = SurfaceDemo(
        category=args.category,
        image_size=args.image_size,
        train_batch_size=args.batch_size,
        eval_batch_size=args.batch_size,
        num_workers=0,
        val_split_mode="synthetic",
        val_split_ratio=args.held_out,
        seed=args.data_seed,
    )
    seed_everything(args.data_seed)
    datamodule.setup()  # the held-out split and its anomalies, drawn with the data seed, not the training seed
    return datamodule


def variant_entries(pre_trained: bool, names: list[str] | None = None) -> list[Entry]:
    """Dmp's preset from the ``demo`` suite with each variant's options (``names``: only those variants)."""
    (dmp,) = [entry for entry in plugin_entries(pre_trained) if entry.name == "Dmp"]
    return [
        dataclasses.replace(dmp, name=name, init_args={**dmp.init_args, **change})
        for name, change in VARIANTS.items()
        if not names or name in names
    ]


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
             sources: Sequence[report.Source] = ()) -> str:
    """Header, settings (``args``: category, image size, epochs, batch, seeds, held-out share) and summary table."""
    curves = histories(rows, "variant", list(dict.fromkeys(row["variant"] for row in rows)))
    return "\n\n".join([
        *report.study_header("Dmp ablation", command, env, sources),
        f"SurfaceDemo {args.category}, {args.image_size} px, {args.epochs} epochs at batch {args.batch_size}, seeds "
        f"{', '.join(map(str, args.seeds))}; {100 * args.held_out:.0f} % of the training images held out as the "
        "synthetic convergence check. Test metrics in %, mean ± 95 % CI over seeds.",
        summary_table(rows),
        "Claims: Dmp minus the variant, paired by seed (percentage points, 95 % t interval); reproduced when the "
        "interval lies above 0.",
        claims_table(rows),
        "Convergence: held-out pixel AP (%) and mean training loss at five epochs, mean over seeds.",
        curve_table(curves, HELD_OUT_AP),
        curve_table(curves, "train_loss", percent=False),
    ]) + "\n"


def run_record(row: dict[str, Any]) -> Record:
    """The runner's record of a ``results.json`` row, named ``variant (seed n)`` (one CSV row per run)."""
    fields = {field.name: row[field.name] for field in dataclasses.fields(Record) if field.name in row}
    return Record(**{**fields, "entry": f"{row['variant']} (seed {row['seed']})"})


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
                  sources: Sequence[report.Source] = ()) -> str:
    """Write ``results.json`` (rows, histories), ``results.md``, ``results.csv`` (a row per run); returns the text."""
    text = markdown(rows, args, command, env, sources)
    report.write_study(Path(args.output), command, env, "runs", rows, text, sources, report.stored_options(args))
    report.write_csv([run_record(row) for row in rows], Path(args.output))
    return text


def run_ablation(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit and test every variant for every seed; write the tables after each run and print them at the end."""
    from tqdm import tqdm

    output = Path(args.output)
    env = report.environment(args.seeds, args.accelerator)
    rows: list[dict[str, Any]] = []
    jobs = [(seed, entry) for seed in args.seeds for entry in variant_entries(pre_trained=False, names=args.variants)]
    text = ""
    for seed, entry in tqdm(jobs, desc="dmp ablation", unit="fit"):
        history = HeldOutHistory()
        record, _ = run_entry(entry, build_datamodule(args), args.category, output / f"seed{seed}", args.image_size,
                              seed, args.epochs, progress=args.progress, accelerator=args.accelerator, callbacks=[history])
        rows.append({"variant": entry.name, "seed": seed, **dataclasses.asdict(record), "history": history.history})
        text = write_results(rows, args, args.command, env)
    print(text)
    return rows


def merge(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The study's outputs in ``args.output`` over the rows of the runs in ``args.merge`` (no fit)."""
    merged = report.merge_runs(args.merge, "runs", lambda row: (row["variant"], row["category"], row["seed"]))
    shared = ("category", "image_size", "epochs", "batch_size", "held_out", "data_seed")
    options = merged.options(parse_args, shared, seeds=merged.unique("seed"), output=args.output)
    print(write_results(merged.rows, options, args.command, merged.environment(options.seeds), merged.sources))
    return merged.rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--category", default="brick", help="SurfaceDemo category")
    parser.add_argument("--variants", nargs="*", default=None, choices=sorted(VARIANTS), help="default: all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=150, help="epochs of every variant (same lr schedule)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--held-out", type=float, default=0.25, help="fraction of training images held out")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the held-out split and its anomalies")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--output", default="benchmarks/output/dmp_ablation")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    report.add_merge_option(parser)
    args = parser.parse_args(argv)
    args.command = report.command_line("benchmarks.dmp_ablation", argv)
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the options and run the ablation (Dmp has no pretrained backbone: nothing to install), or merge runs."""
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    use_offline_weights(pretrained=False)
    return run_ablation(args)


if __name__ == "__main__":
    main()
