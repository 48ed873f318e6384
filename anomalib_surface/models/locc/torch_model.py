"""PyTorch model of Locc: image matching module (IMM) + anomaly localisation module (ALM).

- :class:`ImageMatchingModule`: a shared fully convolutional network ``N_P`` encodes the template
  ``I_T`` and the input ``I_O``; their concatenated features go through the regression network
  ``N_R``, which outputs a rigid transform ``(Tx, Ty, θ)``; a spatial transformer warps ``I_O`` into the
  aligned image ``I_M``. The last layer of ``N_R`` is zero-initialised, so training starts at identity.
- :class:`AnomalyLocalisationModule`: frozen backbone (ResNet-18 stages 1-3) features of ``I_M``,
  up-sampled to the stage-1 grid and concatenated (``F_Mixed``), mapped by ``N_M`` to ``F_M``; anomaly
  score of a position = half cosine distance of ``F_M`` to the local centre ``F_C``. ``F_C`` is the
  mean, over defect-free training images, of ``F_Mixed`` reduced to ``feature_dim`` channels by a fixed
  random orthonormal projection (seeded, stored as a buffer). ``N_M`` (two bias-free 1×1 convolutions)
  is trained from scratch as in the paper (``mapping_start="scratch"``), or is that reduction plus a learnt
  residual whose last layer starts at zero (``"residual"``), so that untrained ``F_M`` lie on their centres' side.
- :class:`LoccModel`: both together; ``forward`` returns the anomaly map in input coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from anomalib.models.components import DynamicBufferMixin
from torch import nn

from anomalib_surface.components import create_backbone
from anomalib_surface.components.finite_inputs import mark_nonfinite, replace_nonfinite

from .anomaly_map import AnomalyMapGenerator
from .loss import half_cosine_distance
from .spatial_transformer import rigid_matrix, warp

__all__ = ["CENTER_MODES", "MAPPING_STARTS", "AnomalyLocalisationModule", "ImageMatchingModule", "LoccModel"]

CENTER_MODES = ("map", "vector")
MAPPING_STARTS = ("scratch", "residual")
"""How ``N_M`` starts: randomly initialised (the paper), or the centres' projection plus a zero residual."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_STAGES = (1, 2, 3)
REGRESSOR_GRID = 4
"""``N_R`` pools the joint features to a ``REGRESSOR_GRID²`` grid so that its MLP sees where things are."""


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class ImageMatchingModule(DynamicBufferMixin):
    """Align input images to a template with a learnt rigid spatial transformer.

    Args:
        channels: Output channels of the stride-2 convolution blocks of ``N_P`` (one block each).
        in_channels: Image channels.
        hidden_dim: Width of the hidden layer of ``N_R``'s MLP.
        padding_mode: ``grid_sample`` padding of the aligned image where it samples outside ``I_O``.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128, 128),
        in_channels: int = 3,
        hidden_dim: int = 128,
        padding_mode: str = "border",
    ) -> None:
        super().__init__()
        if not channels or any(int(width) < 1 for width in channels):
            msg = f"imm_channels must be a non-empty sequence of positive widths, got {channels!r}."
            raise ValueError(msg)
        widths = [in_channels, *map(int, channels)]
        self.feature_net = nn.Sequential(*(_conv_block(a, b, 2) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.regressor = nn.Sequential(
            _conv_block(2 * widths[-1], widths[-1], 1),
            nn.AdaptiveAvgPool2d(REGRESSOR_GRID),
            nn.Flatten(),
            nn.Linear(widths[-1] * REGRESSOR_GRID**2, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 3),
        )
        nn.init.zeros_(self.regressor[-1].weight)
        nn.init.zeros_(self.regressor[-1].bias)
        self.padding_mode = padding_mode
        self.register_buffer("template", torch.empty(0))

    @property
    def has_template(self) -> bool:
        """Whether a template has been set (by training or from a checkpoint)."""
        return self.template.numel() > 0

    def set_template(self, image: torch.Tensor) -> None:
        """Store the template ``I_T``, a ``[C, H, W]`` image in ``[0, 1]`` at the model's input size."""
        if image.ndim != 3:
            msg = f"template image must be [C, H, W], got shape {tuple(image.shape)}."
            raise ValueError(msg)
        self.template = image.detach().unsqueeze(0).to(self.template.device, torch.float32)

    def predict_transform(self, images: torch.Tensor) -> torch.Tensor:
        """Rigid transforms ``[B, 3]`` (``Tx, Ty, θ``) that align ``[B, C, H, W]`` images to the template."""
        if not self.has_template:
            msg = "Locc's image matching module has no template yet: train the model or load a checkpoint."
            raise RuntimeError(msg)
        if images.shape[1:] != self.template.shape[1:]:
            msg = (
                f"images of shape {tuple(images.shape[1:])} do not match the template {tuple(self.template.shape[1:])}"
                " that Locc was trained with: use the same pre-processor image_size."
            )
            raise ValueError(msg)
        features = self.feature_net(torch.cat([self.template.to(images.dtype), images]))
        template_features, image_features = features[:1], features[1:]
        joint = torch.cat([template_features.expand_as(image_features), image_features], dim=1)
        return self.regressor(joint)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned images ``I_M`` ``[B, C, H, W]`` and the transforms ``[B, 3]`` that produced them."""
        params = self.predict_transform(images)
        aligned = warp(images, rigid_matrix(params, *images.shape[-2:]), padding_mode=self.padding_mode)
        return aligned, params


def _orthonormal_projection(in_channels: int, out_channels: int, seed: int) -> torch.Tensor:
    """Fixed random ``[out, in]`` matrix with orthonormal rows, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(in_channels, out_channels, generator=generator))
    return basis.T.contiguous()


