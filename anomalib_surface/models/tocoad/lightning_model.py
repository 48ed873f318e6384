"""ToCoAD: Two-Stage Contrastive Learning for Industrial Anomaly Detection.

Liang et al., arXiv 2407.01312 (IEEE TIM 2025). The paper's three stages run as four phases in one
``anomalib train``; the trainer's epochs less the last one are split by ``discriminator_ratio`` (stage 1) and,
within stage 2, by ``warm_up_ratio``:

1. ``discriminator``: D learns to segment the synthetic anomalies of G on the features of the frozen
   pre-trained F (focal loss), until its average precision on held-out synthetic anomalies stops rising.
2. ``warm_up`` (ours) then ``fine_tune``: the SimSiam heads first train with F frozen; then the stages of F that
   form the patch features are fine-tuned with SimSiam on two views of the normal images plus negative guidance
   from the frozen D (patches marked anomalous are pushed away from the normal features at the same place).
3. ``memory_bank``, the last epoch: patch features of all training images (gathered over all DDP ranks)
   form a memory bank, subsampled by greedy k-center coreset selection; images are scored PatchCore-style.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_surface.data import SurfaceDemo
    >>> from anomalib_surface.models.tocoad import Tocoad
    >>> model = Tocoad(backbone="resnet18")
    >>> Engine(max_epochs=21).fit(model, datamodule=SurfaceDemo())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.data.transforms.utils import extract_transforms_by_type
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch.nn import functional as F  # noqa: N812
from torchvision.transforms.v2 import Normalize

from anomalib_surface.components import image_keys, paths_of_test_split
from anomalib_surface.components.phase_schedule import PhaseSchedule
from anomalib_surface.components.surface_module import SurfaceModule
from anomalib_surface.components.memory_budget import fit_train_batch_to_memory
from anomalib_surface.components.checks import Boolean, Choice, Integer, Items, Number, Optional, Text, check_options
from anomalib_surface.components.finite_inputs import FiniteInputPreProcessor
from anomalib_surface.components.distributed import sum_over_processes
from anomalib_surface.components.option_limits import MAX_EPOCHS, MAX_LEARNING_RATE, MAX_WEIGHT, MAX_WIDTH
from anomalib_surface.components.photo_textures import photo_texture_folder

from .anomaly_generator import RotatedAnomalyGenerator
from .coreset import greedy_coreset
from .feature_store import PatchFeatureStore
from .held_out_check import HeldOutCheck
from .loss import FocalLoss, NegativeGuidanceLoss, SimSiamLoss
from .nearest_neighbor import INDEX_TYPES, NearestNeighborSearch
from .torch_model import TocoadModel
from .views import align_features, view_augmentation

__all__ = ["Tocoad"]

logger = logging.getLogger(__name__)
# What lowers the memory of a training step, named when even one image does not fit.
MEMORY_OPTIONS = ("--model.backbone (e.g. resnet18)", "--model.layers")


NEGATIVE_GUIDANCES = ("discriminator", "mask", "focal")
"""Readings of "negative guidance from D" (all ours, see the README): ``discriminator`` pushes the patches that the
frozen D marks anomalous away from their normal features, ``mask`` does so on the patches of the synthetic mask, and
``focal`` back-propagates the frozen D's focal loss on the synthetic anomalies into F."""
SIMSIAM_LEVELS = ("patch", "image")
"""SimSiam on every aligned patch of the two views (``patch``) or on the views' pooled features (``image``)."""
ANOMALY_SOURCES = ("photos", "training_images")
"""Fill of G's anomalies without ``anomaly_source_path``: close-ups of photographs shipped with scikit-image that
SurfaceDemo does not use (:func:`~anomalib_surface.components.photo_textures.photo_texture_folder`), or another
training image of the batch."""
AP_RISE = 1e-3
"""Smallest rise of D's held-out average precision that counts as progress in stage 1."""


