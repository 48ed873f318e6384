"""CLGAN: contrastive-learning generative adversarial network for surface anomaly detection.

A generator learns from normal images to output an anomaly-free reconstruction. It is trained with an L1
(+ SSIM) reconstruction term, a least-squares adversarial term from a PatchGAN discriminator, and a
multi-layer PatchNCE term (as in CUT) that makes each reconstructed patch's encoder features identify the
matching patch of the clean image among the other patches of that image. At test time the residual between
an image and its reconstruction is the anomaly map, segmented by
:class:`~anomalib_surface.post_processing.DoubleThresholdMorphology` (double thresholds and
morphology).

Paper: "Unsupervised surface anomaly detection of industrial products based on contrastive learning
generative adversarial network".

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_surface.data import SurfaceDemo
    >>> from anomalib_surface.models.clgan import Clgan
    >>> engine = Engine()
    >>> engine.fit(Clgan(), datamodule=SurfaceDemo())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities.types import STEP_OUTPUT

from anomalib_surface.components import SyntheticAnomalyGenerator, check_finite, paths_of_test_split
from anomalib_surface.components.checks import require_unnormalised_inputs
from anomalib_surface.components.surface_module import SurfaceModule
from anomalib_surface.components.memory_budget import fit_train_batch_to_memory
from anomalib_surface.components.checks import Boolean, Choice, Integer, Items, Number, Optional, Text, check_options
from anomalib_surface.components.finite_inputs import FiniteInputPreProcessor
from anomalib_surface.components.phase_schedule import PhaseSchedule
from anomalib_surface.components.option_limits import MAX_DEPTH, MAX_LEARNING_RATE, MAX_WEIGHT, MAX_WIDTH
from anomalib_surface.metrics import evaluator_with_pixel_segmentation
from anomalib_surface.post_processing import VALIDATION_FACTOR_GRID, DoubleThresholdMorphology

from .anomaly_map import CHANNEL_REDUCTIONS
from .loss import NCE_NEGATIVES, ClganLoss
from .torch_model import GENERATORS, NORMS, ClganModel

logger = logging.getLogger(__name__)
# What lowers the memory of a training step, named when even one image does not fit.
MEMORY_OPTIONS = ("--model.ngf", "--model.n_blocks", "--model.num_patches")

__all__ = ["Clgan"]


OPTION_RULES = {
    "generator": Choice(GENERATORS),
    "ngf": Integer(1, MAX_WIDTH),
    "n_downsampling": Integer(0, 8),
    "n_blocks": Integer(0, MAX_DEPTH),
    "latent_channels": Integer(1, MAX_WIDTH),
    "norm": Choice(NORMS),
    "ndf": Integer(1, MAX_WIDTH),
    "n_layers_d": Integer(1, 8),
    "lambda_rec": Number(0.0, MAX_WEIGHT, strict=False),
    "lambda_ssim": Number(0.0, MAX_WEIGHT, strict=False),
    "lambda_adv": Number(0.0, MAX_WEIGHT, strict=False),
    "lambda_nce": Number(0.0, MAX_WEIGHT, strict=False),
    "lambda_kl": Number(0.0, MAX_WEIGHT, strict=False),
    "nce_layers": Items(Integer(0, MAX_DEPTH), min_length=1),
    "nce_t": Number(0.0, 100.0),
    "nce_negatives": Choice(NCE_NEGATIVES),
    "num_patches": Integer(1, 65536),
    "nce_mlp_dim": Integer(1, MAX_WIDTH),
    "learning_rate": Number(0.0, MAX_LEARNING_RATE),
    "discriminator_learning_rate": Optional(Number(0.0, MAX_LEARNING_RATE)),
    "warmup_ratio": Number(0.0, 1.0, strict=False),
    "decay_ratio": Number(0.0, 1.0, strict=False),
    "beta1": Number(0.0, 1.0, strict=False),
    "beta2": Number(0.0, 1.0, strict=False),
    "corrupt_inputs": Boolean(),
    "anomaly_source_path": Optional(Text()),
    "anomaly_probability": Number(0.0, 1.0, strict=False),
    "channel_reduction": Choice(CHANNEL_REDUCTIONS),
    "sigma": Number(0.0, 100.0, strict=False),
}
"""Checks of every constructor option (types, ranges, finite values, bounds on structural sizes), at build and
when ``load_from_checkpoint`` rebuilds the model from its saved hyper-parameters."""


class Clgan(AnomalibModule, SurfaceModule):
    """CLGAN: reconstruction GAN with PatchNCE contrastive learning; anomaly map = reconstruction residual.

    Setting ``lambda_adv=0`` removes the discriminator and its optimiser, ``lambda_nce=0`` removes the
    PatchNCE projection heads; with both at 0 (and ``lambda_ssim=0``) Clgan is a plain L1 autoencoder with the
    same generator. ``generator="conv_ae"`` / ``"vae"`` swap in the paper's baselines (UDCAE-like
    autoencoder, VAE; with ``lambda_rec=0, lambda_ssim=1`` the VAE is VAE-SSIM).

    Training length comes from the trainer (``--trainer.max_epochs``; the paper's 200 epochs are in
    ``configs/model/clgan.yaml``), split into three phases (the ``phase`` buffer, saved in checkpoints):

    - ``warmup`` (``warmup_ratio`` of the epochs): the generator learns from the reconstruction terms only
      (L1, SSIM, KL); the discriminator and the PatchNCE heads train on its outputs without acting on it, so
      that neither starts from random weights when their terms are switched on;
    - ``full``: every term with a non-zero weight, at constant learning rates;
    - ``decay`` (``decay_ratio`` of the epochs): the same, with CUT's linear decay of both learning rates
      (in the ``i``-th of ``n`` decay epochs, factor ``1 - (i + 1) / (n + 1)``).

    Args:
        generator (str): ``"resnet"`` (CUT's ResNet generator, CLGAN), ``"conv_ae"`` (plain convolutional
            autoencoder, UDCAE-like) or ``"vae"`` (convolutional VAE). Defaults to ``"resnet"``.
        ngf (int): Generator stem width (doubles at each downsampling). Defaults to ``64``.
        n_downsampling (int): Generator stride-2 stages; image sides must be divisible by
            ``2**n_downsampling``. Defaults to ``2``.
        n_blocks (int): Generator residual blocks at the bottleneck (``"resnet"``). Defaults to ``6``.
        latent_channels (int): Bottleneck channels of ``"conv_ae"`` / ``"vae"``. Defaults to ``16``.
        norm (str): ``"instance"`` or ``"batch"`` normalisation in both networks. Defaults to ``"instance"``.
        ndf (int): Discriminator width. Defaults to ``64``.
        n_layers_d (int): Discriminator stride-2 convs. Defaults to ``3``.
        lambda_rec (float): Weight of the L1 reconstruction term. Defaults to ``10.0``.
        lambda_ssim (float): Weight of the SSIM term (0 skips it). Defaults to ``1.0``.
        lambda_adv (float): Weight of the least-squares adversarial term (0 skips it and the discriminator).
            Defaults to ``1.0``.
        lambda_nce (float): Weight of the PatchNCE term (0 skips it and the projection heads). Defaults to ``0.1``
            (chosen on held-out data, see the README).
        lambda_kl (float): Weight of the VAE's KL term (``generator="vae"`` only). Defaults to ``1.0``.
        nce_layers (Sequence[int]): Generator encoder stages used by PatchNCE: 0 = stem,
            ``1..n_downsampling`` = downsampling convs, then the residual blocks. Defaults to ``(0, 1, 2, 3, 7)``
            (stem, both downsamplings, first and fifth residual block, like CUT's ``0,4,8,12,16``).
        nce_t (float): PatchNCE temperature. Defaults to ``0.07``.
        nce_negatives (str): PatchNCE negatives from the other sampled locations of the same image (``"image"``,
            CUT's default) or of the whole batch (``"batch"``). Defaults to ``"image"``.
        num_patches (int): Locations sampled per NCE layer and image. Defaults to ``256``.
        nce_mlp_dim (int): Width of the 2-layer projection heads. Defaults to ``256``.
        learning_rate (float): Adam learning rate of the generator and the PatchNCE heads. Defaults to ``2e-4``.
        discriminator_learning_rate (float | None): Adam learning rate of the discriminator; ``None`` takes
            ``learning_rate``. Defaults to ``None``.
        warmup_ratio (float): Share of the epochs in the reconstruction-only warm-up. Defaults to ``0.1``.
        decay_ratio (float): Share of the epochs, at the end, over which the learning rates decay linearly
            (CUT: half). ``warmup_ratio + decay_ratio <= 1``. Defaults to ``0.5``.
        beta1 (float): Adam ``beta1``. Defaults to ``0.5``.
        beta2 (float): Adam ``beta2``. Defaults to ``0.999``.
        corrupt_inputs (bool): Train on inputs corrupted with synthetic anomalies and clean targets, so that
            the generator learns to remove anomalies instead of copying them. Defaults to ``True``.
        anomaly_source_path (str | None): Folder of images that fill the synthetic anomalies (e.g. DTD);
            ``None`` fills them from the training batch itself. Only used with ``corrupt_inputs``.
            Defaults to ``None``.
        anomaly_probability (float): Fraction of training images that get a synthetic anomaly.
            Defaults to ``0.5``.
        channel_reduction (str): ``"max"`` or ``"mean"`` over the colour channels of ``|x - G(x)|``.
            Defaults to ``"max"``.
        sigma (float): Gaussian smoothing of the anomaly map in pixels (0 disables). Defaults to ``4.0``.
        pre_processor (PreProcessor | bool): Defaults to a 256x256 resize without normalisation.
        post_processor (PostProcessor | bool): Defaults to :class:`DoubleThresholdMorphology` with
            validated thresholds (see :meth:`configure_post_processor`).
        evaluator (Evaluator | bool): Defaults to anomalib's image/pixel AUROC and F1 plus pixel
            precision, recall, accuracy, F1 and IoU.
        visualizer (Visualizer | bool): Defaults to anomalib's image visualizer.
    """

    phases: ClassVar[tuple[str, ...]] = ("warmup", "full", "decay")
    phase_buffer: ClassVar[str | None] = "phase"
    training_set_state: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        generator: str = "resnet",
        ngf: int = 64,
        n_downsampling: int = 2,
        n_blocks: int = 6,
        latent_channels: int = 16,
        norm: str = "instance",
        ndf: int = 64,
        n_layers_d: int = 3,
        lambda_rec: float = 10.0,
        lambda_ssim: float = 1.0,
        lambda_adv: float = 1.0,
        lambda_nce: float = 0.1,
        lambda_kl: float = 1.0,
        nce_layers: Sequence[int] = (0, 1, 2, 3, 7),
        nce_t: float = 0.07,
        nce_negatives: str = "image",
        num_patches: int = 256,
        nce_mlp_dim: int = 256,
        learning_rate: float = 2e-4,
        discriminator_learning_rate: float | None = None,
        warmup_ratio: float = 0.1,
        decay_ratio: float = 0.5,
        beta1: float = 0.5,
        beta2: float = 0.999,
        corrupt_inputs: bool = True,
        anomaly_source_path: str | None = None,
        anomaly_probability: float = 0.5,
        channel_reduction: str = "max",
        sigma: float = 4.0,
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
        _check_training_options(
            num_patches=num_patches,
            learning_rate=learning_rate,
            beta1=beta1,
            beta2=beta2,
            anomaly_probability=anomaly_probability,
        )
        self.loss = ClganLoss(
            lambda_rec=lambda_rec,
            lambda_ssim=lambda_ssim,
            lambda_adv=lambda_adv,
            lambda_nce=lambda_nce,
            nce_t=nce_t,
            nce_negatives=nce_negatives,
            lambda_kl=lambda_kl if generator == "vae" else 0.0,
        )
        if self.loss.uses_nce and not nce_layers:
            msg = "nce_layers must name at least one encoder stage when lambda_nce > 0."
            raise ValueError(msg)
        self.model = ClganModel(
            generator=generator,
            ngf=ngf,
            n_downsampling=n_downsampling,
            n_blocks=n_blocks,
            latent_channels=latent_channels,
            norm=norm,
            ndf=ndf,
            n_layers_d=n_layers_d,
            use_discriminator=self.loss.uses_adversarial,
            nce_layers=nce_layers if self.loss.uses_nce else (),
            nce_mlp_dim=nce_mlp_dim,
            channel_reduction=channel_reduction,
            sigma=sigma,
        )
        self.model.input_requirement.check_pre_processor(self)
        if anomaly_source_path is not None and not corrupt_inputs:
            logger.warning("anomaly_source_path is ignored because corrupt_inputs=False.")
        self.corrupt_inputs = corrupt_inputs
        self.anomaly_source_path = anomaly_source_path
        self.anomaly_probability = anomaly_probability
        self.corruptor: SyntheticAnomalyGenerator | None = None
        self.num_patches = num_patches
        self.learning_rate = learning_rate
        self.discriminator_learning_rate = discriminator_learning_rate or learning_rate
        self.betas = (beta1, beta2)
        self.automatic_optimization = False
        if warmup_ratio + decay_ratio > 1 + 1e-9:
            msg = f"warmup_ratio + decay_ratio must be <= 1, got {warmup_ratio} + {decay_ratio}."
            raise ValueError(msg)
        full_ratio = max(0.0, 1.0 - warmup_ratio - decay_ratio)
        self.set_phase_schedule(PhaseSchedule({"warmup": warmup_ratio, "full": full_ratio, "decay": decay_ratio}))

    @classmethod
    def smoke_test_init_args(cls) -> dict[str, Any]:
        """Constructor arguments of a tiny, fast configuration for tests and conformance runs."""
        return {
            "ngf": 8,
            "n_downsampling": 2,
            "n_blocks": 1,
            "ndf": 8,
            "n_layers_d": 2,
            "nce_layers": (0, 1, 3),
            "num_patches": 16,
            "nce_mlp_dim": 16,
        }

    @classmethod
    def configure_pre_processor(
        cls,
        image_size: tuple[int, int] | None = None,
        nonfinite_inputs: str = "error",
    ) -> PreProcessor:
        """Resize to ``image_size`` (default 256x256); no normalisation, images stay in ``[0, 1]``."""
        return FiniteInputPreProcessor.resize_only(image_size or (256, 256), nonfinite_inputs)

    def configure_post_processor(self) -> PostProcessor:
        """Double thresholds and morphology (the paper's segmentation), with thresholds from validation.

        ``mean``/``std`` come from the defect-free validation pixels and the high factor from
        :data:`VALIDATION_FACTOR_GRID` by validation pixel F1, instead of the paper's per-image statistics (the
        README compares both with anomalib's F1-adaptive threshold).
        """
        return DoubleThresholdMorphology(threshold_statistics="normal", factor_grid=VALIDATION_FACTOR_GRID)

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """anomalib's default image/pixel AUROC and F1, plus pixel precision, recall, accuracy, F1 and IoU."""
        return evaluator_with_pixel_segmentation()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for generator + projection heads, and (if ``lambda_adv > 0``) Adam for the discriminator."""
        generator_params = list(self.model.generator.parameters())
        if self.model.patch_heads is not None:
            generator_params += list(self.model.patch_heads.parameters())
        optimizers = [torch.optim.Adam(generator_params, lr=self.learning_rate, betas=self.betas)]
        if self.model.discriminator is not None:
            discriminator_params = self.model.discriminator.parameters()
            optimizers.append(torch.optim.Adam(discriminator_params, lr=self.discriminator_learning_rate, betas=self.betas))
        return optimizers

    def learning_rate_factor(self) -> float:
        """Factor of both learning rates in the current epoch: 1, or CUT's linear decay in the ``decay`` phase.

        In the ``i``-th (0-based) of ``n`` decay epochs it is ``1 - (i + 1) / (n + 1)``, so the last epoch still
        trains at ``1 / (n + 1)`` of the rate. It depends on the epoch only, so a resumed run continues it.
        """
        if self.current_phase != "decay" or self.epochs_planned is None:
            return 1.0
        plan = self.phase_schedule.epochs(self.epochs_planned)
        decay_epoch = min(self.current_epoch - plan["warmup"] - plan["full"], plan["decay"] - 1)
        return 1.0 - (decay_epoch + 1) / (plan["decay"] + 1)

    def on_train_epoch_start(self) -> None:
        """Enter the epoch's phase and set the learning rates of both optimisers for it."""
        super().on_train_epoch_start()
        factor = self.learning_rate_factor()
        opt_g, opt_d = self._optimizers()
        for optimizer, base in ((opt_g, self.learning_rate), (opt_d, self.discriminator_learning_rate)):
            if optimizer is not None:
                for group in optimizer.param_groups:
                    group["lr"] = base * factor

    def setup(self, stage: str) -> None:
        """Build the synthetic-anomaly generator when fitting with ``corrupt_inputs``.

        It is built here rather than in ``__init__`` so that loading a checkpoint for inference never needs
        the anomaly source folder; a missing or empty folder raises ``FileNotFoundError`` when fitting starts.
        """
        super().setup(stage)
        if stage == "fit" and self.corrupt_inputs and self.corruptor is None:
            self.corruptor = SyntheticAnomalyGenerator(
                anomaly_source_path=self.anomaly_source_path,
                probability=self.anomaly_probability,
            )

    def on_fit_start(self) -> None:
        """Fit the training batch to the memory: a generator step at the default 256 px keeps large activations."""
        super().on_fit_start()
        fit_train_batch_to_memory(self, [self._generator_activations], MEMORY_OPTIONS)

    def _generator_activations(self, images: torch.Tensor) -> torch.Tensor:
        """The generator loss of a training step on ``images`` ``[B, C, H, W]`` (no optimiser step)."""
        features = self.model.generator.encode(images)
        reconstruction = self.model.generator.decode(features[-1])
        return self.loss.weighted_sum(self._generator_terms(images, reconstruction, features, lambda: features))

    def _generator_terms(
        self,
        target: torch.Tensor,
        reconstruction: torch.Tensor,
        input_features: list[torch.Tensor],
        target_features: Callable[[], list[torch.Tensor]],
        warmup: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Generator loss terms of ``reconstruction`` ``[B, C, H, W]`` against ``target``.

        ``input_features`` are the encoder stages of the generator's input (the last one is the latent, whose
        KL term a VAE adds); ``target_features()`` (those of ``target``) is only called when PatchNCE is on. In
        ``warmup`` the adversarial term is left out and PatchNCE only trains the heads (see :meth:`_nce_embeddings`).
        """
        discriminator = self.model.discriminator
        queries, keys = [], []
        if self.model.patch_heads is not None:
            queries, keys = self._nce_embeddings(reconstruction, target_features(), train_generator=not warmup)
        generator = self.model.generator
        return self.loss.generator_terms(
            target,
            reconstruction,
            fake_logits=discriminator(reconstruction) if discriminator is not None and not warmup else None,
            nce_queries=queries,
            nce_keys=keys,
            kl_divergence=generator.kl_divergence(input_features[-1]) if getattr(generator, "variational", False) else None,
            adversarial=not warmup,
        )

    def on_train_start(self) -> None:
        """Refuse normalising pre-processors and synthetic-anomaly sources that overlap the test split."""
        super().on_train_start()
        require_unnormalised_inputs(self.pre_processor, "Clgan")
        if self.corruptor is not None:
            self.corruptor.check_disjoint_from(paths_of_test_split(self.trainer))

    def _nce_embeddings(
        self,
        reconstruction: torch.Tensor,
        target_features: list[torch.Tensor],
        train_generator: bool = True,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """PatchNCE queries (reconstruction) and keys (clean image) at shared random locations, ``[B, P, D]`` each.

        Keys are projected without autograd: the loss detaches them (as CUT), so nothing they would keep for a
        backward pass is needed. With ``train_generator=False`` (warm-up) the reconstruction's encoder features
        are computed without autograd too, so the term only trains the projection heads.
        """
        layers = self.model.nce_layers
        heads = self.model.patch_heads
        with torch.no_grad():
            keys, patch_ids = heads([target_features[layer] for layer in layers], self.num_patches)
        with torch.set_grad_enabled(train_generator and torch.is_grad_enabled()):
            reconstruction_features = self.model.generator.encode(reconstruction)
        queries, _ = heads([reconstruction_features[layer] for layer in layers], self.num_patches, patch_ids)
        return queries, keys

    def _features_without_grad(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encoder stages of ``images`` without autograd (PatchNCE keys of the clean target)."""
        with torch.no_grad():
            return self.model.generator.encode(images)

    def _optimizers(self) -> tuple[LightningOptimizer, LightningOptimizer | None]:
        """The generator optimiser and the discriminator optimiser (``None`` without adversarial term)."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return optimizers[0], optimizers[1] if len(optimizers) > 1 else None

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """One discriminator update (if adversarial), then one generator + projection-head update.

        Raises:
            NonFiniteLossError: If a loss term is NaN or infinite (names the term and the step).
        """
        del args, kwargs  # These variables are not used.
        target = batch.image
        self.model.input_requirement.check_batch(target)
        inputs = self.corruptor(target)[0] if self.corruptor is not None else target
        generator, discriminator = self.model.generator, self.model.discriminator
        input_features = generator.encode(inputs)
        reconstruction = generator.decode(input_features[-1])
        opt_g, opt_d = self._optimizers()
        logs = {}

        if discriminator is not None:
            d_loss = self.loss.discriminator_loss(discriminator(target), discriminator(reconstruction.detach()))
            check_finite({"discriminator": d_loss}, self.global_step)
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
            logs["discriminator_loss"] = d_loss.detach()

        with self.toggled_optimizer(opt_g):
            terms = self._generator_terms(
                target,
                reconstruction,
                input_features,
                lambda: input_features if inputs is target else self._features_without_grad(target),
                warmup=self.current_phase == "warmup",
            )
            g_loss = self.loss.weighted_sum(terms)
            check_finite({**terms, "generator": g_loss}, self.global_step)
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()

        logs |= {f"{name}_loss": term.detach() for name, term in terms.items()}
        self.log_train_losses(g_loss, logs, batch_size=len(target))
        return {"loss": g_loss.detach()}

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Residual-based anomaly maps and scores merged into the batch."""
        del args, kwargs  # These variables are not used.
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping (manual optimisation), no sanity validation; the length is the trainer's."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """Trained on normal images only (``LearningType.ONE_CLASS``)."""
        return LearningType.ONE_CLASS


def _check_training_options(
    num_patches: int,
    learning_rate: float,
    beta1: float,
    beta2: float,
    anomaly_probability: float,
) -> None:
    """Raise ``ValueError`` naming the first training option out of range."""
    if isinstance(num_patches, bool) or not isinstance(num_patches, int) or num_patches < 1:
        msg = f"num_patches must be an integer >= 1, got {num_patches!r}."
        raise ValueError(msg)
    if not learning_rate > 0:
        msg = f"learning_rate must be > 0, got {learning_rate}."
        raise ValueError(msg)
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= beta < 1:
            msg = f"{name} must be in [0, 1), got {beta}."
            raise ValueError(msg)
    if not 0 <= anomaly_probability <= 1:
        msg = f"anomaly_probability must be in [0, 1], got {anomaly_probability}."
        raise ValueError(msg)
