"""Tables (Markdown, CSV, JSON) and figures of benchmark records."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import RAW_METRIC_KEYS
from .runner import METRIC_KEYS, Record

COST_KEYS = (
    "fit_seconds",
    "ms_per_image_batch1",
    "ms_per_image_batched",
    "peak_rss_mb",
    "peak_cuda_mb",
    "parameters",
    "checkpoint_mb",
)
HEADERS = {
    "image_AUROC": "img AUROC",
    "image_F1": "img F1",
    "pixel_AUROC": "px AUROC",
    "pixel_AUPRO": "AUPRO",
    "pixel_AP": "px AP",
    "pixel_Precision": "px P",
    "pixel_Recall": "px R",
    "pixel_Accuracy": "px ACC",
    "pixel_F1": "px F1",
    "pixel_IoU": "px IoU",
    "fit_seconds": "fit s",
    "ms_per_image_batch1": "ms/img b1",
    "ms_per_image_batched": "ms/img b16",
    "peak_rss_mb": "peak RSS MB",
    "peak_cuda_mb": "peak CUDA MB",
    "parameters": "params M",
    "checkpoint_mb": "ckpt MB",
}


def environment(seeds: list[int], device: str) -> dict[str, Any]:
    """Versions, device, threads and training seeds of this run."""
    import anomalib
    import torch

    import anomalib_surface

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "anomalib": anomalib.__version__,
        "anomalib_surface": anomalib_surface.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "seeds": seeds,
    }


def study_header(title: str, command: str, env: dict[str, Any]) -> list[str]:
    """The first Markdown sections of a study's results: its title, the command that made them, the environment."""
    return [f"## {title}", f"Command: `{command}`", "Environment: " + ", ".join(f"{key} {value}" for key, value in env.items())]


def flat(record: Record) -> dict[str, Any]:
    """One CSV row: identity, metrics and costs of a record."""
    row = {key: value for key, value in dataclasses.asdict(record).items() if key not in {"metrics", "raw_metrics"}}
    row.update({key: record.metrics.get(key) for key in METRIC_KEYS})
    row.update({f"raw_{key}": record.raw_metrics.get(key) for key in RAW_METRIC_KEYS})
    return row


def format_value(key: str, value: Any) -> str:  # noqa: ANN401
    """A table cell: metrics in % (one decimal), parameters in millions, "–" for missing values."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if key == "parameters":
        return f"{value / 1e6:.2f}"
    if key in METRIC_KEYS:
        return f"{100 * value:.1f}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def mean_or_none(values: list[Any]) -> float | None:
    """Mean of the values that are not ``None``; ``None`` when there are none."""
    numbers = [value for value in values if value is not None]
    return float(np.mean(numbers)) if numbers else None


def markdown_table(records: list[Record], keys: tuple[str, ...] = METRIC_KEYS + COST_KEYS) -> str:
    """Means over categories per entry (metrics in %), failed entries with their error."""
    by_entry: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_entry[record.entry].append(record)
    lines = [
        "| model | " + " | ".join(HEADERS[key] for key in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    failures = []
    for entry, entry_records in by_entry.items():
        ok = [record for record in entry_records if record.status == "ok"]
        failures.extend(f"- {record.entry} / {record.category}: {record.error}" for record in entry_records if record.status != "ok")
        if not ok:
            lines.append(f"| {entry} | failed" + " |" * len(keys))
            continue
        rows = [flat(record) for record in ok]
        lines.append(f"| {entry} | " + " | ".join(format_value(key, mean_or_none([row[key] for row in rows])) for key in keys) + " |")
    return "\n".join(lines + ([""] + ["Failed:"] + failures if failures else []))


def per_category_table(records: list[Record], keys: tuple[str, ...] = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO", "pixel_F1")) -> str:
    """One row per entry and category with the main metrics."""
    lines = ["| model | category | " + " | ".join(HEADERS[key] for key in keys) + " |", "|---|---|" + "---:|" * len(keys)]
    for record in records:
        if record.status == "ok":
            values = " | ".join(format_value(key, record.metrics.get(key)) for key in keys)
        else:
            values = "failed" + " |" * (len(keys) - 1)
        lines.append(f"| {record.entry} | {record.category} | {values} |")
    return "\n".join(lines)


def write_tables(records: list[Record], env: dict[str, Any], output: Path, title: str, command: str) -> str:
    """Write ``results.json``, ``results.csv`` and ``results.md`` into ``output``; return the Markdown."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(
        json.dumps({"environment": env, "command": command, "records": [dataclasses.asdict(r) for r in records]}, indent=2),
    )
    rows = [flat(record) for record in records]
    with (output / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["entry"])
        writer.writeheader()
        writer.writerows(rows)
    markdown = (
        f"## {title}\n\nCommand: `{command}`\n\nEnvironment: "
        + ", ".join(f"{key} {value}" for key, value in env.items())
        + "\n\nMeans over categories (metrics in %):\n\n"
        + markdown_table(records)
        + "\n\nPer category:\n\n"
        + per_category_table(records)
        + "\n"
    )
    (output / "results.md").write_text(markdown)
    return markdown


def load_records(output: Path) -> list[Record]:
    """Records of an earlier (possibly unfinished) run in ``output``, for resuming."""
    path = output / "results.json"
    if not path.is_file():
        return []
    return [Record(**record) for record in json.loads(path.read_text())["records"]]


def prediction_grid(arrays: dict[str, np.ndarray], title: str, path: Path, rows: int = 6) -> Path:
    """Test images with ground truth, anomaly map and predicted mask side by side (defective images first)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(~arrays["labels"], kind="stable")[:rows]
    columns = ("image", "ground truth", "anomaly map", "predicted mask")
    figure, axes = plt.subplots(len(order), len(columns), figsize=(2.2 * len(columns), 2.2 * len(order)), squeeze=False)
    for row, index in enumerate(order):
        panels = (
            (arrays["images"][index], None),
            (arrays["gt_masks"][index], "gray"),
            (arrays["anomaly_maps"][index], "jet"),
            (arrays["pred_masks"][index], "gray"),
        )
        for column, (panel, cmap) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(panel, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def roc_figure(curves: dict[str, dict[str, np.ndarray]], category: str, path: Path) -> Path:
    """Image-level ROC curves of every entry on one category (``curves[entry]`` holds scores and labels)."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    figure, axis = plt.subplots(figsize=(5, 5))
    for entry, arrays in curves.items():
        labels, scores = arrays["labels"].astype(int), arrays["scores"]
        if labels.min() == labels.max():
            continue
        false_positive, true_positive, _ = roc_curve(labels, scores)
        axis.plot(false_positive, true_positive, label=f"{entry} ({100 * roc_auc_score(labels, scores):.1f})")
    axis.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title(f"image ROC, {category}")
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
