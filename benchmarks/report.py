"""Tables (Markdown, CSV, JSON) and figures of benchmark records."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import shlex
import sys
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
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
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "seeds": seeds,
    }


@dataclasses.dataclass(frozen=True)
class Source:
    """One run merged into a study's tables: its ``--output`` folder, the command, environment and options it stored
    (``options``: ``None`` for runs written before the options were stored)."""

    directory: str
    command: str
    environment: dict[str, Any]
    options: dict[str, Any] | None = None


def stored_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a run as ``results.json`` stores them (every parsed value, defaults included), so that a later
    ``--merge`` reads the values the run used, not the defaults of the code that merges."""
    return {key: value for key, value in vars(args).items()
            if isinstance(value, str | int | float | bool | list | tuple | None)}


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces a run of ``python -m module`` with ``argv`` (default: this process's arguments)."""
    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)


def stored_arguments(command: str) -> list[str]:
    """The arguments of a stored :func:`command_line` (what follows ``python -m module``)."""
    words = shlex.split(command)
    if words[:2] != ["python", "-m"] or len(words) < 3:  # noqa: PLR2004
        msg = f"--merge: cannot read the options of the stored command {command!r}; expected 'python -m <module> ...'."
        raise ValueError(msg)
    return words[3:]


def add_merge_option(parser: argparse.ArgumentParser) -> None:
    """``--merge DIR [DIR ...]``: no fit, the study's tables over the ``results.json`` of runs (slices of one study)."""
    parser.add_argument(
        "--merge", nargs="+", default=None, metavar="DIR",
        help="fit nothing: write the study's tables into --output from the results.json in these runs' --output "
             "folders (slices of one study, e.g. one per seed), rows in the order given",
    )


@dataclasses.dataclass(frozen=True)
class MergedRuns:
    """The rows of several runs of one study, in the order the runs were given, and where they come from."""

    rows: list[dict[str, Any]]
    sources: list[Source]

    def unique(self, field: str) -> list[Any]:
        """The values of ``field`` in the rows, each once, in the order they first appear (seeds, categories...)."""
        return list(dict.fromkeys(row[field] for row in self.rows))

    def options(
        self, parse: Callable[[list[str]], argparse.Namespace], names: Sequence[str], **from_rows: Any,  # noqa: ANN401
    ) -> argparse.Namespace:
        """Options ``names`` as the runs stored them (:func:`stored_options`; for older runs, their stored commands
        parsed by the study's ``parse``, whose defaults may have changed since), plus ``from_rows``.

        Runs that differ in one of ``names`` (say ``--epochs``) do not make one study: that is an error naming both
        runs. The options that slice a study (seeds, categories, variants) come from the rows: ``from_rows``.
        """
        values: dict[str, tuple[Any, str]] = {}
        for source in self.sources:
            parsed = vars(parse(stored_arguments(source.command))) | (source.options or {})
            for name in names:
                first, directory = values.setdefault(name, (parsed[name], source.directory))
                if parsed[name] != first:
                    msg = (f"--merge: the runs differ in --{name.replace('_', '-')}: {first!r} in {directory}, "
                           f"{parsed[name]!r} in {source.directory}; only runs of one study can be merged.")
                    raise ValueError(msg)
        return argparse.Namespace(**{name: value for name, (value, _) in values.items()}, **from_rows)

    def environment(self, seeds: list[int]) -> dict[str, Any]:
        """The first run's environment with the seeds of all the merged rows."""
        return {**self.sources[0].environment, "seeds": seeds}


def merge_runs(directories: Sequence[str | Path], field: str, key: Callable[[dict[str, Any]], Hashable]) -> MergedRuns:
    """The rows (list ``field`` of each ``DIR/results.json``) of ``directories`` concatenated in the order given.

    ``key`` is a row's identity (entry, category, seed...): a row found twice is an error naming both files, as is
    a missing file, a file without ``field`` and a merged file (merge the runs it lists instead).
    """
    rows: list[dict[str, Any]] = []
    sources: list[Source] = []
    seen: dict[Hashable, Path] = {}
    for directory in map(Path, directories):
        path = directory / "results.json"
        if not path.is_file():
            msg = f"--merge: {path} does not exist; expected the results.json that a run writes into its --output."
            raise FileNotFoundError(msg)
        data = json.loads(path.read_text())
        if "sources" in data:
            msg = f"--merge: {path} is itself a merge; merge the runs it lists instead."
            raise ValueError(msg)
        if not isinstance(data.get(field), list):
            msg = f"--merge: {path} has no '{field}' list; expected the results.json of a run of this study."
            raise ValueError(msg)
        for row in data[field]:
            identity = key(row)
            if identity in seen:
                msg = f"--merge: the row {identity} is in both {seen[identity]} and {path}."
                raise ValueError(msg)
            seen[identity] = path
            rows.append(row)
        sources.append(Source(str(directory), data["command"], data["environment"], data.get("options")))
    return MergedRuns(rows, sources)


