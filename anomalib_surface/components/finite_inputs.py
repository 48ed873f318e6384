"""Images with non-finite pixels (NaN, infinity) are refused, or scored anomalous, never scored normal.

A dead sensor region or a failed decode upstream gives NaN pixels; networks turn them into NaN scores,
which every threshold comparison calls *normal*. Two pieces, used by every model of this package:

- :class:`FiniteInputPreProcessor` (the models' default pre-processor) checks each batch in the Lightning
  loops *before* resizing. ``nonfinite_inputs="error"`` (default) raises :class:`NonFiniteInputError` naming
  every such image's path and its count of non-finite pixels; ``"anomalous"`` lets test and predict images
  through to be scored anomalous. Training and validation batches always raise (a threshold or a memory
  bank must not be fitted on them).
- :func:`replace_nonfinite` / :func:`mark_nonfinite` in each torch model: non-finite pixels are replaced by
  0 before the networks, and the image's score and those pixels of its anomaly map are set to ``+inf``,
  so that any post-processor normalises them to 1 and labels the image anomalous. This part is in the
  exported graphs too: an ONNX / OpenVINO / torch export cannot raise, so it always scores such images
  anomalous, whatever ``nonfinite_inputs`` says.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import Batch, InferenceBatch
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import LightningModule, Trainer
from torchvision.transforms.v2 import Compose, Resize

from .checks import require_choice

__all__ = [
    "NONFINITE_POLICIES",
    "FiniteInputPreProcessor",
    "NonFiniteInputError",
    "check_finite_images",
    "mark_nonfinite",
    "replace_nonfinite",
]

NONFINITE_POLICIES = ("error", "anomalous")


class NonFiniteInputError(ValueError):
    """Input images hold NaN or infinite pixel values."""


def check_finite_images(images: torch.Tensor, paths: Any, stage: str) -> None:  # noqa: ANN401 - list of paths or None
    """Raise :class:`NonFiniteInputError` naming each image of ``images`` ``[B, C, H, W]`` with non-finite pixels.

    Args:
        images: The batch as loaded (before the pre-processor's transform).
        paths: ``batch.image_path`` (a sequence of ``B`` paths) or ``None``.
        stage: Named in the message (``"validation"``, ``"predict"``...).
    """
    bad_pixels = (~torch.isfinite(images)).any(dim=1).flatten(1).sum(dim=1)
    if not bad_pixels.any():
        return
    names = list(paths) if paths is not None else [f"batch image {index}" for index in range(len(images))]
    listed = "; ".join(f"'{names[index]}': {int(count)} of {images[index, 0].numel()} pixels" for index, count in enumerate(bad_pixels.tolist()) if count)
    msg = (
        f"Non-finite (NaN or infinite) pixel values in {stage} images: {listed}. Fix the images, or build the "
        'model\'s pre-processor with nonfinite_inputs="anomalous" to score such test/predict images as anomalous.'
    )
    raise NonFiniteInputError(msg)


def replace_nonfinite(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images with non-finite values set to 0, [B, 1, H, W] bool mask of pixels that had one)``."""
    bad = (~torch.isfinite(images)).any(dim=1, keepdim=True)
    return torch.where(torch.isfinite(images), images, torch.zeros_like(images)), bad


def mark_nonfinite(predictions: InferenceBatch, bad: torch.Tensor) -> InferenceBatch:
    """Set ``pred_score`` of images with a non-finite pixel and ``anomaly_map`` at those pixels to ``+inf``.

    Args:
        predictions: Raw model output, ``pred_score`` ``[B]`` and ``anomaly_map`` ``[B, 1, h, w]`` or ``[B, h, w]``.
        bad: ``[B, 1, H, W]`` mask from :func:`replace_nonfinite` (resized to the map's size if needed).
    """
    infinity = torch.tensor(float("inf"), device=bad.device)
    score, anomaly_map = predictions.pred_score, predictions.anomaly_map
    if score is not None:
        image_bad = bad.flatten(1).any(dim=1).reshape(-1, *([1] * (score.ndim - 1)))
        score = torch.where(image_bad, infinity.to(score.dtype), score)
    if anomaly_map is not None:
        bad_map = F.interpolate(bad.float(), size=anomaly_map.shape[-2:], mode="nearest") > 0
        bad_map = bad_map.reshape(bad_map.shape[0], *([1] * (anomaly_map.ndim - 3)), *bad_map.shape[-2:])
        anomaly_map = torch.where(bad_map, infinity.to(anomaly_map.dtype), anomaly_map)
    return predictions._replace(pred_score=score, anomaly_map=anomaly_map)


class FiniteInputPreProcessor(PreProcessor):
    """anomalib's ``PreProcessor`` that checks every batch for non-finite pixels first (see the module doc).

    Args:
        transform: As ``PreProcessor``'s.
        nonfinite_inputs: ``"error"`` (raise naming the files) or ``"anomalous"`` (test/predict images
            with non-finite pixels are scored anomalous). Defaults to ``"error"``.
        **kwargs: Passed to ``PreProcessor``.
    """

    def __init__(self, transform: Any = None, nonfinite_inputs: str = "error", **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(transform=transform, **kwargs)
        self.nonfinite_inputs = require_choice("nonfinite_inputs", nonfinite_inputs, NONFINITE_POLICIES)

    @classmethod
    def resize_only(cls, image_size: tuple[int, int], nonfinite_inputs: str = "error") -> FiniteInputPreProcessor:
        """Resize to ``image_size`` (antialiased), no normalisation: for the models whose networks work on ``[0, 1]``."""
        return cls(transform=Compose([Resize(image_size, antialias=True)]), nonfinite_inputs=nonfinite_inputs)

    def checkpoint_config(self) -> dict[str, Any]:
        """The parent's settings plus ``nonfinite_inputs``."""
        return {**super().checkpoint_config(), "nonfinite_inputs": self.nonfinite_inputs}

    def load_checkpoint_config(self, config: dict[str, Any]) -> None:
        """Restore the parent's settings and ``nonfinite_inputs`` (checked)."""
        super().load_checkpoint_config(config)
        if "nonfinite_inputs" in config:
            self.nonfinite_inputs = require_choice("nonfinite_inputs", config["nonfinite_inputs"], NONFINITE_POLICIES)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Batch, batch_idx: int) -> None:
        """Refuse training images with non-finite pixels, then transform."""
        check_finite_images(batch.image, batch.image_path, "training")
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Batch, batch_idx: int) -> None:
        """Refuse validation images with non-finite pixels (thresholds are fitted on them), then transform."""
        check_finite_images(batch.image, batch.image_path, "validation")
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx)

    def on_test_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Check (``"error"``), then transform."""
        if self.nonfinite_inputs == "error":
            check_finite_images(batch.image, batch.image_path, "test")
        super().on_test_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_predict_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Check (``"error"``), then transform."""
        if self.nonfinite_inputs == "error":
            check_finite_images(batch.image, batch.image_path, "predict")
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