class AnomalyLocalisationModule(DynamicBufferMixin):
    """Local one-class classification on backbone features of the aligned image.

    Args:
        backbone: timm backbone name; stages 1-3 are used (ResNet-18 in the paper).
        pre_trained: Load ImageNet weights.
        weights_path: Local backbone weights file (see :func:`anomalib_surface.components.create_backbone`).
        feature_dim: Channels ``D`` of ``F_M`` and of the reduced ``F_Mixed`` (the centres).
        hidden_dim: Hidden channels of ``N_M``.
        center: ``"map"`` (one centre per position) or ``"vector"`` (one global centre).
        projection_seed: Seed of the fixed projection that reduces ``F_Mixed`` to ``D`` channels.
        mapping_start: ``"scratch"`` (``N_M`` alone, randomly initialised, as in the paper) or ``"residual"``
            (the projection plus ``N_M`` with a zero-initialised last layer: training starts from the distances
            of the frozen features to their centres).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pre_trained: bool = True,
        weights_path: str | Path | None = None,
        feature_dim: int = 128,
        hidden_dim: int = 256,
        center: str = "map",
        projection_seed: int = 0,
        mapping_start: str = "scratch",
    ) -> None:
        super().__init__()
        if center not in CENTER_MODES:
            msg = f"center must be one of {CENTER_MODES}, got {center!r}."
            raise ValueError(msg)
        if mapping_start not in MAPPING_STARTS:
            msg = f"mapping_start must be one of {MAPPING_STARTS}, got {mapping_start!r}."
            raise ValueError(msg)
        self.center = center
        self.mapping_start = mapping_start
        self.backbone = create_backbone(
            backbone,
            pre_trained=pre_trained,
            weights_path=weights_path,
            features_only=True,
            out_indices=BACKBONE_STAGES,
        )
        self.backbone.requires_grad_(False).eval()
        mixed_channels = sum(self.backbone.feature_info.channels())
        if not 1 <= feature_dim <= mixed_channels:
            msg = f"feature_dim must be in [1, {mixed_channels}] (F_Mixed channels of {backbone}), got {feature_dim}."
            raise ValueError(msg)
        if hidden_dim < 1:
            msg = f"hidden_dim must be >= 1, got {hidden_dim}."
            raise ValueError(msg)
        self.mapper = nn.Sequential(
            nn.Conv2d(mixed_channels, hidden_dim, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, feature_dim, 1, bias=False),
        )
        if mapping_start == "residual":
            nn.init.zeros_(self.mapper[-1].weight)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("projection", _orthonormal_projection(mixed_channels, feature_dim, projection_seed))
        self.register_buffer("centres", torch.zeros(feature_dim, 1, 1))

    def train(self, mode: bool = True) -> AnomalyLocalisationModule:
        """Switch train/eval mode; the frozen backbone always stays in eval mode (fixed BatchNorm)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def mixed_features(self, images: torch.Tensor) -> torch.Tensor:
        """``F_Mixed`` ``[B, C, h, w]`` of ``[B, 3, H, W]`` images in ``[0, 1]``, on the stage-1 grid (``H/4``)."""
        with torch.no_grad():
            stages = self.backbone((images - self.mean) / self.std)
        size = stages[0].shape[-2:]
        rescaled = [F.interpolate(stage, size=size, mode="bilinear", align_corners=False) for stage in stages[1:]]
        return torch.cat([stages[0], *rescaled], dim=1)

    def reduce(self, mixed: torch.Tensor) -> torch.Tensor:
        """Dimension-reduced ``F_Mixed``, ``[B, D, h, w]``: what the centres are the mean of."""
        return F.conv2d(mixed, self.projection[..., None, None])

    def set_centres(self, mean_reduced: torch.Tensor) -> None:
        """Store the centres from the mean reduced ``F_Mixed`` ``[D, h, w]`` of the training images."""
        centres = mean_reduced.mean(dim=(1, 2), keepdim=True) if self.center == "vector" else mean_reduced
        self.centres = centres.detach().to(self.centres.device, torch.float32)

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Half cosine distance ``[B, 1, h, w]`` of ``F_M`` to the centres."""
        centres = self.centres
        if centres.shape[-2:] != (1, 1) and centres.shape[-2:] != features.shape[-2:]:
            msg = (
                f"Locc's local centres cover a {tuple(centres.shape[-2:])} feature grid but the image gives "
                f"{tuple(features.shape[-2:])}: use the same pre-processor image_size as in training."
            )
            raise ValueError(msg)
        return half_cosine_distance(features, centres.to(features.dtype)).unsqueeze(1)

    def map_features(self, mixed: torch.Tensor) -> torch.Tensor:
        """``F_M`` ``[B, D, h, w]`` of ``F_Mixed`` ``[B, C, h, w]`` (cached features train through this).

        ``N_M`` has no bias terms: a bias would let it map every input onto one global centre. With
        ``mapping_start="residual"`` the reduction of the centres is added, so that training starts from the
        distance of the reduced ``F_Mixed`` to its local mean.
        """
        mapped = self.mapper(mixed)
        return mapped + self.reduce(mixed) if self.mapping_start == "residual" else mapped

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``F_M`` ``[B, D, h, w]`` of aligned images ``[B, 3, H, W]`` in ``[0, 1]``."""
        return self.map_features(self.mixed_features(images))


