"""PGCN: pattern generative and contrastive networks for texture and surface anomaly detection.

The image is an ``N x N`` grid of patches. A Swin-transformer pattern generator learns (phase 1, MSE)
to predict a patch from the two patches before it in a row, in both directions; a pseudo-Siamese
comparator then learns (phase 2, generator frozen) whether a predicted and a real patch match and
where they differ, from pairs whose real patch carries a synthetic anomaly or not. At test time both
row directions are run and intersected, which removes the "spreading" of an anomaly to the patches
predicted from it.

Paper: Huang, Li, Lin, Lian, "Unsupervised Industrial Anomaly Detection via Pattern Generative and
Contrastive Networks", arXiv 2207.09792.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_surface.data import SurfaceDemo
    >>> from anomalib_surface.models.pgcn import Pgcn
    >>> model = Pgcn(generator_ratio=2 / 3)
    >>> Engine(max_epochs=75).fit(model, datamodule=SurfaceDemo(image_size=224))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchmetrics.classification import BinaryAUROC

from anomalib_surface.components import SyntheticAnomalyGenerator, paths_of_test_split
from anomalib_surface.components.checks import require_unnormalised_inputs
from anomalib_surface.components.phase_schedule import PhaseSchedule
from anomalib_surface.components.surface_module import SurfaceModule
from anomalib_surface.components.checks import Boolean, Choice, Integer, Items, Number, Optional, Size, Text, check_options
from anomalib_surface.components.memory_budget import fit_train_batch_to_memory
from anomalib_surface.components.finite_inputs import FiniteInputPreProcessor
from anomalib_surface.components.option_limits import MAX_DEPTH, MAX_LEARNING_RATE, MAX_WEIGHT, MAX_WIDTH
from anomalib_surface.metrics import evaluator_with_pixel_segmentation

from .batch_norm import PreciseBatchNorm
from .loss import ComparatorLoss
from .pairs import comparator_pairs
from .patches import SCAN_ORDERS, sample_triplets
from .pretrain import load_generator_weights
from .torch_model import PgcnModel

__all__ = ["Pgcn"]

# What lowers the memory of a training step, named when even one image does not fit.
MEMORY_OPTIONS = ("--model.triplets_per_image", "--model.embed_dim", "--model.depths")

DEFAULT_IMAGE_SIZE = (224, 224)
"""224 / N=4 = 56 px patches: token grids 56, 28, 14, 7 fit Swin's 7x7 windows exactly (256 would not)."""


def _as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):  # noqa: PLR2004
        msg = f"image_size must be a positive int or a pair (H, W) of them, got {image_size!r}."
        raise ValueError(msg)
    return size


OPTION_RULES = {
    "image_size": Optional(Size(8192)),
    "grid_size": Integer(2, 64),
    "patch_size": Integer(1, 64),
    "embed_dim": Integer(1, MAX_WIDTH),
    "depths": Items(Integer(1, MAX_DEPTH), min_length=1, max_length=8),
    "num_heads": Items(Integer(1, 256), min_length=1, max_length=8),
    "window_size": Integer(1, 64),
    "mlp_ratio": Number(0.0, 64.0),
    "comparator_width": Integer(1, MAX_WIDTH),
    "comparator_hidden": Integer(1, MAX_WIDTH),
    "bidirectional": Boolean(),
    "learning_rate": Number(0.0, MAX_LEARNING_RATE),
    "comparator_learning_rate": Number(0.0, MAX_LEARNING_RATE),
    "triplets_per_image": Integer(1, 1024),
    "mask_loss_weight": Number(0.0, MAX_WEIGHT, strict=False),
    "anomaly_source_path": Optional(Text()),
    "anomaly_probability": Number(0.0, 1.0, strict=False),
    "recalibrate_batch_norm": Boolean(),
    "generator_ratio": Number(0.0, 1.0, strict=False),
    "scan": Choice(SCAN_ORDERS),
    "generator_weights_path": Optional(Text()),
    "wrong_prediction_probability": Number(0.0, 1.0, strict=False),
    "min_visible_change": Number(0.0, 1.0, strict=False),
}
"""Checks of every constructor option (types, ranges, finite values, bounds on structural sizes), at build and
when ``load_from_checkpoint`` rebuilds the model from its saved hyper-parameters."""


