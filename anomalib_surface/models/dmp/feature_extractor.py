"""Feature extractors for Dmp's deep-feature consistency loss.

The consistency loss compares features of the reconstruction with features of the clean image. Three
extractors are offered (``feature_extractor`` option of :class:`~.lightning_model.Dmp`):

- ``"copy"`` (the paper's *parameter copying*, default): a copy of the reconstruction encoder that never
  receives gradients. After every optimisation step its parameters move towards the encoder's by an
  exponential moving average, ``copy = momentum * copy + (1 - momentum) * encoder`` (``momentum`` 0.99 by
  default; ``0`` is a hard copy at every step), and its batch-norm statistics are copied. It stays in eval
  mode.
- ``"gradient"`` (ablation): a separate copy of the encoder, initialised equal to it, trained by the
  gradient of the consistency loss (it is then free to make the loss small by collapsing its features,
  which is what parameter copying avoids).
- ``"pretrained"``: a frozen ImageNet backbone from timm (``backbone``, strides 4, 8 and 16) applied to
  ImageNet-normalised images.

Every extractor maps ``[B, 3, H, W]`` images in ``[0, 1]`` to a list of ``[B, C_l, H_l, W_l]`` feature maps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.transforms.v2 import Normalize

from anomalib_surface.components import create_backbone

from .torch_model import ReconstructionEncoder

__all__ = ["FEATURE_EXTRACTORS", "EncoderFeatures", "PretrainedFeatures", "build_feature_extractor"]

FEATURE_EXTRACTORS = ("copy", "gradient", "pretrained")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderFeatures(nn.Module):
    """Features of stages ``1 .. depth`` of a copy of the reconstruction encoder.

    Args:
        encoder: The reconstruction encoder to copy (deep-copied once here).
        update: ``"copy"``: frozen, updated by :meth:`update` (EMA of the encoder's parameters);
            ``"gradient"``: trainable by the consistency loss.
        momentum: EMA momentum of ``"copy"`` in ``[0, 1)`` (``0``: hard copy).
    """

    def __init__(self, encoder: ReconstructionEncoder, update: str = "copy", momentum: float = 0.99) -> None:
        super().__init__()
        if update not in {"copy", "gradient"}:
            msg = f"update must be 'copy' or 'gradient', got '{update}'."
            raise ValueError(msg)
        if not 0.0 <= momentum < 1.0:
            msg = f"copy_momentum must be in [0, 1), got {momentum}."
            raise ValueError(msg)
        self.frozen = update == "copy"
        self.momentum = momentum
        self.encoder = copy.deepcopy(encoder).requires_grad_(not self.frozen)
        self.train()  # a frozen copy starts in eval mode: Lightning keeps the modes modules have at fit start

    def train(self, mode: bool = True) -> EncoderFeatures:
        """Follow ``mode`` when trained by gradient; a parameter copy always stays in eval mode."""
        return super().train(mode and not self.frozen)

    @torch.no_grad()
    def update(self, encoder: ReconstructionEncoder) -> None:
        """Parameter copying: EMA of ``encoder``'s parameters, copy of its batch-norm statistics."""
        if not self.frozen:
            msg = "update() is for the parameter-copy extractor; the 'gradient' extractor is trained by its loss."
            raise RuntimeError(msg)
        for copied, source in zip(self.encoder.parameters(), encoder.parameters(), strict=True):
            copied.lerp_(source, 1.0 - self.momentum)
        for copied, source in zip(self.encoder.buffers(), encoder.buffers(), strict=True):
            copied.copy_(source)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of stages ``1 .. depth`` (stage 0 is pixel-level and left to the L2/SSIM terms)."""
        return self.encoder(images)[1:]


class PretrainedFeatures(nn.Module):
    """Frozen timm backbone features at strides 4, 8 and 16 of ImageNet-normalised images.

    Args:
        backbone: timm model name.
        pre_trained: Load ImageNet weights (see :func:`anomalib_surface.components.create_backbone`).
    """

    def __init__(self, backbone: str = "resnet18", pre_trained: bool = True) -> None:
        super().__init__()
        self.normalize = Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.backbone = create_backbone(backbone, pre_trained=pre_trained, features_only=True, out_indices=(1, 2, 3))
        self.backbone.requires_grad_(False)
        self.eval()  # Lightning keeps the modes modules have at fit start

    def train(self, mode: bool = True) -> PretrainedFeatures:  # noqa: ARG002 - always frozen
        """Stay in eval mode: the backbone is frozen."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone feature maps of ``[B, 3, H, W]`` images in ``[0, 1]``."""
        return self.backbone(self.normalize(images))


def build_feature_extractor(
    kind: str,
    encoder: ReconstructionEncoder,
    momentum: float = 0.99,
    backbone: str = "resnet18",
    pre_trained: bool = True,
) -> nn.Module:
    """The feature extractor named ``kind`` (one of :data:`FEATURE_EXTRACTORS`)."""
    if kind == "pretrained":
        return PretrainedFeatures(backbone, pre_trained)
    if kind in {"copy", "gradient"}:
        return EncoderFeatures(encoder, update=kind, momentum=momentum)
    msg = f"feature_extractor must be one of {FEATURE_EXTRACTORS}, got '{kind}'."
    raise ValueError(msg)