OPTION_RULES = {
    "backbone": Text(),
    "layers": Items(Text(), min_length=1, max_length=8),
    "pre_trained": Boolean(),
    "weights_path": Optional(Text()),
    "coreset_sampling_ratio": Number(0.0, 1.0),
    "coreset_projection_dim": Integer(1, MAX_WIDTH),
    "num_neighbors": Integer(1, 1024),
    "nn_index": Choice(INDEX_TYPES),
    "discriminator_channels": Integer(1, MAX_WIDTH),
    "projector_dim": Integer(1, MAX_WIDTH),
    "predictor_hidden_dim": Integer(1, MAX_WIDTH),
    "focal_alpha": Number(0.0, 1.0, strict=False),
    "focal_gamma": Number(0.0, 100.0, strict=False),
    "negative_weight": Number(0.0, MAX_WEIGHT, strict=False),
    "negative_margin": Number(0.0, 100.0, strict=False),
    "negative_guidance": Choice(NEGATIVE_GUIDANCES),
    "simsiam_level": Choice(SIMSIAM_LEVELS),
    "colour_views": Boolean(),
    "rotation_degrees": Number(0.0, 180.0, strict=False),
    "anomaly_source": Choice(ANOMALY_SOURCES),
    "anomaly_source_path": Optional(Text()),
    "anomaly_probability": Number(0.0, 1.0, strict=False),
    "learning_rate": Number(0.0, MAX_LEARNING_RATE),
    "backbone_learning_rate": Number(0.0, MAX_LEARNING_RATE),
    "seed": Integer(0, 2**63 - 1),
    "discriminator_ratio": Number(0.0, 1.0, strict=False),
    "warm_up_ratio": Number(0.0, 1.0, strict=False),
    "discriminator_patience": Integer(1, MAX_EPOCHS),
}
"""Checks of every constructor option (types, ranges, finite values, bounds on structural sizes), at build and
when ``load_from_checkpoint`` rebuilds the model from its saved hyper-parameters."""