class LoccModel(nn.Module):
    """Locc: align (optional), map features, score positions by their distance to the local centres.

    Args:
        align: Use the image matching module; ``False`` scores the input image as it is.
        imm_channels: Widths of the blocks of ``N_P``.
        backbone: timm backbone of the ALM.
        pre_trained: Load ImageNet weights for the backbone.
        weights_path: Local backbone weights file.
        feature_dim: Channels of ``F_M`` and of the centres.
        hidden_dim: Hidden channels of ``N_M``.
        center: ``"map"`` or ``"vector"``.
        projection_seed: Seed of the centres' dimension reduction.
        mapping_start: ``"scratch"`` or ``"residual"`` (see :class:`AnomalyLocalisationModule`).
    """

    def __init__(
        self,
        align: bool = True,
        imm_channels: Sequence[int] = (32, 64, 128, 128),
        backbone: str = "resnet18",
        pre_trained: bool = True,
        weights_path: str | Path | None = None,
        feature_dim: int = 128,
        hidden_dim: int = 256,
        center: str = "map",
        projection_seed: int = 0,
        mapping_start: str = "scratch",
    ) -> None:
        super().__init__()
        self.imm = ImageMatchingModule(imm_channels) if align else None
        self.alm = AnomalyLocalisationModule(
            backbone=backbone,
            pre_trained=pre_trained,
            weights_path=weights_path,
            feature_dim=feature_dim,
            hidden_dim=hidden_dim,
            center=center,
            projection_seed=projection_seed,
            mapping_start=mapping_start,
        )
        self.anomaly_map_generator = AnomalyMapGenerator()

    def align(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Aligned images ``[B, C, H, W]`` and transforms ``[B, 3]`` (``None`` and the input when ``align`` is off)."""
        if self.imm is None:
            return images, None
        return self.imm(images)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Anomaly map ``[B, 1, H, W]`` in input coordinates and its maximum as image score ``[B]``."""
        images, nonfinite = replace_nonfinite(images)
        aligned, params = self.align(images)
        distance = self.alm.distance(self.alm(aligned))
        anomaly_map = self.anomaly_map_generator(distance, images.shape[-2:], params)
        return mark_nonfinite(InferenceBatch(pred_score=anomaly_map.amax(dim=(-3, -2, -1)), anomaly_map=anomaly_map), nonfinite)

