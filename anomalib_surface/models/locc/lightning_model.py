"""Locc: image matching and local one-class classification for misaligned parts.

Paper: Lv, Zhang, Shen, Zhang, "Unsupervised Automatic Defect Inspection based on Image Matching and
Local One-class Classification", CVPR 2023 workshops.

Training runs three phases inside one ``anomalib train``; the trainer's epochs (``max_epochs``, or
``max_steps`` in epochs) less the one-epoch centres pass are split by ``alignment_ratio``:

1. ``alignment`` (skipped when ``align=False``): the image matching module learns to warp each training
   image onto a template drawn (seeded) from the training images; ``L_reg = MSE(I_M, I_T)``.
2. ``centres`` (one epoch): the local centres ``F_C`` are the mean reduced ``F_Mixed`` of the aligned
   training images, summed over all ranks under DDP (an image the sampler repeats counts once).
3. ``localisation``: ``N_M`` learns to map features to their centres (eq. 3), and, with outlier exposure,
   generated defects at least ``margin`` away from them (eq. 5). The first localisation epoch caches the frozen
   ``F_Mixed`` of every aligned training image and of ``defect_copies`` defect-augmented copies of each
   (:class:`~anomalib_surface.models.locc.feature_cache.FeatureCache`); the later epochs train on the cache. At
   the end the ``N_M`` of the epoch that best separates the generated defects of held-out training images
   (``held_out_fraction``) is kept.

The phase is derived from the epoch and kept in the ``phase`` buffer, so it is in checkpoints.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_surface.data import SurfaceDemo
    >>> from anomalib_surface.models.locc import Locc
    >>> model = Locc(alignment_ratio=2 / 3)
    >>> Engine(max_epochs=31).fit(model, datamodule=SurfaceDemo())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import kornia
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

from anomalib_surface.components import UnseenImages, image_keys, paths_of_test_split, sum_over_processes
from anomalib_surface.components.checks import require_unnormalised_inputs
from anomalib_surface.components.phase_schedule import PhaseSchedule
from anomalib_surface.components.surface_module import SurfaceModule
from anomalib_surface.components.checks import Boolean, Choice, Integer, Items, Number, Optional, Text, check_options
from anomalib_surface.components.finite_inputs import FiniteInputPreProcessor
from anomalib_surface.components.option_limits import MAX_LEARNING_RATE, MAX_WIDTH

from .defect_generation import DefectGenerator
from .feature_cache import FeatureCache
from .loss import LocalCentreLoss, defect_positions
from .torch_model import CENTER_MODES, MAPPING_STARTS, LoccModel

__all__ = ["Locc"]

logger = logging.getLogger(__name__)


OPTION_RULES = {
    "align": Boolean(),
    "alignment_learning_rate": Number(0.0, MAX_LEARNING_RATE),
    "alignment_blur": Number(0.0, 100.0, strict=False),
    "imm_channels": Items(Integer(1, MAX_WIDTH), min_length=1, max_length=8),
    "template_seed": Integer(0, 2**63 - 1),
    "backbone": Text(),
    "pre_trained": Boolean(),
    "weights_path": Optional(Text()),
    "feature_dim": Integer(1, MAX_WIDTH),
    "hidden_dim": Integer(1, MAX_WIDTH),
    "center": Choice(CENTER_MODES),
    "projection_seed": Integer(0, 2**63 - 1),
    "mapping_start": Choice(MAPPING_STARTS),
    "learning_rate": Number(0.0, MAX_LEARNING_RATE),
    "outlier_exposure": Boolean(),
    "anomaly_probability": Number(0.0, 1.0, strict=False),
    "defect_shape": Choice(("perlin", "rectangle")),
    "anomaly_source_path": Optional(Text()),
    "margin": Number(0.0, 10.0, strict=False),
    "defect_copies": Integer(1, 64),
    "held_out_fraction": Number(0.0, 0.5, strict=False),
    "alignment_ratio": Number(0.0, 1.0, strict=False),
}
"""Checks of every constructor option (types, ranges, finite values, bounds on structural sizes), at build and
when ``load_from_checkpoint`` rebuilds the model from its saved hyper-parameters."""


class Locc(AnomalibModule, SurfaceModule):
    """Locc: spatial-transformer alignment + local one-class classification with outlier exposure.

    Args:
        align: Use the image matching module (IMM). ``False`` is the paper's "without IMM" ablation.
        alignment_ratio: Share of the trained epochs (all but the centres pass) spent aligning; the rest
            trains ``N_M`` (paper: 500 alignment and 300 localisation epochs). Ignored without ``align``.
        alignment_learning_rate: Adam learning rate of the IMM (paper: 2e-4).
        alignment_blur: Standard deviation in pixels of a Gaussian blur of ``I_M`` and ``I_T`` inside ``L_reg``
            (``0``: none, the paper's loss); a blur widens the basin of the registration loss.
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
        mapping_start: ``"scratch"``: ``N_M`` randomly initialised, as in the paper; ``"residual"``: the centres'
            projection plus a zero-initialised residual (training starts from the frozen features' distances).
        learning_rate: Adam learning rate of ``N_M`` (paper: 1e-3).
        outlier_exposure: Train with the defect generation module (DGM, eq. 5).
        anomaly_probability: Fraction of training images that receive a generated defect.
        defect_shape: ``"perlin"`` (irregular) or ``"rectangle"`` regions.
        anomaly_source_path: Folder of images for foreign-content defects; ``None`` uses other training
            images. It must not overlap the test split.
        margin: ``δ`` of eq. 5 (paper: 0.1, with ``N_M`` trained from scratch).
        defect_copies: Defect-augmented copies of each training image whose features are cached (with outlier
            exposure); an image is trained on as one of them with ``anomaly_probability``, else as itself.
        held_out_fraction: Share of the training images kept out of ``N_M``'s training; the epoch whose ``N_M``
            best ranks their generated defects (position AUROC) is kept. ``0`` keeps the last epoch.
        pre_processor: Pre-processor, or ``True`` for :meth:`configure_pre_processor`.
        post_processor: Post-processor, or ``True`` for the default.
        evaluator: Evaluator, or ``True`` for the default.
        visualizer: Visualizer, or ``True`` for the default.
    """

    phases: ClassVar[tuple[str, ...]] = ("alignment", "centres", "localisation")
    phase_buffer: ClassVar[str | None] = "phase"
    training_set_state: ClassVar[tuple[str, ...]] = ("model.imm.template", "model.alm.centres")

    def __init__(
        self,
        align: bool = True,
        alignment_ratio: float = 0.625,
        alignment_learning_rate: float = 2e-4,
        alignment_blur: float = 0.0,
        imm_channels: Sequence[int] = (32, 64, 128, 128),
        template_seed: int = 0,
        backbone: str = "resnet18",
        pre_trained: bool = True,
        weights_path: str | None = None,
        feature_dim: int = 128,
        hidden_dim: int = 256,
        center: str = "map",
        projection_seed: int = 0,
        mapping_start: str = "scratch",
        learning_rate: float = 1e-3,
        outlier_exposure: bool = True,
        anomaly_probability: float = 0.5,
        defect_shape: str = "rectangle",
        anomaly_source_path: str | None = None,
        margin: float = 0.1,
        defect_copies: int = 4,
        held_out_fraction: float = 0.1,
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
        if align and not 0 < alignment_ratio < 1:
            msg = f"alignment_ratio must be in (0, 1): both alignment and localisation train, got {alignment_ratio!r}."
            raise ValueError(msg)
        alignment_share = alignment_ratio if align else 0.0
        self.set_phase_schedule(
            PhaseSchedule({"alignment": alignment_share, "centres": None, "localisation": 1.0 - alignment_share}),
        )
        self.alignment_learning_rate = alignment_learning_rate
        self.alignment_blur = alignment_blur
        self.learning_rate = learning_rate
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
            mapping_start=mapping_start,
        )
        self.loss = LocalCentreLoss(margin=margin)
        self.defect_generator = (
            DefectGenerator(anomaly_source_path, probability=anomaly_probability, mask_shape=defect_shape)
            if outlier_exposure
            else None
        )
        self._centre_sum: torch.Tensor | None = None
        self._centre_count: torch.Tensor | None = None
        self._centre_images = UnseenImages()
        self.defect_copies = defect_copies if outlier_exposure else 0
        self.anomaly_probability = anomaly_probability
        self.held_out_every = round(1 / held_out_fraction) if held_out_fraction > 0 else 0
        self._cache: FeatureCache | None = None
        self._best_mapper: tuple[float, dict[str, torch.Tensor]] | None = None

    @classmethod
    def smoke_test_init_args(cls) -> dict[str, Any]:
        """Constructor arguments of a tiny, fast configuration for tests."""
        return {
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
        return FiniteInputPreProcessor.resize_only(image_size or (256, 256), nonfinite_inputs)

    def on_train_start(self) -> None:
        """Check the pre-processing, the foreign source folder, and draw the template on a fresh start."""
        super().on_train_start()
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
        super().on_train_epoch_start()
        if self.current_phase == "centres":
            self._centre_sum, self._centre_count = None, None
            self._centre_images = UnseenImages()
        if self.current_phase == "localisation":
            if self._cache is None:
                self._cache, self._best_mapper = FeatureCache(self.defect_copies, self.held_out_every), None
            elif self._cache.complete:
                self._cache.start_epoch()

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """One step of the current phase; returns the loss of that phase."""
        del args, kwargs  # These variables are not used.
        phase = self.current_phase
        if phase == "centres":
            return {"loss": self._accumulate_centres(batch.image, image_keys(batch.image, batch.image_path))}
        if phase == "alignment":
            name, loss = "registration_loss", self._registration_loss(batch.image)
        elif self._cache.complete:
            name, loss = "local_centre_loss", self._cached_loss(len(batch.image))
        else:
            name, loss = "local_centre_loss", self._caching_loss(batch.image)
        self.log_train_losses(loss, {name: loss}, batch_size=len(batch.image))
        return {"loss": loss}

    def _registration_loss(self, images: torch.Tensor) -> torch.Tensor:
        """``L_reg``: mean squared difference between the aligned images and the template (both blurred by ``alignment_blur``)."""
        aligned, _ = self.model.align(images)
        template = self.model.imm.template.expand_as(aligned)
        if self.alignment_blur > 0:
            side = 2 * round(3 * self.alignment_blur) + 1
            aligned, template = (
                kornia.filters.gaussian_blur2d(image, (side, side), (self.alignment_blur, self.alignment_blur), border_type="replicate")
                for image in (aligned, template)
            )
        return F.mse_loss(aligned, template)

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
        return self._zero_loss()

    def _zero_loss(self) -> torch.Tensor:
        """Zero times ``N_M``'s weights: a loss without gradient that still gives DDP its backward pass."""
        return 0.0 * sum(parameter.sum() for parameter in self.model.alm.mapper.parameters())

    def _caching_loss(self, images: torch.Tensor) -> torch.Tensor:
        """Cache ``F_Mixed`` of the aligned images and of their defect copies; eq. 3 / eq. 5 on the trained ones.

        Held-out images are cached but not trained on; a batch of held-out images only gives a zero loss (a
        backward pass is still needed under DDP, see :meth:`_accumulate_centres`).
        """
        with torch.no_grad():
            aligned, _ = self.model.align(images)
            copies = [self.defect_generator(aligned, every_image=True) for _ in range(self.defect_copies)]
            features = torch.stack([self.model.alm.mixed_features(image) for image in [aligned, *(copy for copy, _ in copies)]])
            grid = features.shape[-2:]
            clean = torch.zeros(len(aligned), *grid, device=aligned.device)
            masks = torch.stack([clean, *(defect_positions(mask, grid) for _, mask in copies)])
        rows = self._cache.add(features, masks)
        trained = torch.nonzero(~self._cache.is_held_out(rows)).flatten()
        if len(trained) == 0:
            return self._zero_loss()
        chosen = self._cache.pick_versions(len(trained), self.anomaly_probability).to(features.device)
        trained = trained.to(features.device)
        return self._mapping_loss(features[chosen, trained], masks[chosen, trained].unsqueeze(1))

    def _cached_loss(self, batch_size: int) -> torch.Tensor:
        """Eq. 3 / eq. 5 on the next ``batch_size`` cached training images, each clean or as a defect copy."""
        rows = self._cache.next_rows(batch_size)
        versions = self._cache.pick_versions(len(rows), self.anomaly_probability)
        return self._mapping_loss(*self._cache.sample(rows, versions, self.device))

    def _mapping_loss(self, mixed: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Eq. 5 on ``F_Mixed`` ``[B, C, h, w]`` with defect positions ``[B, 1, h, w]`` (eq. 3 where none)."""
        return self.loss(self.model.alm.map_features(mixed), self.model.alm.centres, masks)

    def on_train_epoch_end(self) -> None:
        """At the end of the centres phase, sum the centre statistics of all ranks and store the centres."""
        if self.current_phase == "centres":
            self._store_centres()
        if self.current_phase == "localisation":
            self._choose_mapper()
        super().on_train_epoch_end()

    def _choose_mapper(self) -> None:
        """Close the cache after its first epoch; keep ``N_M`` if it ranks held-out defects best; restore the best at the end.

        The held-out AUROC is averaged over DDP ranks, so that every rank keeps the same epoch.
        """
        if not self._cache.complete:
            self._cache.finish()
        with torch.no_grad():
            auroc = self._cache.held_out_auroc(lambda mixed: self.model.alm.distance(self.model.alm.map_features(mixed)))
        total = sum_over_processes(self.trainer, torch.tensor([auroc or 0.0, float(auroc is not None)], device=self.device))
        if total[1] > 0:
            score = float(total[0] / total[1])
            self.log("held_out_defect_auroc", score, on_epoch=True)
            if self._best_mapper is None or score > self._best_mapper[0]:
                self._best_mapper = (score, {key: value.clone() for key, value in self.model.alm.mapper.state_dict().items()})
        last_epoch = self.epochs_planned is not None and self.current_epoch + 1 >= self.epochs_planned
        if last_epoch and self._best_mapper is not None:
            logger.info("Locc: keeping N_M of the epoch with the best held-out defect AUROC %.4f.", self._best_mapper[0])
            self.model.alm.mapper.load_state_dict(self._best_mapper[1])

    def _store_centres(self) -> None:
        """Centres = the centre sums of all ranks over their image counts."""
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
        """Adam with ``N_M`` at ``learning_rate`` and the IMM at ``alignment_learning_rate``.

        Each phase only updates its own part.
        """
        groups = [{"params": self.model.alm.mapper.parameters(), "lr": self.learning_rate}]
        if self.model.imm is not None:
            groups.append({"params": self.model.imm.parameters(), "lr": self.alignment_learning_rate})
        return torch.optim.Adam(groups)

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation, no gradient clipping; the training length is the trainer's."""
        return {
            "num_sanity_val_steps": 0,
            "gradient_clip_val": 0,
        }

    @property
    def learning_type(self) -> LearningType:
        """Locc learns from defect-free images only."""
        return LearningType.ONE_CLASS

