"""Tocoad claim check (issue 18): does stage 2 (fine-tuning F) beat frozen features, and Patchcore?

Every Tocoad row is the ``demo`` suite's Tocoad preset (EfficientNet-Lite0 ``blocks.2`` + ``blocks.4``, narrow
heads) with one option changed, trained for the same epochs through the same code path; "stage 2 off" is
``discriminator_ratio=1`` (stage 1 takes the epochs of stage 2, F stays frozen). anomalib's Patchcore runs on the
same backbone and layers. Each configuration runs with ImageNet weights (``pretrained``) and with
``pre_trained=False`` (``random``: the largest domain gap there is), on SurfaceDemo categories of every kind
(texture, pattern, object), with SurfaceDemo's generated validation set (no test image) for the thresholds.

Reported: threshold-free metrics on the raw maps (:func:`benchmarks.protocol.raw_map_metrics`), paired differences
per (category, seed) with 95 % t intervals and a plain verdict, and per epoch the held-out checks the model logs
(D's AP on held-out synthetic anomalies, the bank's nearest-neighbour gap, each stage-2 term's gradient norm on F).

Run: ``python -m benchmarks.tocoad_study --seeds 0 1 2 [--categories brick cloth/woven washer]
[--backbones pretrained random] [--epochs 11] [--variants ...]``; slices run apart (say one ``--output`` per seed)
make one study with ``--merge DIR [DIR ...]`` (no fit, tables over their ``results.json``). Output (``--output``,
default ``benchmarks/output/tocoad_study``): ``results.md`` (also printed), ``results.json`` (records and histories).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer

from . import report
from .protocol import paired_difference, verdict
from .runner import Entry, Record, run_entry, use_offline_weights
from .suites import baselines, build_datamodule, plugin_entries

STAGE_2_OFF = "Tocoad stage 2 off"
VARIANTS: dict[str, dict[str, Any]] = {
    "Tocoad": {},
    STAGE_2_OFF: {"discriminator_ratio": 1.0},
    "Tocoad SimSiam only (no negative term)": {"negative_weight": 0.0},
    "Tocoad mask-selected negative term": {"negative_guidance": "mask"},
    "Tocoad focal guidance (D's loss into F)": {"negative_guidance": "focal"},
    "Tocoad pooled SimSiam": {"simsiam_level": "image"},
}
"""Row name and the options changed from the Tocoad preset."""
CLAIM_KEYS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")
HISTORY_KEYS = ("held_out_discriminator_AP", "held_out_nn_distance_gap", "train_simsiam_grad_norm_F",
                "train_negative_grad_norm_F")
DEFAULT_CATEGORIES = ("brick", "cloth/woven", "washer")


class EpochHistory(Callback):
    """The model's held-out checks and gradient norms (:data:`HISTORY_KEYS`) after every training epoch.

    Lightning calls the callbacks' ``on_train_epoch_end`` before the model's, where Tocoad logs its checks, so an
    epoch's values are read when the next epoch (or training) starts.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self._ended: dict[str, Any] | None = None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._ended = {"epoch": trainer.current_epoch, "phase": getattr(pl_module, "current_phase", None)}

    def _record(self, trainer: Trainer) -> None:
        if self._ended is not None:
            metrics = trainer.callback_metrics
            self.history.append({**self._ended, **{key: float(metrics[key]) for key in HISTORY_KEYS if key in metrics}})
            self._ended = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del pl_module
        self._record(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del pl_module
        self._record(trainer)


def study_entries(pre_trained: bool, epochs: int, names: list[str] | None) -> list[Entry]:
    """The Tocoad variants (``epochs`` each) and Patchcore on the same backbone."""
    (tocoad,) = [entry for entry in plugin_entries(pre_trained) if entry.model == "Tocoad"]
    variants = [
        dataclasses.replace(tocoad, name=name, init_args={**tocoad.init_args, **change}, max_epochs=epochs)
        for name, change in VARIANTS.items()
        if not names or name in names
    ]
    return variants + [entry for entry in baselines(pre_trained) if entry.model == "Patchcore"]


def by_unit(rows: list[dict[str, Any]], backbone: str, entry: str, key: str) -> dict[tuple[str, int], float]:
    """Raw metric ``key`` of ``entry`` per (category, seed)."""
    return {
        (row["category"], row["seed"]): row["raw_metrics"][key]
        for row in rows
        if row["backbone"] == backbone and row["entry"] == entry and row["status"] == "ok"
    }


def claim_table(rows: list[dict[str, Any]], backbone: str) -> str:
    """Paired differences (percentage points) of Tocoad against stage 2 off and Patchcore, and of each variant."""
    entries = list(dict.fromkeys(row["entry"] for row in rows if row["backbone"] == backbone))
    comparisons = [("Tocoad", STAGE_2_OFF), ("Tocoad", "Patchcore")]
    comparisons += [(entry, STAGE_2_OFF) for entry in entries if entry not in {"Tocoad", STAGE_2_OFF, "Patchcore"}]
    lines = ["| paired difference | metric | pairs | mean [95 % CI] | verdict (claim: > 0) |", "|---|---|---:|---|---|"]
    for model, reference in comparisons:
        for key in CLAIM_KEYS:
            difference = paired_difference(by_unit(rows, backbone, model, key), by_unit(rows, backbone, reference, key))
            lines.append(f"| {model} − {reference} | raw {key} | {difference.n} | {difference} | {verdict(difference)} |")
    return "\n".join(lines)


def means_table(rows: list[dict[str, Any]], backbone: str) -> str:
    """Raw metrics in % (mean over seeds) per entry and category, and the mean over categories."""
    entries = list(dict.fromkeys(row["entry"] for row in rows if row["backbone"] == backbone))
    categories = list(dict.fromkeys(row["category"] for row in rows if row["backbone"] == backbone))
    header = ["model", *(f"{category} img / px AUROC" for category in categories), "mean img AUROC", "mean px AUROC",
              "mean AUPRO", "fit s"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for entry in entries:
        ok = [row for row in rows if row["backbone"] == backbone and row["entry"] == entry and row["status"] == "ok"]

        def mean(key: str, category: str | None = None, selected: list[dict[str, Any]] = ok) -> str:
            values = [row["raw_metrics"][key] for row in selected if category in (None, row["category"])]
            return f"{100 * np.mean(values):.1f}" if values else "–"

        cells = [f"{mean('image_AUROC', c)} / {mean('pixel_AUROC', c)}" for c in categories]
        cells += [mean("image_AUROC"), mean("pixel_AUROC"), mean("pixel_AUPRO")]
        cells.append(f"{np.mean([row['fit_seconds'] for row in ok]):.0f}" if ok else "–")
        lines.append(f"| {entry} ({len(ok)} runs) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def history_table(rows: list[dict[str, Any]], backbone: str) -> str:
    """Per phase of the default Tocoad: the logged checks at the phase's last epoch, mean over runs."""
    keys = HISTORY_KEYS
    lines = ["| entry | phase | " + " | ".join(keys) + " |", "|---|---|" + "---:|" * len(keys)]
    for entry in ("Tocoad", STAGE_2_OFF, *(name for name in VARIANTS if name not in {"Tocoad", STAGE_2_OFF})):
        runs = [row for row in rows if row["backbone"] == backbone and row["entry"] == entry and row["history"]]
        phases = list(dict.fromkeys(epoch["phase"] for run in runs for epoch in run["history"]))
        for phase in phases:
            last = [[epoch for epoch in run["history"] if epoch["phase"] == phase][-1] for run in runs
                    if any(epoch["phase"] == phase for epoch in run["history"])]
            cells = []
            for key in keys:
                values = [epoch[key] for epoch in last if key in epoch]
                cells.append(f"{np.mean(values):.4g}" if values else "–")
            lines.append(f"| {entry} | {phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
             sources: Sequence[report.Source] = ()) -> str:
    """Every table of the study, per backbone (``args``: categories, image size, seeds, epochs, backbones)."""
    sections = [
        *report.study_header("Tocoad: stage 2 vs frozen features vs Patchcore", command, env, sources),
        f"SurfaceDemo {', '.join(args.categories)}, {args.image_size} px, seeds {', '.join(map(str, args.seeds))}; "
        f"every Tocoad row {args.epochs} epochs; metrics on raw scores and maps, in %.",
    ]
    for backbone in args.backbones:
        sections += [
            f"### {backbone} EfficientNet-Lite0: paired differences (percentage points, pairs = categories x seeds)",
            claim_table(rows, backbone),
            f"### {backbone}: means",
            means_table(rows, backbone),
            f"### {backbone}: held-out checks at the end of each phase (mean over runs)",
            history_table(rows, backbone),
        ]
    return "\n\n".join(sections) + "\n"


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
                  sources: Sequence[report.Source] = ()) -> str:
    """Write ``results.json`` (records and histories) and ``results.md`` into ``args.output``; return the text."""
    text = markdown(rows, args, command, env, sources)
    return report.write_study(Path(args.output), command, env, "runs", rows, text, sources, report.stored_options(args))


def run_study(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit and test every entry for every backbone, category and seed; write the tables after each run."""
    from tqdm import tqdm

    output = Path(args.output)
    env = report.environment(args.seeds, args.accelerator)
    rows: list[dict[str, Any]] = []
    jobs = [
        (backbone, category, seed, entry)
        for backbone in args.backbones
        for category in args.categories
        for seed in args.seeds
        for entry in study_entries(backbone == "pretrained", args.epochs, args.variants)
    ]
    text = ""
    for backbone, category, seed, entry in tqdm(jobs, desc="tocoad study", unit="fit"):
        history = EpochHistory()
        datamodule = build_datamodule(args, category, seed)
        record: Record
        record, _ = run_entry(entry, datamodule, category, output / backbone / f"seed{seed}", args.image_size, seed,
                              args.epochs, progress=args.progress, accelerator=args.accelerator, timing=False,
                              callbacks=[history])
        rows.append({"backbone": backbone, **dataclasses.asdict(record), "history": history.history})
        text = write_results(rows, args, args.command, env)
    print(text)
    return rows


def merge(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The study's outputs in ``args.output`` over the rows of the runs in ``args.merge`` (no fit)."""
    merged = report.merge_runs(args.merge, "runs",
                               lambda row: (row["backbone"], row["entry"], row["category"], row["seed"]))
    options = merged.options(parse_args, ("image_size", "epochs", "batch_size"), categories=merged.unique("category"),
                             backbones=merged.unique("backbone"), seeds=merged.unique("seed"), output=args.output)
    print(write_results(merged.rows, options, args.command, merged.environment(options.seeds), merged.sources))
    return merged.rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--data`` is SurfaceDemo)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", nargs="+", default=list(DEFAULT_CATEGORIES), help="SurfaceDemo categories")
    parser.add_argument("--backbones", nargs="+", default=["pretrained", "random"], choices=["pretrained", "random"])
    parser.add_argument("--variants", nargs="*", default=None, choices=sorted(VARIANTS), help="default: all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=11, help="epochs of every Tocoad row (the last builds the bank)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--output", default="benchmarks/output/tocoad_study")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    report.add_merge_option(parser)
    args = parser.parse_args(argv)
    args.data, args.root = "SurfaceDemo", None
    args.command = report.command_line("benchmarks.tocoad_study", argv)
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the options, install the offline backbone weights, run the study; or merge runs."""
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    use_offline_weights(pretrained="pretrained" in args.backbones)
    return run_study(args)


if __name__ == "__main__":
    main()
