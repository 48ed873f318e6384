"""Locc claim check on aligned objects and their RTO variant (issue 19; Lv et al., Tables 1, 2 and 5).

Data: SurfaceDemo's aligned-object categories (``washer``, ``nut``, ``board``) and their RTO variant (``MadRto``
over the SurfaceDemo folder: rigid, rotation up to ±15°, shift up to ±10 %, no zoom; our ranges). Every model
uses the pretrained ``tf_efficientnet_lite0`` (``HF_HUB_OFFLINE=1``), 128 px, batch 32.

Runs per (category, seed):

- aligned data, without the image matching module (as the paper's Table 1 on MAD): Locc with one centre per
  position (``center="map"``) and with one global centre (``"vector"``);
- RTO variant (Table 2): Locc with / without the image matching module (IMM) and with / without the defect
  generation module (DGM), Locc with the residual start of ``N_M`` (``mapping_start="residual"``);
- anomalib's Padim and Patchcore on the same backbone, on both (Table 4), with their ms per image (Table 5);
- with ``--alignment-blur``, the full model with the registration loss on blurred images.

Locc trains ``--imm-epochs`` alignment epochs and ``--alm-epochs`` localisation epochs (paper: 500 and 300) on
the trainer's budget, from its cached features. Every model validates once, after its last epoch (the
post-processor's calibration; the raw-map metrics below need none). For every run with the IMM, the rotation and translation error of
the predicted alignment against the transforms ``mad_rto.json`` records is measured on the test images
(:func:`alignment_errors`; target below 2° and 2 px at 128 px).

The summary gives pixel AUROC and AP (raw maps, :mod:`benchmarks.protocol`) as mean ± std over the units and the
paper's comparisons as paired differences with 95 % t intervals and a verdict.

Run: ``HF_HUB_OFFLINE=1 python -m benchmarks.locc_study --seeds 0 1 2``; slices run apart (say one ``--output`` per
seed) make one study with ``--merge DIR [DIR ...]`` (no fit, tables over their ``results.json``). Output
(``--output``, default ``benchmarks/output/locc_study``): ``results.md`` (also printed), ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback

from . import report
from .protocol import paired_difference, summarise, verdict
from .runner import Entry, run_entry, use_offline_weights
from .suites import BACKBONE, OBJECT_CATEGORIES, anomaly_source_folder, baselines, build_datamodule

ALIGNED, RTO = "SurfaceDemo", "MadRto"
CLAIMS = (
    # (paper's claim, data, model, reference); the claimed sign is +1: the model's metric is higher
    ("per-position map ahead of one vector (Table 1, aligned)", ALIGNED, "Locc map", "Locc vector"),
    ("image matching helps on RTO (Table 2, (i) vs (ii))", RTO, "Locc +IMM +DGM", "Locc -IMM +DGM"),
    ("defect generation helps on RTO (Table 2, (i) vs (iv))", RTO, "Locc +IMM +DGM", "Locc +IMM -DGM"),
    ("Locc ahead of Padim on RTO (Table 4)", RTO, "Locc +IMM +DGM", "Padim"),
    ("Locc ahead of Patchcore-like memory banks on RTO (Table 4: SPADE)", RTO, "Locc +IMM +DGM", "Patchcore"),
    ("N_M from scratch vs residual start (our choice, issue 19)", RTO, "Locc +IMM +DGM", "Locc +IMM +DGM residual"),
)
METRICS = ("pixel_AUROC", "pixel_AP")


def locc_entries(imm_epochs: int, alm_epochs: int, source: Path, blurs: tuple[float, ...] = ()) -> dict[str, list[Entry]]:
    """The Locc variants of each data kind; the IMM gets ``imm_epochs``, ``N_M`` ``alm_epochs`` (+1 centres pass).

    ``blurs``: also the full model with each of these ``alignment_blur`` values (registration loss on blurred images).
    """
    base = {"backbone": BACKBONE, "pre_trained": True, "imm_channels": [16, 32, 64], "anomaly_source_path": str(source)}
    aligned = {"align": False}
    with_imm = {"align": True, "alignment_ratio": imm_epochs / (imm_epochs + alm_epochs)}

    def entry(name: str, **options: Any) -> Entry:  # noqa: ANN401
        epochs = 1 + alm_epochs + (imm_epochs if options.get("align") else 0)
        return Entry(name, "Locc", {**base, **options}, max_epochs=epochs)

    return {
        ALIGNED: [entry("Locc map", **aligned), entry("Locc vector", **aligned, center="vector")],
        RTO: [
            entry("Locc +IMM +DGM", **with_imm),
            entry("Locc -IMM +DGM", **aligned),
            entry("Locc +IMM -DGM", **with_imm, outlier_exposure=False),
            entry("Locc -IMM -DGM", **aligned, outlier_exposure=False),
            entry("Locc +IMM +DGM residual", **with_imm, mapping_start="residual"),
            *(entry(f"Locc +IMM +DGM blur {blur:g} px", **with_imm, alignment_blur=blur) for blur in blurs),
        ],
    }


class KeepModel(Callback):
    """Keeps the fitted model, to measure its alignment after the run."""

    def __init__(self) -> None:
        self.model = None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:  # noqa: ANN401
        del trainer
        self.model = pl_module


def pixel_matrix(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, 3, 3]`` pixel-index sampling matrices of ``[B, 2, 3]`` normalised ones (``affine_grid``, ``align_corners=False``)."""
    to_norm = torch.tensor([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]], dtype=torch.float64)
    full = torch.cat([matrix.double(), torch.tensor([[[0, 0, 1]]], dtype=torch.float64).expand(len(matrix), 1, 3)], dim=1)
    return torch.linalg.inv(to_norm) @ full @ to_norm


