"""Dmp: surface anomaly detection with realistic synthetic anomalies and defect-map prediction.

Paper: Peng, Zheng, Zhao, Zheng, "Industrial Product Surface Anomaly Detection with Realistic Synthetic
Anomalies Based on Defect Map Prediction", Sensors 2024, 24(1):264.

Training adds realistic synthetic defects (:class:`~.realistic_anomaly.RealisticAnomalyGenerator`)
to normal images; a reconstruction network learns to restore the clean image (L2 + SSIM + deep-feature
consistency) and a large-kernel defect prediction network learns the defect mask from the input and its
reconstruction (focal + smooth L1). At inference the anomaly map is the predicted defect map and the
image score its mean-filtered maximum. The large-kernel convolutions are re-parameterised into single
kernels before every export.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_surface.data import SurfaceDemo
    >>> from anomalib_surface.models.dmp import Dmp
    >>> model = Dmp(reconstruction_width=16, prediction_width=16, depth=3)
    >>> engine = Engine(max_epochs=50)
    >>> engine.fit(model, datamodule=SurfaceDemo(category="brick", image_size=128))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.data.transforms.utils import extract_transforms_by_type
from anomalib.metrics import AUPR, Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import Visualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torchvision.transforms.v2 import Normalize

from anomalib_surface.components import paths_of_test_split
from anomalib_surface.components.phase_schedule import epoch_budget
from anomalib_surface.components.surface_module import SurfaceModule
from anomalib_surface.components.memory_budget import fit_train_batch_to_memory
from anomalib_surface.components.checks import Boolean, Choice, Integer, Items, Number, Optional, Text, check_options
from anomalib_surface.components.finite_inputs import FiniteInputPreProcessor
from anomalib_surface.components.option_limits import MAX_KERNEL, MAX_LEARNING_RATE, MAX_WEIGHT, MAX_WIDTH
from anomalib_surface.metrics.segmentation import default_test_metrics

from .feature_extractor import FEATURE_EXTRACTORS, EncoderFeatures, build_feature_extractor
from .loss import DmpLoss
from .synthesis import ANOMALY_SYNTHESES, build_anomaly_generator
from .torch_model import DmpModel

__all__ = ["Dmp"]

# What lowers the memory of a training step, named when even one image does not fit.
MEMORY_OPTIONS = ("--model.reconstruction_width", "--model.prediction_width", "--model.depth")


OPTION_RULES = {
    "anomaly_synthesis": Choice(ANOMALY_SYNTHESES),
    "anomaly_source_path": Optional(Text()),
    "anomaly_probability": Number(0.0, 1.0, strict=False),
    "opacity_range": Items(Number(0.0, 1.0, strict=False), length=2),
    "soft_edge_sigma": Number(0.0, 100.0, strict=False),
    "match_lighting": Number(0.0, 1.0, strict=False),
    "reconstruction_width": Integer(1, MAX_WIDTH),
    "prediction_width": Integer(1, MAX_WIDTH),
    "depth": Integer(1, 8),
    "kernel_size": Integer(1, MAX_KERNEL),
    "small_kernel_size": Integer(1, MAX_KERNEL),
    "fft_min_kernel_size": Integer(1, 10**6),
    "feature_consistency": Boolean(),
    "feature_extractor": Choice(FEATURE_EXTRACTORS),
    "ema_momentum": Number(0.0, 1.0, strict=False),
    "backbone": Text(),
    "pre_trained": Boolean(),
    "l2_weight": Number(0.0, MAX_WEIGHT, strict=False),
    "ssim_weight": Number(0.0, MAX_WEIGHT, strict=False),
    "feature_weight": Number(0.0, MAX_WEIGHT, strict=False),
    "score_filter_size": Integer(1, MAX_KERNEL),
    "learning_rate": Number(0.0, MAX_LEARNING_RATE),
    "lr_milestones": Items(Number(0.0, 1.0)),
}
"""Checks of every constructor option (types, ranges, finite values, bounds on structural sizes), at build and
when ``load_from_checkpoint`` rebuilds the model from its saved hyper-parameters."""


def pixel_ap() -> AUPR:
    """Pixel average precision of the anomaly map (logged as ``pixel_AUPR``; skipped without masks)."""
    return AUPR(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False)


class Dmp(AnomalibModule, SurfaceModule):
    """Dmp: realistic synthetic anomalies, feature-consistent reconstruction, large-kernel defect maps.

    Training length comes from the trainer (paper: 700 epochs, in ``configs/model/dmp.yaml``).


    Args:
        anomaly_source_path: Folder of anomaly source images (e.g. DTD, or crops of real defects). ``None``
            (default) fills synthetic defects from the training images themselves. A folder overlapping the
            datamodule's test split is refused at fit start.
        anomaly_synthesis: ``"realistic"`` (paper), ``"draem"`` (anomalib's DRAEM synthesis) or ``"self_fill"``
            (realistic, filled from the training images); see :mod:`.synthesis`.
        anomaly_probability: Fraction of training images that receive a synthetic defect.
        opacity_range: ``(min, max)`` opacity of synthetic defects.
        soft_edge_sigma: Width (pixels) of the soft inner edge of synthetic defects.
        match_lighting: Strength in ``[0, 1]`` of matching a defect's brightness to the surrounding surface.
        reconstruction_width: Channels of the reconstruction network's full-resolution stage.
        prediction_width: Channels of the defect prediction network's full-resolution stage.
        depth: Number of down-sampling stages of both networks (>= 2; large kernels start at stride 4).
        kernel_size: Side of the depthwise large kernels (31; a small value such as 5 is the small-kernel
            ablation).
        small_kernel_size: Side of the parallel small kernels (5; ``0``: none).
        fft_min_kernel_size: Re-parameterised kernels at least this large run through the FFT at inference
            (17; ``0``: never). Validation, test and predict re-parameterise automatically.
        feature_consistency: Use the deep-feature consistency term of the reconstruction loss.
        feature_extractor: ``"copy"`` (paper: hard copy of the reconstruction encoder after every step),
            ``"ema"`` (EMA of its parameters and batch-norm statistics), ``"gradient"`` (the copy is trained
            by gradients) or ``"pretrained"`` (frozen timm ``backbone``).
        ema_momentum: Momentum of the ``"ema"`` extractor.
        backbone: timm backbone of the ``"pretrained"`` feature extractor.
        pre_trained: Load ImageNet weights for that backbone.
        l2_weight: Weight of the L2 reconstruction term (paper's lambda_1 = 1).
        ssim_weight: Weight of the SSIM reconstruction term (paper's lambda_2 = 0.8).
        feature_weight: Weight of the feature-consistency term (paper's lambda_3 = 0.2).
        score_filter_size: Side (pixels) of the mean filter applied to the anomaly map before its maximum
            is taken as the image score.
        learning_rate: Adam learning rate.
        lr_milestones: Epochs at which the learning rate is divided by 10, as fractions of the trainer's
            epoch budget (``max_epochs``, or ``max_steps`` in epochs; paper: epochs 400 and 600 of 700).
        pre_processor: Pre-processor or flag for the default (resize to 256 x 256, no normalisation).
        post_processor: Post-processor or flag for the default.
        evaluator: Evaluator or flag for the default.
        visualizer: Visualizer or flag for the default.
    """

    phases: ClassVar[tuple[str, ...]] = ()
    phase_buffer: ClassVar[str | None] = None
    training_set_state: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        anomaly_source_path: str | None = None,
        anomaly_synthesis: str = "realistic",
        anomaly_probability: float = 0.5,
        opacity_range: tuple[float, float] = (0.2, 1.0),
        soft_edge_sigma: float = 1.0,
        match_lighting: float = 0.5,
        reconstruction_width: int = 128,
        prediction_width: int = 64,
        depth: int = 4,
        kernel_size: int = 31,
        small_kernel_size: int = 5,
        fft_min_kernel_size: int = 17,
        feature_consistency: bool = True,
        feature_extractor: str = "copy",
        ema_momentum: float = 0.99,
        backbone: str = "resnet18",
        pre_trained: bool = True,
        l2_weight: float = 1.0,
        ssim_weight: float = 0.8,
        feature_weight: float = 0.2,
        score_filter_size: int = 21,
        learning_rate: float = 1e-4,
        lr_milestones: tuple[float, ...] = (400 / 700, 600 / 700),
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
        if feature_extractor not in FEATURE_EXTRACTORS:
            msg = f"feature_extractor must be one of {FEATURE_EXTRACTORS}, got '{feature_extractor}'."
            raise ValueError(msg)
        if learning_rate <= 0:
            msg = f"learning_rate must be > 0, got {learning_rate}."
            raise ValueError(msg)
        if any(not 0.0 < milestone < 1.0 for milestone in lr_milestones):
            msg = f"lr_milestones must be fractions of the training epochs in (0, 1), got {lr_milestones}."
            raise ValueError(msg)
        self.augmenter = build_anomaly_generator(
            anomaly_synthesis,
            anomaly_source_path=anomaly_source_path,
            probability=anomaly_probability,
            opacity_range=opacity_range,
            soft_edge_sigma=soft_edge_sigma,
            match_lighting=match_lighting,
        )
        self.model = DmpModel(
            reconstruction_width=reconstruction_width,
            prediction_width=prediction_width,
            depth=depth,
            kernel_size=kernel_size,
            small_kernel_size=small_kernel_size,
            score_filter_size=score_filter_size,
            fft_min_kernel_size=fft_min_kernel_size,
        )
        extractor = (
            build_feature_extractor(
                feature_extractor,
                self.model.reconstruction.encoder,
                momentum=ema_momentum,
                backbone=backbone,
                pre_trained=pre_trained,
            )
            if feature_consistency
            else None
        )
        self.model.input_requirement.check_pre_processor(self)
        self.loss = DmpLoss(extractor, l2_weight=l2_weight, ssim_weight=ssim_weight, feature_weight=feature_weight)
        self.learning_rate = learning_rate
        self.lr_milestones = tuple(lr_milestones)

    @classmethod
    def smoke_test_init_args(cls) -> dict[str, Any]:
        """Constructor arguments of a tiny, fast configuration for tests and the conformance harness."""
        return {
            "reconstruction_width": 4,
            "prediction_width": 4,
            "depth": 2,
            "kernel_size": 31,
            "score_filter_size": 5,
            "pre_trained": False,
        }

    @classmethod
    def configure_pre_processor(
        cls,
        image_size: tuple[int, int] | None = None,
        nonfinite_inputs: str = "error",
    ) -> PreProcessor:
        """Resize to ``image_size`` (default 256 x 256); no normalisation, the networks work on ``[0, 1]``."""
        return FiniteInputPreProcessor.resize_only(image_size or (256, 256), nonfinite_inputs)

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """anomalib's default metrics plus pixel AP (the paper's "AP"), which is also computed on validation."""
        return Evaluator(val_metrics=[pixel_ap()], test_metrics=[*default_test_metrics(), pixel_ap()])

    @property
    def learning_type(self) -> LearningType:
        """Dmp learns from normal images only."""
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation, no gradient clipping; the training length is the trainer's."""
        return {"num_sanity_val_steps": 0, "gradient_clip_val": 0}

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[torch.optim.lr_scheduler.LRScheduler]]:
        """Adam over the networks (and the ``"gradient"`` feature extractor), lr divided by 10 at each milestone."""
        parameters = [p for p in (*self.model.parameters(), *self.loss.parameters()) if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=self.learning_rate)
        epochs = epoch_budget(self.trainer)
        milestones = sorted({max(1, round(fraction * epochs)) for fraction in self.lr_milestones})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
        return [optimizer], [scheduler]

    def on_fit_start(self) -> None:
        """Refuse an anomaly source folder that overlaps the datamodule's test split; fit the batch to the memory."""
        super().on_fit_start()
        self.augmenter.check_disjoint_from(paths_of_test_split(self.trainer))
        fit_train_batch_to_memory(self, [self._training_losses], MEMORY_OPTIONS)

    def on_train_start(self) -> None:
        """Check the pre-processor and put the networks in training mode.

        Lightning keeps the modes that modules have when ``fit`` starts; after an export or a
        ``reparameterize()`` the networks would otherwise train in eval mode with fused kernels.

        Raises:
            ValueError: If the pre-processor normalises: reconstruction and synthesis work on ``[0, 1]`` images.
        """
        super().on_train_start()
        if self.pre_processor and extract_transforms_by_type(self.pre_processor.transform, Normalize):
            msg = "Dmp's pre_processor must not contain Normalize: the model works on images in [0, 1]."
            raise ValueError(msg)
        self.model.train()

    def training_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Synthesise defects, reconstruct, predict the defect map and compute the loss."""
        del args, kwargs  # These variables are not used.
        losses = self._training_losses(batch.image)
        terms = {name: value for name, value in losses.items() if name != "loss"}
        self.log_train_losses(losses["loss"], terms, batch_size=len(batch.image))
        return {"loss": losses["loss"]}

    def _training_losses(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Synthesise defects on ``images`` ``[B, 3, H, W]``, reconstruct, predict the defect map: the loss terms."""
        augmented, masks = self.augmenter(images)
        reconstruction, logits = self.model(augmented)
        return self.loss(images, reconstruction, masks, logits)

    def on_train_batch_end(self, outputs: STEP_OUTPUT, batch: Batch, batch_idx: int) -> None:
        """Parameter copying: the frozen feature extractor follows the updated reconstruction encoder."""
        del outputs, batch, batch_idx  # These variables are not used.
        extractor = self.loss.feature_consistency.extractor if self.loss.feature_consistency is not None else None
        if isinstance(extractor, EncoderFeatures) and extractor.frozen:
            extractor.update(self.model.reconstruction.encoder)

    def validation_step(self, batch: Batch, *args, **kwargs) -> STEP_OUTPUT:
        """Predict anomaly maps and scores of a validation batch."""
        del args, kwargs  # These variables are not used.
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    def reparameterize(self) -> Dmp:
        """Fuse the large-kernel branches into single kernels for inference (eval mode); returns ``self``."""
        self.model.reparameterize()
        return self

    def on_validation_start(self) -> None:
        """Validate with fused kernels (Lightning's return to training mode un-fuses them)."""
        super().on_validation_start()
        self.reparameterize()

    def on_test_start(self) -> None:
        """Test with fused kernels."""
        self.reparameterize()

    def on_predict_start(self) -> None:
        """Predict with fused kernels."""
        self.reparameterize()

    def to_torch(self, export_root: Path | str, model_file_name: str = "model") -> Path:
        """Re-parameterise, then export to PyTorch (see :meth:`ExportMixin.to_torch`)."""
        self.reparameterize()
        return super().to_torch(export_root, model_file_name)

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,  # noqa: ANN401 - passed to torch.onnx.export
    ) -> Path:
        """Re-parameterise, then export to ONNX (also used by OpenVINO export; see :meth:`ExportMixin.to_onnx`)."""
        self.reparameterize()
        return super().to_onnx(export_root, model_file_name, input_size, **kwargs)
