"""Bidirectional intersection: keep only what two independent passes over an image both call anomalous.

Inference that runs in one direction (a patch predicted from its left neighbours, a scan line, a
recurrent pass) spreads an anomaly *downstream*: the patches right after a defect are predicted
from defective context and look anomalous too. Running the same inference in the opposite direction
spreads it the other way, so the elementwise intersection of the two results keeps the defect and
drops both tails:

.. code-block:: text

    patch           0  1  2  3  4  5  6  7
    left -> right   .  .  .  .  X  x  x  .      (4 spreads to 5-6)
    right -> left   .  .  x  x  X  .  .  .      (4 spreads to 2-3)
    intersection    .  .  .  .  X  .  .  .

Intersection is the elementwise minimum for scores and anomaly maps and the logical AND for masks
and labels (:func:`~anomalib_surface.components.intersection.intersect_predictions`).

:class:`BidirectionalIntersection` applies it as an anomalib post-processor to any model:

- **directional models** -- torch models exposing ``forward_directional(images)`` (see
  :class:`DirectionalModel`; :class:`~anomalib_surface.models.pgcn.Pgcn` does) -- give their two
  directional predictions, which are intersected. A model whose ``bidirectional`` attribute is
  ``True`` already returns the intersection from ``forward``, so nothing is recomputed;
- **any other model** gets test-time augmentation: a second pass of ``pl_module.model`` on the
  flipped image (``flip="horizontal"`` or ``"vertical"``), whose maps are flipped back and
  intersected with the first pass.

The second pass runs in the Lightning batch-end hooks (validation, test, predict), on the model's
device, *before* the parent :class:`~anomalib.post_processing.PostProcessor` calibrates thresholds
and normalisation, so these see the intersected maps. ``forward`` (used by
``AnomalibModule.forward`` and therefore by exported graphs) only receives predictions, not images:
exports of a directional model that intersects natively contain the intersection; exports of other
models contain the single pass.

Example:
    >>> from anomalib.models import Padim
    >>> from anomalib_surface.post_processing.bidirectional import BidirectionalIntersection
    >>> model = Padim(post_processor=BidirectionalIntersection(flip="horizontal"))

    From the CLI or YAML::

        model:
          class_path: Padim
          init_args:
            post_processor:
              class_path: anomalib_surface.post_processing.bidirectional.BidirectionalIntersection
              init_args:
                flip: horizontal
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from anomalib.data import Batch, InferenceBatch
from lightning import LightningModule, Trainer
from torch import nn

from anomalib_surface.components.checks import require_bool, require_choice
from anomalib_surface.components.intersection import intersect_predictions

from .checked import CheckedPostProcessor

__all__ = ["FLIP_DIMS", "BidirectionalIntersection", "DirectionalModel"]

FLIP_DIMS = {"horizontal": -1, "vertical": -2}
"""Image dimension mirrored by each ``flip`` option of :class:`BidirectionalIntersection`."""


@runtime_checkable
class DirectionalModel(Protocol):
    """A torch model that predicts every image in two directions.

    ``forward_directional(images [B, C, H, W])`` returns the two directional predictions (e.g.
    left-to-right and right-to-left). Their ``anomaly_map`` is ``[B, 1, H, W]``; their
    ``pred_score`` is ``[B]`` or per region, ``[B, ...]`` (e.g. one score per patch), in which case the
    image score is the maximum over regions *after* intersection. ``bidirectional`` says whether
    ``forward`` already returns their intersection.
    """

    bidirectional: bool

    def forward_directional(self, images: torch.Tensor) -> tuple[InferenceBatch, InferenceBatch]:
        """Predictions of ``images`` in the two directions."""
        ...


def _unflip(values: torch.Tensor | None, dim: int) -> torch.Tensor | None:
    """Mirror a spatial prediction back (``[B, ..., H, W]``); image-level values pass unchanged."""
    return values.flip(dim) if values is not None and values.ndim >= 3 else values  # noqa: PLR2004


class BidirectionalIntersection(CheckedPostProcessor):
    """Post-processor intersecting two directional passes over each image, then normalising as usual.

    See the module docstring for the two cases (directional models, flip test-time augmentation) and
    for where the second pass happens.

    Args:
        flip (str): Mirror of the test-time-augmentation pass for non-directional models:
            ``"horizontal"`` (left-right) or ``"vertical"`` (top-bottom). Defaults to ``"horizontal"``.
        use_directional (bool): Use a :class:`DirectionalModel`'s own two directions instead of the flip
            pass. Defaults to ``True``.
        **kwargs: Passed to :class:`~anomalib.post_processing.PostProcessor` (``enable_normalization``,
            ``enable_thresholding``, ``enable_threshold_matching``, ``image_sensitivity``,
            ``pixel_sensitivity``).

    Example:
        >>> import torch
        >>> from anomalib.data import InferenceBatch
        >>> left = InferenceBatch(pred_score=torch.tensor([0.9]), anomaly_map=torch.tensor([[[[0.0, 1.0, 1.0]]]]))
        >>> right = InferenceBatch(pred_score=torch.tensor([0.8]), anomaly_map=torch.tensor([[[[1.0, 1.0, 0.0]]]]))
        >>> intersect_predictions(left, right).anomaly_map
        tensor([[[[0., 1., 0.]]]])
    """

    OPTIONS = ("flip", "use_directional")

    def __init__(self, flip: str = "horizontal", use_directional: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.configure(flip=flip, use_directional=use_directional)

    def configure(self, flip: str, use_directional: bool) -> None:
        """Check both options (the constructor's and a checkpoint's) and set them; see the class arguments."""
        self.flip = require_choice("flip", flip, tuple(FLIP_DIMS))
        self.use_directional = require_bool("use_directional", use_directional)

    def second_pass(self, model: nn.Module, images: torch.Tensor) -> InferenceBatch:
        """Predict the flipped ``images`` ``[B, C, H, W]`` with ``model`` and flip the maps back."""
        dim = FLIP_DIMS[self.flip]
        flipped = model(images.flip(dim))
        return flipped._replace(
            anomaly_map=_unflip(flipped.anomaly_map, dim),
            pred_mask=_unflip(flipped.pred_mask, dim),
        )

    def intersect_batch(self, model: nn.Module, batch: Batch) -> None:
        """Replace the raw predictions of ``batch`` by the intersection of two passes (in place).

        Args:
            model: The torch model (``pl_module.model``), in eval mode, on the batch's device.
            batch: Batch holding ``image`` and the model's raw (not yet normalised) predictions.
        """
        if self.use_directional and isinstance(model, DirectionalModel):
            if model.bidirectional:
                return  # forward already returned the intersection
            with torch.no_grad():
                result = intersect_predictions(*model.forward_directional(batch.image))
        else:
            first = InferenceBatch(
                pred_score=batch.pred_score,
                pred_label=batch.pred_label,
                anomaly_map=batch.anomaly_map,
                pred_mask=batch.pred_mask,
            )
            with torch.no_grad():
                second = self.second_pass(model, batch.image)
            result = intersect_predictions(first, second)
        for field, value in result._asdict().items():
            if value is not None:
                setattr(batch, field, value)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Batch,
        *args: Any,  # noqa: ANN401
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        """Intersect, then update the threshold/normalisation statistics with the intersected maps."""
        self.intersect_batch(pl_module.model, outputs)
        super().on_validation_batch_end(trainer, pl_module, outputs, *args, **kwargs)

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Batch,
        *args: Any,  # noqa: ANN401
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        """Intersect, then normalise and threshold as the parent."""
        self.intersect_batch(pl_module.model, outputs)
        super().on_test_batch_end(trainer, pl_module, outputs, *args, **kwargs)

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Batch,
        *args: Any,  # noqa: ANN401
        **kwargs: Any,  # noqa: ANN401
    ) -> None:
        """Intersect, then normalise and threshold as the parent."""
        self.intersect_batch(pl_module.model, outputs)
        super().on_predict_batch_end(trainer, pl_module, outputs, *args, **kwargs)