class Pgcn(AnomalibModule, SurfaceModule):
    """PGCN: Swin pattern generator + pseudo-Siamese comparator, bidirectional inference.

    Training runs two phases in one ``fit``, splitting the trainer's epochs (``max_epochs``, or ``max_steps``
    in epochs) by ``generator_ratio``: ``generator`` (MSE of the generator on random strips of three adjacent
    patches, both directions), then ``comparator`` (comparator training with the generator frozen: mask BCE +
    similarity hinge, see :mod:`~anomalib_surface.models.pgcn.loss`). The current phase is the ``phase``
    buffer (saved in checkpoints) and follows the epoch, so a resumed run continues in the right phase.

    The model is built for one input size (Swin attention windows depend on it): ``image_size``, or the
    pre-processor's resize when ``image_size`` is ``None``; the resolved size is saved in the
    hyper-parameters, so ``Pgcn.load_from_checkpoint`` rebuilds the same model.

    Args:
        image_size (int | Sequence[int] | None): Input size ``(H, W)`` after pre-processing. ``None`` takes the
            pre-processor's resize, or 224x224 for the default pre-processor. ``image_size / grid_size`` must suit
            the Swin stages (see :func:`~anomalib_surface.models.pgcn.torch_model.validate_patch_grid`; the error
            lists the nearest valid sizes). Defaults to ``None``.
        grid_size (int): Patches per row and column ``N`` (>= 3; 7 suits large patterns; the intersection of
            both directions only acts on columns ``2 .. N-3``). Defaults to ``4``.
        patch_size (int): Pixel squares per Swin token. Defaults to ``1``.
        embed_dim (int): Width ``C`` of the first Swin stage (doubled per stage). Defaults to ``24``.
        depths (Sequence[int]): Swin blocks per stage. Defaults to ``(2, 2, 6, 2)``.
        num_heads (Sequence[int]): Attention heads per stage. Defaults to ``(3, 6, 12, 24)``.
        window_size (int): Swin attention window. Defaults to ``7``.
        mlp_ratio (float): Hidden width of the MLPs relative to their input. Defaults to ``4.0``.
        comparator_width (int): Channels of the comparator's first conv block. Defaults to ``16``.
        comparator_hidden (int): Units of the comparator's first fully connected layer. Defaults to ``128``.
        bidirectional (bool): Intersect the left-to-right and right-to-left results (paper); ``False`` keeps
            left to right only. Defaults to ``True``.
        scan (str): ``"raster"``: the grid is one raster-order sequence of patches (paper's Fig. 4), so both
            directions exist for all patches but the first and last two; ``"row"``: every row on its own, both
            directions exist in columns ``2 .. N-3`` only (none at ``N = 4``). Defaults to ``"raster"``.
        generator_weights_path (str | Path | None): Generator weights from
            ``python -m anomalib_surface.models.pgcn.pretrain`` (pretrained on a pool of other patterns, the
            stand-in for the paper's ImageNet + own data), loaded before training; phase 1 then fine-tunes
            them. ``None`` starts from random weights. Defaults to ``None``.
        generator_ratio (float): Share of the training epochs spent in the generator phase, the rest in the
            comparator phase (paper: 100 of 150 epochs). Defaults to ``2 / 3``.
        learning_rate (float): Adam learning rate of the generator. Defaults to ``1e-4``.
        comparator_learning_rate (float): Adam learning rate of the comparator. Defaults to ``1e-4``.
        triplets_per_image (int): Random three-patch strips drawn per training image and step. Defaults to ``8``.
        wrong_prediction_probability (float): Chance that a defect-free comparator strip becomes a
            wrong-prediction pair (a prediction from another strip's context against the clean real patch;
            see :mod:`~anomalib_surface.models.pgcn.pairs`). Defaults to ``0.25``.
        min_visible_change (float): Least fraction of a patch that visibly changed for a mismatching pair to
            be used (less visible ones become matching pairs with the clean patch). Defaults to ``0.05``.
        mask_loss_weight (float): Weight of the comparator's mask term. Defaults to ``1.0``.
        anomaly_source_path (str | Path | None): Folder of images filling the synthetic anomalies of phase 2
            (e.g. DTD); ``None`` fills them from other training images. Defaults to ``None``.
        anomaly_probability (float): Fraction of training images given a synthetic anomaly in phase 2.
            Defaults to ``0.75``.
        recalibrate_batch_norm (bool): Precise BatchNorm: at the start of every comparator epoch, reset the
            comparator's BatchNorm running statistics and accumulate them as the plain average over that
            epoch's batches (``momentum=None``; restored when training ends). The eval-mode statistics then
            belong to the final weights; the default moving average still holds much of the untrained
            comparator's statistics after a few comparator epochs, and eval-mode logits can then be unrelated to
            train-mode ones. Under DDP the statistics are rank 0's. Defaults to ``True``.
        pre_processor (PreProcessor | bool): Pre-processor; ``True`` resizes to ``image_size`` without
            normalisation (images stay in ``[0, 1]``). Defaults to ``True``.
        post_processor (PostProcessor | bool): Post-processor, e.g.
            :class:`~anomalib_surface.post_processing.bidirectional.BidirectionalIntersection`. Defaults to ``True``.
        evaluator (Evaluator | bool): Evaluator. Defaults to ``True``.
        visualizer (Visualizer | bool): Visualizer. Defaults to ``True``.
    """

    phases: ClassVar[tuple[str, ...]] = ("generator", "comparator")
    phase_buffer: ClassVar[str | None] = "phase"

    def __init__(
        self,
        image_size: int | Sequence[int] | None = None,
        grid_size: int = 4,
        patch_size: int = 1,
        embed_dim: int = 24,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        comparator_width: int = 16,
        comparator_hidden: int = 128,
        bidirectional: bool = True,
        scan: str = "raster",
        generator_weights_path: str | Path | None = None,
        generator_ratio: float = 2 / 3,
        learning_rate: float = 1e-4,
        comparator_learning_rate: float = 1e-4,
        triplets_per_image: int = 8,
        wrong_prediction_probability: float = 0.25,
        min_visible_change: float = 0.05,
        mask_loss_weight: float = 1.0,
        anomaly_source_path: str | Path | None = None,
        anomaly_probability: float = 0.75,
        recalibrate_batch_norm: bool = True,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        check_options(OPTION_RULES, locals())
        size = _as_size(image_size) if image_size is not None else None
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(size)
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.image_size = self._resolve_image_size(size)
        self.hparams["image_size"] = self.image_size
        if not 0 < generator_ratio < 1:
            msg = f"generator_ratio must be in (0, 1): both phases train, got {generator_ratio!r}."
            raise ValueError(msg)
        self.set_phase_schedule(PhaseSchedule({"generator": generator_ratio, "comparator": 1 - generator_ratio}))
        self.model = PgcnModel(
            image_size=self.image_size,
            grid_size=grid_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            comparator_width=comparator_width,
            comparator_hidden=comparator_hidden,
            direction="both" if bidirectional else "left_to_right",
            scan=scan,
        )
        if generator_weights_path is not None:
            load_generator_weights(self.model.generator, generator_weights_path)
        self.loss = ComparatorLoss(mask_weight=mask_loss_weight)
        self.augmenter = SyntheticAnomalyGenerator(
            anomaly_source_path=anomaly_source_path,
            probability=anomaly_probability,
        )
        self.learning_rate = learning_rate
        self.comparator_learning_rate = comparator_learning_rate
        self.triplets_per_image = triplets_per_image
        self.wrong_prediction_probability = wrong_prediction_probability
        self.min_visible_change = min_visible_change
        self.generator_gate = BinaryAUROC()
        self.comparator_batch_norm = PreciseBatchNorm(self.model.comparator) if recalibrate_batch_norm else None

    def _resolve_image_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        """The model's input size: ``image_size`` if given, else the pre-processor's; both must agree."""
        processed = tuple(self.input_size) if self.input_size is not None else None
        if size is not None and processed is not None and size != processed:
            msg = f"image_size {size} differs from the pre-processor's output size {processed}; make them equal."
            raise ValueError(msg)
        if size is None and processed is None:
            msg = "Pgcn needs a fixed input size: pass image_size or a pre-processor that resizes."
            raise ValueError(msg)
        return size or processed

    @classmethod
    def smoke_test_init_args(cls) -> dict[str, Any]:
        """A tiny configuration for 64x64 images (16-px patches, one Swin block per stage)."""
        return {
            "image_size": (64, 64),
            "grid_size": 4,
            "patch_size": 2,
            "embed_dim": 8,
            "depths": (1, 1, 1, 1),
            "num_heads": (1, 1, 2, 2),
            "window_size": 4,
            "comparator_width": 4,
            "comparator_hidden": 16,
            "triplets_per_image": 2,
        }

    @classmethod
    def configure_pre_processor(
        cls,
        image_size: tuple[int, int] | None = None,
        nonfinite_inputs: str = "error",
    ) -> PreProcessor:
        """Resize to ``image_size`` (default 224x224); no normalisation, images stay in ``[0, 1]``."""
        return FiniteInputPreProcessor.resize_only(image_size or DEFAULT_IMAGE_SIZE, nonfinite_inputs)

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """anomalib's default image/pixel AUROC and F1, plus pixel precision, recall, accuracy, F1 and IoU."""
        return evaluator_with_pixel_segmentation()


    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One Adam with a generator and a comparator parameter group.

        Each phase's loss only reaches its own network (the generator is frozen in phase 2), so Adam
        updates only the parameters that received gradients.
        """
        return torch.optim.Adam([
            {"params": self.model.generator.parameters(), "lr": self.learning_rate},
            {"params": self.model.comparator.parameters(), "lr": self.comparator_learning_rate},
        ])

    def on_fit_start(self) -> None:
        """Fit the training batch to the memory of both phases."""
        super().on_fit_start()
        fit_train_batch_to_memory(self, [self.generator_step, self.comparator_step], MEMORY_OPTIONS)

    def on_train_start(self) -> None:
        """Refuse normalising pre-processors and synthetic-anomaly sources that overlap the test split."""
        super().on_train_start()
        require_unnormalised_inputs(self.pre_processor, "Pgcn")
        self.augmenter.check_disjoint_from(paths_of_test_split(self.trainer))

    def on_train_epoch_start(self) -> None:
        """Enter the phase of the current epoch: only that phase's network trains (the other is frozen).

        In comparator epochs with ``recalibrate_batch_norm``, the comparator's BatchNorm statistics restart as
        the average over this epoch's batches, so training stopped after any epoch (or resumed within one)
        leaves statistics of recent weights.
        """
        super().on_train_epoch_start()
        comparator_phase = self.current_phase == "comparator"
        self.model.generator.requires_grad_(not comparator_phase)
        self.model.comparator.requires_grad_(comparator_phase)
        if comparator_phase and self.comparator_batch_norm is not None:
            self.comparator_batch_norm.start()

    def on_train_end(self) -> None:
        """Restore the comparator's BatchNorm momenta (the recalibrated statistics are kept)."""
        if self.comparator_batch_norm is not None:
            self.comparator_batch_norm.stop()

    def generator_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Phase 1: MSE of the generator on random three-patch strips of ``[B, 3, H, W]`` images."""
        strips = sample_triplets(images, self.model.patch_hw, self.triplets_per_image)
        generated = self.model.generator(strips[:, 0], strips[:, 1])
        return {"generator_mse": F.mse_loss(generated, strips[:, 2])}

    def comparator_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Phase 2: comparator loss on defect, wrong-prediction and matching pairs (:mod:`.pairs`).

        The first two patches of a strip come from the clean image and feed the frozen generator; the
        third comes from the same image with synthetic anomalies. The generator gate (patch AUROC of
        ``mean |generated - real|`` alone, defect pairs against matching pairs) is updated on the way:
        it says whether the generator's predictions separate defects before any comparator is involved.
        """
        channels = images.shape[1]
        augmented, masks = self.augmenter(images)
        stacked = torch.cat([images, augmented, masks], dim=1)
        strips = sample_triplets(stacked, self.model.patch_hw, self.triplets_per_image)
        pairs = comparator_pairs(
            self.model.generator,
            strips[:, :, :channels],
            strips[:, 2, channels : 2 * channels],
            strips[:, 2, 2 * channels :],
            self.wrong_prediction_probability,
            self.min_visible_change,
        )
        gate = pairs.kind < 2  # noqa: PLR2004 - defect (1) and matching (0) pairs
        if gate.any():
            errors = (pairs.generated[gate] - pairs.real[gate]).abs().flatten(1).mean(dim=1)
            self.generator_gate.update(errors, pairs.kind[gate])
        terms = self.loss(*self.model.comparator(pairs.generated, pairs.real), pairs.masks)
        return {
            "comparator_loss": terms["loss"],
            "comparator_mask_bce": terms["mask"],
            "comparator_match_bce": terms["match"],
        }

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """One step of the current phase.

        Raises:
            NonFiniteLossError: If a loss term is NaN or infinite (names the term and the step).
        """
        del args, kwargs  # These variables are not used.
        if self.current_phase == "generator":
            terms = self.generator_step(batch.image)
            loss = terms["generator_mse"]
        else:
            terms = self.comparator_step(batch.image)
            loss = terms.pop("comparator_loss")
        self.log_train_losses(loss, terms, batch_size=len(batch.image))
        if self.current_phase == "comparator":
            self.log("train_generator_gate_auroc", self.generator_gate, on_step=False, on_epoch=True)
        return {"loss": loss}

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Scores and anomaly maps of the validation batch."""
        del args, kwargs  # These variables are not used.
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation; the training length is the trainer's."""
        return {"num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """PGCN trains on normal images only (one-class)."""
        return LearningType.ONE_CLASS