class Tocoad(AnomalibModule, SurfaceModule):
    """ToCoAD Lightning module (see the module docstring and the model README).

    Args:
        backbone: timm backbone of F. Defaults to ``"wide_resnet50_2"`` (``"resnet18"`` for CPU).
        layers: Backbone stages whose locally aggregated features form the patch features.
        pre_trained: Load ImageNet weights of the backbone.
        weights_path: Local weights file of the backbone (no download).
        discriminator_ratio: Share of the trained epochs (all but the last) spent in stage 1 (D on synthetic
            anomalies), the rest in stage 2 (fine-tuning F); 0 skips stage 1, 1 skips stage 2 (the
            frozen-feature ablation, same code path). Paper: 10 + 10 epochs.
        warm_up_ratio: Share of stage 2's epochs in which only the SimSiam heads train (F frozen), before F is
            fine-tuned (ours).
        discriminator_patience: Stage-1 epochs without a rise of D's held-out average precision after which D
            stops training (the rest of stage 1 takes no step).
        coreset_sampling_ratio: Fraction of the patch features kept in the memory bank.
        coreset_projection_dim: Random-projection dimension of the coreset selection (``None``: none).
        num_neighbors: Neighbours of PatchCore's image-score re-weighting.
        nn_index: Memory-bank search: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate faiss indexes).
        discriminator_channels: Width of D.
        projector_dim: Width of the SimSiam projector.
        predictor_hidden_dim: Bottleneck width of the SimSiam predictor.
        focal_alpha: Focal-loss weight of the anomalous class.
        focal_gamma: Focal-loss focusing exponent.
        negative_weight: Weight of the negative-guidance loss in stage 2.
        negative_margin: Cosine similarity below which anomalous patches are no longer pushed away.
        negative_guidance: Reading of D's guidance (:data:`NEGATIVE_GUIDANCES`): ``"discriminator"``,
            ``"mask"`` or ``"focal"``.
        simsiam_level: ``"patch"`` (aligned patch features, the bank's) or ``"image"`` (pooled, as SimSiam).
        colour_views: Add SimSiam's colour jitter and grayscale to the geometric view augmentations.
        rotation_degrees: Largest slight rotation of G (added to random multiples of 90°).
        anomaly_source: Fill of G's anomalies without ``anomaly_source_path``: ``"photos"`` (texture close-ups of
            photographs shipped with scikit-image) or ``"training_images"`` (another image of the batch).
        anomaly_source_path: Texture folder of G (e.g. DTD); replaces ``anomaly_source``.
        anomaly_probability: Fraction of G's images that receive an anomaly.
        learning_rate: Adam learning rate of D and of the SimSiam heads.
        backbone_learning_rate: Adam learning rate of F's fine-tuned stages (those named in ``layers``) in stage 2.
        seed: Seed of the coreset selection (the same bank on every DDP rank).
        pre_processor: Pre-processor instance or flag to use the default (resize to 256, ImageNet normalisation).
        post_processor: Post-processor instance or flag to use the default.
        evaluator: Evaluator instance or flag to use the default.
        visualizer: Visualizer instance or flag to use the default.
    """

    phases: ClassVar[tuple[str, ...]] = ("discriminator", "warm_up", "fine_tune", "memory_bank")
    phase_buffer: ClassVar[str | None] = "phase"
    training_set_state: ClassVar[tuple[str, ...]] = ("model.memory_bank",)

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] = ("layer2", "layer3"),
        pre_trained: bool = True,
        weights_path: str | None = None,
        discriminator_ratio: float = 0.5,
        warm_up_ratio: float = 0.3,
        discriminator_patience: int = 2,
        coreset_sampling_ratio: float = 0.1,
        coreset_projection_dim: int | None = 128,
        num_neighbors: int = 9,
        nn_index: str = "flat",
        discriminator_channels: int = 256,
        projector_dim: int = 2048,
        predictor_hidden_dim: int = 512,
        focal_alpha: float = 0.5,
        focal_gamma: float = 2.0,
        negative_weight: float = 1.0,
        negative_margin: float = 0.5,
        negative_guidance: str = "discriminator",
        simsiam_level: str = "patch",
        colour_views: bool = False,
        rotation_degrees: float = 10.0,
        anomaly_source: str = "photos",
        anomaly_source_path: str | None = None,
        anomaly_probability: float = 0.5,
        learning_rate: float = 1e-3,
        backbone_learning_rate: float = 1e-5,
        seed: int = 0,
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
        if not 0.0 <= discriminator_ratio <= 1.0:
            msg = f"discriminator_ratio must be in [0, 1], got {discriminator_ratio!r}."
            raise ValueError(msg)
        fine_tune_ratio = 1.0 - discriminator_ratio
        self.set_phase_schedule(
            PhaseSchedule({
                "discriminator": discriminator_ratio,
                "warm_up": fine_tune_ratio * warm_up_ratio,
                "fine_tune": fine_tune_ratio * (1.0 - warm_up_ratio),
                "memory_bank": None,
            }),
        )
        if not 0.0 < coreset_sampling_ratio <= 1.0:
            msg = f"coreset_sampling_ratio must be in (0, 1], got {coreset_sampling_ratio}."
            raise ValueError(msg)
        if coreset_projection_dim is not None and coreset_projection_dim < 1:
            msg = f"coreset_projection_dim must be a positive integer or None, got {coreset_projection_dim}."
            raise ValueError(msg)
        if nn_index not in INDEX_TYPES:
            msg = f"nn_index must be one of {INDEX_TYPES}, got '{nn_index}'."
            raise ValueError(msg)
        if negative_weight < 0:
            msg = f"negative_weight must be >= 0, got {negative_weight}."
            raise ValueError(msg)
        for name, rate in {"learning_rate": learning_rate, "backbone_learning_rate": backbone_learning_rate}.items():
            if rate <= 0:
                msg = f"{name} must be > 0, got {rate}."
                raise ValueError(msg)
        self.model = TocoadModel(
            backbone=backbone,
            layers=layers,
            pre_trained=pre_trained,
            weights_path=weights_path,
            discriminator_channels=discriminator_channels,
            projector_dim=projector_dim,
            predictor_hidden_dim=predictor_hidden_dim,
            num_neighbors=num_neighbors,
            search=NearestNeighborSearch(index_type=nn_index),
        )
        self.model.input_requirement.check_pre_processor(self)
        if anomaly_source_path is None and anomaly_source == "photos":
            anomaly_source_path = str(photo_texture_folder())
        self.generator = RotatedAnomalyGenerator(
            rotation_degrees=rotation_degrees,
            anomaly_source_path=anomaly_source_path,
            probability=anomaly_probability,
        )
        # The held-out check set: every image gets an anomaly.
        self.check_generator = RotatedAnomalyGenerator(rotation_degrees, anomaly_source_path, probability=1.0)
        self.view_augmentation = view_augmentation(colour=colour_views)
        self.focal_loss = FocalLoss(alpha=focal_alpha, gamma=focal_gamma)
        self.simsiam_loss = SimSiamLoss()
        self.negative_loss = NegativeGuidanceLoss(margin=negative_margin)
        self.negative_guidance = negative_guidance
        self.per_patch_simsiam = simsiam_level == "patch"
        self.discriminator_patience = discriminator_patience
        self.coreset_sampling_ratio = coreset_sampling_ratio
        self.coreset_projection_dim = coreset_projection_dim
        self.negative_weight = negative_weight
        self.learning_rate = learning_rate
        self.backbone_learning_rate = backbone_learning_rate
        self.seed = seed
        self.feature_store = PatchFeatureStore()
        self._bank_pending = False
        self._held_out: HeldOutCheck | None = None
        self._best_discriminator_ap = -1.0
        self._epochs_without_rise = 0
        self._discriminator_converged = False
        self._best_discriminator: dict[str, torch.Tensor] | None = None
        self._log_gradient_norms = False
        # The stages train disjoint parameter sets and stage 3 takes no optimiser step at all.
        self.automatic_optimization = False

    @classmethod
    def configure_pre_processor(
        cls,
        image_size: tuple[int, int] | None = None,
        nonfinite_inputs: str = "error",
    ) -> PreProcessor:
        """anomalib's default (resize, default 256x256, and ImageNet normalisation), refusing non-finite pixels.

        ``nonfinite_inputs``: see :class:`~anomalib_surface.components.finite_inputs.FiniteInputPreProcessor`.
        """
        default = super().configure_pre_processor(image_size)
        return FiniteInputPreProcessor(transform=default.transform, nonfinite_inputs=nonfinite_inputs)

    @classmethod
    def smoke_test_init_args(cls) -> dict[str, Any]:
        """Constructor arguments of a tiny, fast configuration (CPU, random weights)."""
        return {
            "backbone": "resnet18",
            "pre_trained": False,
            "discriminator_channels": 16,
            "projector_dim": 32,
            "predictor_hidden_dim": 8,
        }

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation (there is no memory bank before the last epoch)."""
        return {"num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """ToCoAD trains on normal images only."""
        return LearningType.ONE_CLASS


    def configure_optimizers(self) -> torch.optim.Optimizer:
        """One Adam over all stages; parameters without a gradient in a stage are left untouched by Adam."""
        heads = [*self.model.discriminator.parameters(), *self.model.projector.parameters()]
        heads += list(self.model.predictor.parameters())
        return torch.optim.Adam([
            {"params": heads, "lr": self.learning_rate},
            {"params": self.model.fine_tuned_parameters(), "lr": self.backbone_learning_rate},
        ])

    def on_fit_start(self) -> None:
        """Refuse an anomaly source folder that overlaps the test images; fit the batch to the memory of the
        training stages (stage 3 only extracts features)."""
        super().on_fit_start()
        self.generator.paste.check_disjoint_from(paths_of_test_split(self.trainer))
        fit_train_batch_to_memory(self, [self._discriminator_losses, self._fine_tuning_losses], MEMORY_OPTIONS)

    def on_train_start(self) -> None:
        """Plan the stages; validate only after the last epoch, once the memory bank exists."""
        super().on_train_start()
        # Lightning reads this attribute at every epoch end; earlier epochs have no bank to score against.
        self.trainer.check_val_every_n_epoch = self.epochs_planned

    def on_train_epoch_start(self) -> None:
        """Enter the stage of the current epoch (also right after resuming from a checkpoint)."""
        super().on_train_epoch_start()
        self.model.discriminator_frozen = self.current_phase != "discriminator"
        self.model.train()
        self._bank_pending = self.current_phase == "memory_bank"
        self._log_gradient_norms = self.current_phase == "fine_tune"
        if self.current_phase != "discriminator":
            self._restore_best_discriminator()

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Stage 1: train D; stage 2: warm up the heads, then fine-tune F; stage 3: collect patch features."""
        del args, kwargs
        if self.current_phase == "memory_bank":
            self._collect_features(batch)
            return None
        images = self._to_unit_range(batch.image)
        if self._held_out is None:
            self._held_out = self._draw_held_out_check(images)
        if self.current_phase == "discriminator":
            if self._discriminator_converged:
                return None  # D's held-out AP stopped rising: the rest of stage 1 takes no step
            losses = self._discriminator_losses(images)
        else:
            losses = self._fine_tuning_losses(images)
        loss = torch.stack(list(losses.values())).sum()
        self.log_train_losses(loss, losses, batch_size=len(images))
        if not loss.requires_grad:
            return None  # a one-image batch in the warm-up with image-level SimSiam: nothing to train
        if self._log_gradient_norms:
            self._log_gradient_norms = False
            self._log_feature_gradient_norms(losses)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.current_phase != "discriminator":
            for parameter in self.model.discriminator.parameters():
                parameter.grad = None  # D is frozen from stage 2 on (the focal reading sends gradients through it)
        optimizer.step()
        return {"loss": loss.detach()}

    def _log_feature_gradient_norms(self, losses: dict[str, torch.Tensor]) -> None:
        """Log the norm of each stage-2 term's gradient on F's fine-tuned parameters (first batch of each epoch)."""
        parameters = self.model.fine_tuned_parameters()
        for name, term in losses.items():
            if not term.requires_grad:
                continue
            gradients = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
            norm = torch.linalg.vector_norm(torch.stack([
                torch.linalg.vector_norm(gradient) for gradient in gradients if gradient is not None
            ] or [term.new_zeros(())]))
            self.log(f"train_{name}_grad_norm_F", norm, on_step=False, on_epoch=True, batch_size=1)

    def _discriminator_losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 1: focal loss of D on G's anomalies, F frozen."""
        _, augmented, masks, _ = self.generator(images)
        with torch.no_grad():
            embedding = self.model.embed(self._normalize(augmented))
        logits = F.interpolate(self.model.discriminate(embedding), size=masks.shape[-2:], mode="bilinear")
        return {"focal": self.focal_loss(logits, masks)}

    def _fine_tuning_losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 2: SimSiam on two views (one F pass per view), plus negative guidance from the frozen D.

        In the warm-up only the heads train (F's features are computed without gradient) and there is no negative
        term, which acts on F only.
        """
        warm_up = self.current_phase == "warm_up"
        view_a = self.view_augmentation(images)
        to_view_a = self.view_augmentation.transform_matrix
        view_b = self.view_augmentation(images)
        to_view_b = self.view_augmentation.transform_matrix
        rotated, augmented, masks, rotations = self.generator(view_a)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not warm_up):
            normal_a = self.model.embed(self._normalize(rotated))
            normal_b = self.model.embed(self._normalize(view_b))
        losses = {"simsiam": self._simsiam_loss(normal_a, normal_b, rotations @ to_view_a, to_view_b, images.shape[-2:])}
        if not warm_up:
            anomalous = self.model.embed(self._normalize(augmented))
            losses["negative"] = self.negative_weight * self._negative_loss(anomalous, normal_a, masks)
        return losses

    def _simsiam_loss(
        self,
        features_a: torch.Tensor,
        features_b: torch.Tensor,
        to_a: torch.Tensor,
        to_b: torch.Tensor,
        image_size: torch.Size,
    ) -> torch.Tensor:
        """SimSiam loss of two views' ``[B, C, h, w]`` features; ``to_a``, ``to_b``: ``[B, 3, 3]`` image -> view maps.

        Patch level: each view's projections are warped into the other view's frame and compared where both see
        the surface. Image level: pooled features. One head pass per view, so no batch norm mixes the views. A
        one-image batch has no image-level batch statistics: its SimSiam term is 0.
        """
        if not self.per_patch_simsiam and features_a.shape[0] == 1:
            return features_a.new_zeros(())
        z_a, p_a = self.model.simsiam(features_a, per_patch=self.per_patch_simsiam)
        z_b, p_b = self.model.simsiam(features_b, per_patch=self.per_patch_simsiam)
        if not self.per_patch_simsiam:
            return self.simsiam_loss(p_a, p_b, z_a, z_b)
        b_to_a = to_a @ torch.linalg.inv(to_b)
        z_b_in_a, valid_a = align_features(z_b, b_to_a, tuple(image_size))
        z_a_in_b, valid_b = align_features(z_a, torch.linalg.inv(b_to_a), tuple(image_size))
        return self.simsiam_loss(p_a, p_b, z_a_in_b, z_b_in_a, valid_a, valid_b)

    def _negative_loss(self, anomalous: torch.Tensor, normal: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Negative guidance of the frozen D on ``[B, C, h, w]`` features of the anomalous and normal images."""
        logits = self.model.discriminate(anomalous) if self.negative_guidance == "focal" else None
        if logits is not None:
            return self.focal_loss(F.interpolate(logits, size=masks.shape[-2:], mode="bilinear"), masks)
        if self.negative_guidance == "mask":
            selected = F.interpolate(masks, size=anomalous.shape[-2:], mode="area") >= 0.5  # noqa: PLR2004
        else:
            with torch.no_grad():
                selected = torch.sigmoid(self.model.discriminate(anomalous)) > 0.5  # noqa: PLR2004
        return self.negative_loss(anomalous, normal, selected)

    def _draw_held_out_check(self, images: torch.Tensor) -> HeldOutCheck:
        """The held-out synthetic anomalies, drawn from ``images`` with the model's seed (the training RNG untouched)."""
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            normal, anomalous, masks, _ = self.check_generator(images)
        return HeldOutCheck(normal, anomalous, masks)

    def _check_held_out(self) -> None:
        """After a trained epoch: log D's held-out AP and the bank's nearest-neighbour gap; end stage 1 once the AP
        stops rising for ``discriminator_patience`` epochs (the AP is averaged over DDP ranks, so all ranks agree)."""
        if self._held_out is None or self.current_phase == "memory_bank":
            return
        normalize = self._normalize
        ap = self._held_out.discriminator_ap(self.model, normalize)
        ap = float(sum_over_processes(self._trainer, torch.tensor(ap, device=self.device))) / self.trainer.world_size
        self.log("held_out_discriminator_AP", ap, on_epoch=True, batch_size=1)
        gap = self._held_out.nearest_neighbour_gap(self.model, normalize)
        if gap is not None:
            self.log("held_out_nn_distance_gap", gap, on_epoch=True, batch_size=1)
        logger.info("Tocoad epoch %d (%s): held-out D AP %.4f, nearest-neighbour gap %s.", self.current_epoch,
                    self.current_phase, ap, "n/a" if gap is None else f"{gap:.4f}")
        if self.current_phase != "discriminator" or self._discriminator_converged:
            return
        if ap > self._best_discriminator_ap + AP_RISE:
            self._best_discriminator_ap, self._epochs_without_rise = ap, 0
            self._best_discriminator = {k: v.detach().clone() for k, v in self.model.discriminator.state_dict().items()}
            return
        self._epochs_without_rise += 1
        if self._epochs_without_rise >= self.discriminator_patience:
            self._discriminator_converged = True
            self._restore_best_discriminator()
            logger.info("Tocoad: D's held-out AP stopped rising (best %.4f); stage 1 ends.", self._best_discriminator_ap)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep stage 1's early-stop state and the held-out check set, so a resumed run decides as a full one."""
        super().on_save_checkpoint(checkpoint)
        held_out = self._held_out
        checkpoint["tocoad_held_out"] = {
            "check_set": None if held_out is None else (held_out.normal, held_out.anomalous, held_out.masks),
            "best_ap": self._best_discriminator_ap,
            "epochs_without_rise": self._epochs_without_rise,
            "converged": self._discriminator_converged,
            "best_discriminator": self._best_discriminator,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what :meth:`on_save_checkpoint` kept (absent from checkpoints of older versions)."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("tocoad_held_out")
        if state is None:
            return
        self._held_out = None if state["check_set"] is None else HeldOutCheck(*state["check_set"])
        self._best_discriminator_ap, self._epochs_without_rise = state["best_ap"], state["epochs_without_rise"]
        self._discriminator_converged, self._best_discriminator = state["converged"], state["best_discriminator"]

    def _restore_best_discriminator(self) -> None:
        """Give D the weights of its best held-out AP (once, when stage 1 ends)."""
        if self._best_discriminator is not None:
            self.model.discriminator.load_state_dict(self._best_discriminator)
            self._best_discriminator = None

    def _collect_features(self, batch: Batch) -> None:
        """Stage 3: store the ``[B, h*w, C]`` patch features of the batch, keyed by image."""
        with torch.no_grad():
            embedding = self.model.embed(batch.image)
        self.feature_store.add(embedding.flatten(2).transpose(1, 2), image_keys(batch.image, batch.image_path))

    def on_validation_start(self) -> None:
        """Build the memory bank before the validation that closes stage 3."""
        self._fit_memory_bank()
        super().on_validation_start()

    def on_train_epoch_end(self) -> None:
        """Check the trained stages on the held-out anomalies; build the memory bank at the end of stage 3 when no
        validation ran; align the ranks' buffers."""
        self._check_held_out()
        self._fit_memory_bank()
        super().on_train_epoch_end()

    def _fit_memory_bank(self) -> None:
        """Gather all ranks' patch features, subsample them by coreset selection and store the bank."""
        if not self._bank_pending:
            return
        self._bank_pending = False
        if len(self.feature_store) == 0:
            msg = "Stage 3 saw no training images on this process; cannot build the memory bank."
            raise RuntimeError(msg)
        embedding = self.feature_store.merge()
        indices = greedy_coreset(embedding, self.coreset_sampling_ratio, self.coreset_projection_dim, self.seed)
        self.model.memory_bank = embedding[indices].contiguous()
        logger.info("Tocoad: memory bank of %d of %d patch features.", len(indices), embedding.shape[0])

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Score the batch against the memory bank."""
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    def _normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std ``[1, C, 1, 1]`` of the pre-processor's ``Normalize`` (0 and 1 without one)."""
        transform = getattr(self.pre_processor, "transform", None)
        normalize = extract_transforms_by_type(transform, Normalize)
        mean, std = (normalize[0].mean, normalize[0].std) if normalize else ([0.0], [1.0])
        shape = (1, -1, 1, 1)
        return torch.tensor(mean, device=self.device).view(shape), torch.tensor(std, device=self.device).view(shape)

    def _to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the pre-processor's normalisation: G and the view augmentations work on images in [0, 1]."""
        mean, std = self._normalization()
        return (images * std + mean).clamp(0.0, 1.0)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Apply the pre-processor's normalisation to images in [0, 1] before F."""
        mean, std = self._normalization()
        return (images - mean) / std