def environment_differences(sources: Sequence[Source]) -> dict[str, list[Any]]:
    """Environment entries (other than the seeds) whose values differ between ``sources``: their values, run by run."""
    keys = dict.fromkeys(key for source in sources for key in source.environment if key != "seeds")
    values = {key: [source.environment.get(key) for source in sources] for key in keys}
    return {key: column for key, column in values.items() if any(value != column[0] for value in column)}


def study_header(title: str, command: str, env: dict[str, Any], sources: Sequence[Source] = ()) -> list[str]:
    """The first Markdown sections of a study's results: its title, the command that made them, the environment.

    For a merge (``sources``), also each merged run's folder and command, and the environment entries that differ.
    """
    if not sources:
        return [f"## {title}", f"Command: `{command}`", "Environment: " + environment_text(env)]
    differences = environment_differences(sources)
    lines = [
        f"## {title} (merged from {len(sources)} runs)",
        f"Command: `{command}`",
        "Merged runs (in this order):\n\n"
        + "\n".join(f"- `{source.directory}`: `{source.command}`" for source in sources),
        "Environment (of the first run): " + environment_text(env),
    ]
    if differences:
        lines.append("The runs' environments differ: " + "; ".join(
            f"{key} " + " / ".join(map(str, column)) for key, column in differences.items()))
    return lines


def cpu_model() -> str | None:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`), if known."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or None


def machine(env: dict[str, Any]) -> str:
    """The machine of an :func:`environment`, as a record names it: the GPU, or the CPU model, threads and cores."""
    if env.get("gpu"):
        return str(env["gpu"])
    return f"{env.get('cpu') or 'CPU'}, {env.get('torch_threads')} thread(s) of {env.get('cpu_count')} cores"


def environment_text(env: dict[str, Any]) -> str:
    """``key value, key value, ...`` of an :func:`environment`."""
    return ", ".join(f"{key} {value}" for key, value in env.items())


def write_json(  # noqa: PLR0913 - what results.json holds
    output: Path, command: str, env: dict[str, Any], field: str, rows: list[Any], sources: Sequence[Source] = (),
    options: dict[str, Any] | None = None,
) -> None:
    """``output/results.json``: the command, the environment, the run's options (:func:`stored_options`, if given),
    the merged runs (if any) and the rows under ``field``. Written whole or not at all (a process killed while
    writing leaves the previous file), since other processes collect it."""
    output.mkdir(parents=True, exist_ok=True)
    merged = {"sources": [dataclasses.asdict(source) for source in sources]} if sources else {}
    stored = {} if options is None else {"options": options}
    data = {"command": command, "environment": env, **stored, **merged, field: rows}
    temporary = output / "results.json.tmp"
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(output / "results.json")


def write_study(  # noqa: PLR0913 - what results.json holds, and the text
    output: Path, command: str, env: dict[str, Any], field: str, rows: list[Any], text: str,
    sources: Sequence[Source] = (), options: dict[str, Any] | None = None,
) -> str:
    """A study's ``results.json`` (:func:`write_json`) and ``results.md`` (``text``) in ``output``; returns ``text``."""
    write_json(output, command, env, field, rows, sources, options)
    (output / "results.md").write_text(text)
    return text


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


def write_csv(records: list[Record], output: Path) -> None:
    """``output/results.csv``: one :func:`flat` row per record."""
    rows = [flat(record) for record in records]
    with (output / "results.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["entry"])
        writer.writeheader()
        writer.writerows(rows)


def write_tables(  # noqa: PLR0913 - what results.json holds
    records: list[Record], env: dict[str, Any], output: Path, title: str, command: str, sources: Sequence[Source] = (),
    options: dict[str, Any] | None = None,
) -> str:
    """Write ``results.json``, ``results.csv`` and ``results.md`` into ``output``; return the Markdown."""
    markdown = (
        "\n\n".join(study_header(title, command, env, sources))
        + "\n\nMeans over categories (metrics in %):\n\n"
        + markdown_table(records)
        + "\n\nPer category:\n\n"
        + per_category_table(records)
        + "\n"
    )
    write_study(output, command, env, "records", [dataclasses.asdict(record) for record in records], markdown, sources,
                options)
    write_csv(records, output)
    return markdown


def read_results(path: Path) -> tuple[dict[str, Any], list[Record]]:
    """The environment and the records of a runner's ``results.json``."""
    data = json.loads(path.read_text())
    return data.get("environment", {}), [Record(**record) for record in data["records"]]


def load_records(output: Path) -> list[Record]:
    """Records of an earlier (possibly unfinished) run in ``output``, for resuming."""
    path = output / "results.json"
    return read_results(path)[1] if path.is_file() else []


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