def rto_pixel_matrix(transform: dict[str, Any], height: int, width: int) -> torch.Tensor:
    """``[3, 3]`` pixel matrix (source to variant) of a ``mad_rto.json`` transform record."""
    from anomalib_surface.data.rto_variant import RtoTransform

    rto = RtoTransform(transform["angle"], transform["scale"], tuple(transform["offset"]), tuple(transform["shift"]))
    return torch.cat([rto.matrix(height, width)[0].double(), torch.tensor([[0, 0, 1]], dtype=torch.float64)])


def alignment_errors(
    params: torch.Tensor, image_transforms: list[dict[str, Any]], template_transform: dict[str, Any], height: int, width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation error (degrees) and translation error (pixels) of predicted alignments ``[B, 3]`` (``Tx, Ty, θ``).

    An RTO image is its aligned source warped by ``M_i`` (source to variant, pixels), the template by ``M_T``.
    The aligned image samples the input at ``A p``; it matches the template where ``A = M_i M_T⁻¹``. The rotation
    error is the angle of ``A_pred A_true⁻¹``; the translation error is the distance in pixels between the points
    that ``A_pred`` and ``A_true`` sample for the image centre.
    """
    from anomalib_surface.models.locc.spatial_transformer import rigid_matrix

    predicted = pixel_matrix(rigid_matrix(params.detach().cpu(), height, width), height, width)
    template = rto_pixel_matrix(template_transform, height, width)
    true = torch.stack([rto_pixel_matrix(transform, height, width) @ torch.linalg.inv(template) for transform in image_transforms])
    relative = predicted @ torch.linalg.inv(true)
    rotation = torch.rad2deg(torch.atan2(relative[:, 1, 0], relative[:, 0, 0])).abs()
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2, 1.0], dtype=torch.float64)
    translation = torch.linalg.norm((predicted @ centre - true @ centre)[:, :2], dim=1)
    return rotation.numpy(), translation.numpy()


def measure_alignment(model: Any, datamodule: Any) -> dict[str, float]:  # noqa: ANN401
    """Mean and 95th percentile of the rotation / translation errors of ``model``'s IMM on the RTO test images."""
    test_data = datamodule.test_data
    category_dir = Path(test_data.samples.image_path.iloc[0]).parents[2]
    files = json.loads((category_dir / "mad_rto.json").read_text())["files"]
    template = model.model.imm.template[0].cpu()
    train = datamodule.train_data
    template_path = next(
        path for index, path in enumerate(train.samples.image_path)
        if torch.allclose(model.pre_processor.transform(train[index].image).cpu(), template, atol=1e-5)
    )
    relative = lambda path: str(Path(path).relative_to(category_dir))  # noqa: E731
    images = torch.stack([model.pre_processor.transform(test_data[i].image) for i in range(len(test_data))])
    with torch.no_grad():
        params = torch.cat([model.model.imm.predict_transform(part.to(model.device)) for part in images.split(16)])
    transforms = [files[relative(path)]["transform"] for path in test_data.samples.image_path]
    rotation, translation = alignment_errors(params, transforms, files[relative(template_path)]["transform"], *images.shape[-2:])
    return {"rotation_deg": float(rotation.mean()), "rotation_deg_p95": float(np.percentile(rotation, 95)),
            "translation_px": float(translation.mean()), "translation_px_p95": float(np.percentile(translation, 95))}


def data_args(args: argparse.Namespace, data: str) -> argparse.Namespace:
    """The options :func:`benchmarks.suites.build_datamodule` reads, for ``data``."""
    return argparse.Namespace(data=data, root=None, image_size=args.image_size, batch_size=args.batch_size, seeds=args.seeds)


def per_category(rows: list[dict[str, Any]]) -> str:
    """Pixel AUROC per data kind, model and category (mean over seeds), with the IMM's mean rotation error."""
    categories = list(dict.fromkeys(row["category"] for row in rows))
    lines = ["| data | model | " + " | ".join(f"{category} px AUROC (rotation error °)" for category in categories) + " |",
             "|---|---|" + "---:|" * len(categories)]
    for data, name in dict.fromkeys((row["data"], row["entry"]) for row in rows):
        cells = []
        for category in categories:
            ok = [row for row in rows if (row["data"], row["entry"], row["category"]) == (data, name, category)
                  and row["status"] == "ok"]
            rotation = [row["alignment"]["rotation_deg"] for row in ok if row.get("alignment")]
            cells.append((f"{100 * np.mean([row['raw_metrics']['pixel_AUROC'] for row in ok]):.1f}" if ok else "–")
                         + (f" ({np.mean(rotation):.1f})" if rotation else ""))
        lines.append(f"| {data if data == ALIGNED else 'RTO'} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    """Per data kind and model: metrics mean ± std over the units, ms per image, alignment error; then the claims."""
    lines = ["| data | model | units | px AUROC | px AP | ms/img (batch 1) | rotation error ° (p95) | translation error px (p95) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for data, name in dict.fromkeys((row["data"], row["entry"]) for row in rows):
        ok = [row for row in rows if (row["data"], row["entry"]) == (data, name) and row["status"] == "ok"]
        align = [row["alignment"] for row in ok if row.get("alignment")]
        cells = [data if data == ALIGNED else "RTO", name, str(len(ok)),
                 *(str(summarise([row["raw_metrics"][key] for row in ok])) for key in METRICS),
                 f"{np.mean([row['ms_per_image_batch1'] for row in ok]):.1f}" if ok else "–",
                 f"{np.mean([a['rotation_deg'] for a in align]):.2f} ({np.mean([a['rotation_deg_p95'] for a in align]):.2f})" if align else "",
                 f"{np.mean([a['translation_px'] for a in align]):.2f} ({np.mean([a['translation_px_p95'] for a in align]):.2f})" if align else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| claim | metric | paired difference [95 % CI] (points) | n | verdict |", "|---|---|---:|---:|---|"]
    for claim, data, model, reference in CLAIMS:
        for key in METRICS:
            units = {
                name: {(row["category"], row["seed"]): row["raw_metrics"][key] for row in rows
                       if row["data"] == data and row["entry"] == name and row["status"] == "ok"}
                for name in (model, reference)
            }
            difference = paired_difference(units[model], units[reference])
            lines.append(f"| {claim}: {model} − {reference} | {key} | {difference} | {difference.n} | {verdict(difference)} |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
             sources: Sequence[report.Source] = ()) -> str:
    """Header, settings and summary (``args``: categories, data kinds, image size, batch, seeds, IMM and ALM epochs)."""
    return "\n\n".join([
        *report.study_header("Locc on aligned objects and their RTO variant (issue 19)", command, env, sources),
        f"SurfaceDemo {', '.join(args.categories)} ({', '.join(args.data)}), {args.image_size} px, batch {args.batch_size}, "
        f"seeds {', '.join(map(str, args.seeds))}; Locc: {args.imm_epochs} alignment + 1 + {args.alm_epochs} localisation "
        "epochs. Pixel metrics on raw maps in %, mean ± std over (category, seed) units; paired differences in points.",
        summary(rows),
        "Per category (mean over seeds):",
        per_category(rows),
    ]) + "\n"


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, env: dict[str, Any],
                  sources: Sequence[report.Source] = ()) -> str:
    """Write ``results.json`` and ``results.md`` into ``args.output``; return the text."""
    text = markdown(rows, args, command, env, sources)
    return report.write_study(Path(args.output), command, env, "runs", rows, text, sources, report.stored_options(args))


def run_study(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit and test every model on every category, data kind and seed; write the tables after each run."""
    output = Path(args.output)
    env = report.environment(args.seeds, args.accelerator)
    entries = locc_entries(args.imm_epochs, args.alm_epochs, anomaly_source_folder(), tuple(args.alignment_blur))
    references = [entry for entry in baselines(pre_trained=True) if entry.model in {"Padim", "Patchcore"}]
    rows: list[dict[str, Any]] = []
    text = ""
    for seed in args.seeds:
        for category in args.categories:
            for data in args.data:
                for entry in [*entries[data], *references]:
                    if args.models and entry.name not in args.models:
                        continue
                    datamodule = build_datamodule(data_args(args, data), category, seed)
                    keep = KeepModel()
                    record, _ = run_entry(entry, datamodule, f"{data}/{category}", output / f"seed{seed}", args.image_size,
                                          seed, entry.max_epochs or 1, progress=args.progress, accelerator=args.accelerator,
                                          callbacks=[keep], engine_options={"check_val_every_n_epoch": entry.max_epochs or 1})
                    row = {"data": data, **dataclasses.asdict(record), "category": category}
                    if record.status == "ok" and entry.init_args.get("align"):
                        row["alignment"] = measure_alignment(keep.model, datamodule)
                    rows.append(row)
                    print(f"{data} {category} seed {seed} {entry.name}: {record.status} {record.raw_metrics} "
                          f"{row.get('alignment', '')} {record.error or ''}", flush=True)
                    text = write_results(rows, args, args.command, env)
    print(text)
    return rows


def merge(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The study's outputs in ``args.output`` over the rows of the runs in ``args.merge`` (no fit)."""
    merged = report.merge_runs(args.merge, "runs",
                               lambda row: (row["data"], row["entry"], row["category"], row["seed"]))
    options = merged.options(parse_args, ("image_size", "batch_size", "imm_epochs", "alm_epochs"),
                             categories=merged.unique("category"), data=merged.unique("data"),
                             seeds=merged.unique("seed"), output=args.output)
    print(write_results(merged.rows, options, args.command, merged.environment(options.seeds), merged.sources))
    return merged.rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--categories", nargs="+", default=list(OBJECT_CATEGORIES), choices=OBJECT_CATEGORIES)
    parser.add_argument("--data", nargs="+", default=[ALIGNED, RTO], choices=[ALIGNED, RTO])
    parser.add_argument("--models", nargs="*", default=None, help="only these entries (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--imm-epochs", type=int, default=500, help="alignment epochs (paper: 500)")
    parser.add_argument("--alm-epochs", type=int, default=300, help="localisation epochs (paper: 300)")
    parser.add_argument("--alignment-blur", type=float, nargs="*", default=[],
                        help="also Locc with these alignment_blur values (px), e.g. 2 (with --models: alignment runs only)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--output", default="benchmarks/output/locc_study")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    report.add_merge_option(parser)
    args = parser.parse_args(argv)
    if min(args.imm_epochs, args.alm_epochs) < 1:
        parser.error("--imm-epochs and --alm-epochs must be at least 1")
    args.command = report.command_line("benchmarks.locc_study", argv)
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the options and run the study with the cached ImageNet weights, or merge runs."""
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    use_offline_weights(pretrained=True)
    return run_study(args)


if __name__ == "__main__":
    main()
