"""Locc: image matching and local one-class classification for misaligned parts.

Paper: Lv, Zhang, Shen, Zhang, "Unsupervised Automatic Defect Inspection based on Image Matching and
Local One-class Classification", CVPR 2023 workshops.

Training runs three phases inside one ``anomalib train`` (``max_epochs`` is set accordingly):

1. ``align`` (``imm_epochs``, skipped when ``align=False``): the image matching module learns to warp
   each training image onto a template drawn (seeded) from the training images; ``L_reg = MSE(I_M, I_T)``.
2. ``centres`` (one epoch): the local centres ``F_C`` are the mean reduced ``F_Mixed`` of the aligned
   training images, summed over all ranks under DDP (an image the sampler repeats counts once).
3. ``localise`` (``alm_epochs``): ``N_M`` learns to map features to their centres (eq. 3), and, with
   outlier exposure, generated defects at least ``margin`` away from them (eq. 5).

The phase is derived from the epoch and kept in the ``model.phase`` buffer, so it is in checkpoints.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_surface.data import SurfaceDemo
    >>> from anomalib_surface.models.locc import Locc
    >>> model = Locc(imm_epochs=20, alm_epochs=10)
    >>> Engine().fit(model, datamodule=SurfaceDemo())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import IntEnum
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
from torchvision.transforms.v2 import Compose, Resize

from anomalib_surface.components import (
    UnseenImages,
    allow_unused_parameters,
    check_finite,
    image_keys,
    paths_of_test_split,
    sum_over_processes,
)
from anomalib_surface.components.checks import require_int, require_number, require_unnormalised_inputs
from anomalib_surface.components.checks import Boolean, Choice, Integer, Items, Number, Optional, Text, check_options
from anomalib_surface.components.finite_inputs import FiniteInputPreProcessor
from anomalib_surface.components.option_limits import MAX_DEPTH, MAX_EPOCHS, MAX_KERNEL, MAX_LEARNING_RATE, MAX_WEIGHT, MAX_WIDTH

from .defect_generation import DefectGenerator
from .loss import LocalCentreLoss
from .torch_model import CENTER_MODES, LoccModel

__all__ = ["Locc", "LoccPhase"]

logger = logging.getLogger(__name__)


class LoccPhase(IntEnum):
    """Training phases of Locc, in order."""

    ALIGN = 0
    CENTRES = 1
    LOCALISE = 2


OPTION_RULES = {
    "align": Boolean(),
    "imm_epochs": Integer(0, MAX_EPOCHS),
    "imm_lr": Number(0.0, MAX_LEARNING_RATE),
    "imm_channels": Items(Integer(1, MAX_WIDTH), min_length=1, max_length=8),
    "template_seed": Integer(0, 2**63 - 1),
    "backbone": Text(),
    "pre_trained": Boolean(),
    "weights_path": Optional(Text()),
    "feature_dim": Integer(1, MAX_WIDTH),
    "hidden_dim": Integer(1, MAX_WIDTH),
    "center": Choice(CENTER_MODES),
    "projection_seed": Integer(0, 2**63 - 1),
    "alm_epochs": Integer(1, MAX_EPOCHS),
    "alm_lr": Number(0.0, MAX_LEARNING_RATE),
    "outlier_exposure": Boolean(),
    "defect_probability": Number(0.0, 1.0, strict=False),
    "defect_shape": Choice(("perlin", "rectangle")),
    "foreign_source_path": Optional(Text()),
    "margin": Number(0.0, 10.0, strict=False),
}
"""Checks of every constructor option (types, ranges, finite values, bounds on structural sizes), at build and
when ``load_from_checkpoint`` rebuilds the model from its saved hyper-parameters."""


class Locc(AnomalibModule):
    """Locc: spatial-transformer alignment + local one-class classification with outlier exposure.

    Args:
        align: Use the image matching module (IMM). ``False`` is the paper's "without IMM" ablation.
        imm_epochs: Epochs of the alignment phase (paper: 500).
        imm_lr: Adam learning rate of the IMM (paper: 2e-4).
        imm_channels: Widths of the stride-2 convolution blocks of the IMM's feature network ``N_P``.
        template_seed: Seed that picks the template ``I_T`` among the defect-free training images.
        backbone: timm backbone whose stages 1-3 form ``F_Mixed`` (paper: ResNet-18).
        pre_trained: Load ImageNet weights for the backbone.
        weights_path: Local backbone weights file, for machines without network access.
        feature_dim: Channels of ``F_M`` and of the centres (``F_Mixed`` reduced by a fixed random projection).
        hidden_dim: Hidden channels of the mapping network ``N_M``.
        center: ``"map"``: one centre per position (local one-class classification); ``"vector"``: one
            global centre (the paper's ablation).
        projection_seed: Seed of the random projection that reduces ``F_Mixed`` for the centres.
        alm_epochs: Epochs of the localisation phase (paper: 300).
        alm_lr: Adam learning rate of ``N_M`` (paper: 1e-3).
        outlier_exposure: Train with the defect generation module (DGM, eq. 5).
        defect_probability: Fraction of training images that receive a generated defect.
        defect_shape: ``"perlin"`` (irregular) or ``"rectangle"`` regions.
        foreign_source_path: Folder of images for foreign-content defects; ``None`` uses other training
            images. It must not overlap the test split.
        margin: ``δ`` of eq. 5.
        pre_processor: Pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: Post-processor, or ``True`` for the default.
        evaluator: Evaluator, or ``True`` for the default.
        visualizer: Visualizer, or ``True`` for the default.
    """

    phases: ClassVar[tuple[str, ...]] = ("align", "centres", "localise")
    phase_buffer: ClassVar[str | None] = "model.phase"
    training_set_state: ClassVar[tuple[str, ...]] = ("model.imm.template", "model.alm.centres")

    def __init__(
        self,
        align: bool = True,
        imm_epochs: int = 500,
        imm_lr: float = 2e-4,
        imm_channels: Sequence[int] = (32, 64, 128, 128),
        template_seed: int = 0,
        backbone: str = "resnet18",
        pre_trained: bool = True,
        weights_path: str | None = None,
        feature_dim: int = 128,
        hidden_dim: int = 256,
        center: str = "map",
        projection_seed: int = 0,
        alm_epochs: int = 300,
        alm_lr: float = 1e-3,
        outlier_exposure: bool = True,
        defect_probability: float = 0.5,
        defect_shape: str = "perlin",
        foreign_source_path: str | None = None,
        margin: float = 0.1,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        check_options(OPTION_RULES, locals())
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if align:
            require_int("imm_epochs", imm_epochs, 1)
        require_int("alm_epochs", alm_epochs, 1)
        require_number("imm_lr", imm_lr)
        require_number("alm_lr", alm_lr)
        self.phase_epochs = {
            LoccPhase.ALIGN: imm_epochs if align else 0,
            LoccPhase.CENTRES: 1,
            LoccPhase.LOCALISE: alm_epochs,
        }
        self.imm_lr = imm_lr
        self.alm_lr = alm_lr
        self.template_seed = template_seed
        self.model = LoccModel(
            align=align,
            imm_channels=imm_channels,
            backbone=backbone,
            pre_trained=pre_trained,
            weights_path=weights_path,
            feature_dim=feature_dim,
            hidden_dim=hidden_dim,
            center=center,
            projection_seed=projection_seed,
        )
        self.loss = LocalCentreLoss(margin=margin)
        self.defect_generator = (
            DefectGenerator(foreign_source_path, probability=defect_probability, mask_shape=defect_shape)
            if outlier_exposure
            else None
        )
        self._centre_sum: torch.Tensor | None = None
        self._centre_count: torch.Tensor | None = None
        self._centre_images = UnseenImages()

    @classmethod
    def smoke_test_init_args(cls) -> dict[str, Any]:
        """Constructor arguments of a tiny, fast configuration for tests."""
        return {
            "imm_epochs": 1,
            "alm_epochs": 1,
            "imm_channels": (8, 16),
            "pre_trained": False,
            "feature_dim": 16,
            "hidden_dim": 32,
        }

    @classmethod
    def configure_pre_processor(
        cls,
        image_size: tuple[int, int] | None = None,
        nonfinite_inputs: str = "error",
    ) -> PreProcessor:
        """Resize only (default 256×256): the IMM and the DGM work on images in ``[0, 1]``.

        The backbone's ImageNet normalisation happens inside the model.
        """
        return FiniteInputPreProcessor(transform=Compose([Resize(image_size or (256, 256), antialias=True)]), nonfinite_inputs=nonfinite_inputs)

    def phase_of_epoch(self, epoch: int) -> LoccPhase:
        """Training phase of a (0-based) epoch."""
        first_epoch = 0
        for phase in LoccPhase:
            first_epoch += self.phase_epochs[phase]
            if epoch < first_epoch:
                return phase
        return LoccPhase.LOCALISE

    @property
    def phase(self) -> LoccPhase:
        """Current training phase (the last one reached, once training is over)."""
        return LoccPhase(int(self.model.phase))

    def setup(self, stage: str) -> None:
        """Let DDP accept the parameters that the current phase does not train (the IMM or ``N_M``)."""
        del stage
        allow_unused_parameters(self._trainer)

    def on_train_start(self) -> None:
        """Check the pre-processing, the foreign source folder, and draw the template on a fresh start."""
        require_unnormalised_inputs(self.pre_processor, "Locc")
        if self.defect_generator is not None:
            self.defect_generator.check_disjoint_from(paths_of_test_split(self.trainer))
        if self.model.imm is not None and not self.model.imm.has_template:
            self.model.imm.set_template(self._draw_template())

    def _draw_template(self) -> torch.Tensor:
        """Pre-processed training image ``[C, H, W]`` picked with ``template_seed`` among the defect-free ones."""
        dataset = self.trainer.train_dataloader.dataset
        samples = getattr(dataset, "samples", None)
        if samples is not None and "label_index" in samples:
            candidates = torch.nonzero(torch.from_numpy(samples.label_index.to_numpy() == 0)).flatten()
        else:
            candidates = torch.arange(len(dataset))
        if len(candidates) == 0:
            msg = "Locc needs at least one defect-free training image to draw the template from."
            raise ValueError(msg)
        generator = torch.Generator().manual_seed(self.template_seed)
        index = int(candidates[torch.randint(len(candidates), (1,), generator=generator)])
        item = dataset[index]
        image = item.image
        if self.pre_processor and self.pre_processor.transform:
            image = self.pre_processor.transform(image)
        logger.info("Locc template: training image %d (%s)", index, getattr(item, "image_path", ""))
        return image.to(self.device)

    def on_train_epoch_start(self) -> None:
        """Enter the phase of this epoch; reset the centre sums at the start of the centres phase."""
        phase = self.phase_of_epoch(self.current_epoch)
        self.model.phase.fill_(int(phase))
        if phase == LoccPhase.CENTRES:
            self._centre_sum, self._centre_count = None, None
            self._centre_images = UnseenImages()

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """One step of the current phase; returns the loss of that phase."""
        del args, kwargs  # These variables are not used.
        phase = self.phase
        if phase == LoccPhase.CENTRES:
            return {"loss": self._accumulate_centres(batch.image, image_keys(batch.image, batch.image_path))}
        if phase == LoccPhase.ALIGN:
            name, loss = "registration_loss", self._registration_loss(batch.image)
        else:
            name, loss = "local_centre_loss", self._localisation_loss(batch.image)
        check_finite({name: loss}, self.global_step)
        self.log(f"train_{name}", loss.detach(), on_epoch=True, prog_bar=True, logger=True, batch_size=len(batch.image))
        return {"loss": loss}

    def _registration_loss(self, images: torch.Tensor) -> torch.Tensor:
        """``L_reg``: mean squared difference between the aligned images and the template."""
        aligned, _ = self.model.align(images)
        return F.mse_loss(aligned, self.model.imm.template.expand_as(aligned))

    def _accumulate_centres(self, images: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Add the batch's reduced ``F_Mixed`` to the centre sums; return a zero loss.

        Images with ``[B]`` ``keys`` already counted (on any rank: ``DistributedSampler`` repeats images to
        even out the shards) are left out, so the centres equal those of one process over the same images.

        The loss is zero times ``N_M``'s weights because Lightning needs a backward pass in every step
        under DDP; the gradients are zero and ``N_M`` has no optimiser state yet, so nothing changes.
        """
        with torch.no_grad():
            aligned, _ = self.model.align(images)
            reduced = self.model.alm.reduce(self.model.alm.mixed_features(aligned))[self._centre_images.mask(keys)]
        batch_sum, batch_count = reduced.sum(dim=0), torch.tensor(float(len(reduced)), device=reduced.device)
        if self._centre_sum is None:
            self._centre_sum, self._centre_count = batch_sum, batch_count
        else:
            self._centre_sum, self._centre_count = self._centre_sum + batch_sum, self._centre_count + batch_count
        return 0.0 * sum(parameter.sum() for parameter in self.model.alm.mapper.parameters())

    def _localisation_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. 3 on aligned images, or eq. 3 + eq. 5 with generated defects."""
        with torch.no_grad():
            aligned, _ = self.model.align(images)
            masks = None
            if self.defect_generator is not None:
                aligned, masks = self.defect_generator(aligned)
        return self.loss(self.model.alm(aligned), self.model.alm.centres, masks)

    def on_train_epoch_end(self) -> None:
        """At the end of the centres phase, sum the centre statistics of all ranks and store the centres."""
        if self.phase != LoccPhase.CENTRES:
            return
        if self._centre_sum is None:
            msg = "Locc's centre pass saw no training batch; check the training dataloader and limit_train_batches."
            raise RuntimeError(msg)
        total = sum_over_processes(self.trainer, self._centre_sum)
        count = sum_over_processes(self.trainer, self._centre_count)
        self.model.alm.set_centres(total / count)
        self._centre_sum, self._centre_count = None, None

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Anomaly maps (input coordinates) and scores of a validation batch."""
        del args, kwargs  # These variables are not used.
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with the IMM at ``imm_lr`` and ``N_M`` at ``alm_lr``; each phase only updates its own part."""
        groups = [{"params": self.model.alm.mapper.parameters(), "lr": self.alm_lr}]
        if self.model.imm is not None:
            groups.append({"params": self.model.imm.parameters(), "lr": self.imm_lr})
        return torch.optim.Adam(groups)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """All phases in one run: ``max_epochs`` = alignment + 1 (centres) + localisation epochs."""
        return {
            "max_epochs": sum(self.phase_epochs.values()),
            "num_sanity_val_steps": 0,
            "gradient_clip_val": 0,
        }

    @property
    def learning_type(self) -> LearningType:
        """Locc learns from defect-free images only."""
        return LearningType.ONE_CLASS

