"""Feature extractors for Dmp's deep-feature consistency loss.

The consistency loss compares features of the reconstruction with features of the clean image. Three
extractors are offered (``feature_extractor`` option of :class:`~.lightning_model.Dmp`):

- ``"copy"`` (the paper's *parameter copying*, default): a copy of the reconstruction encoder that never
  receives gradients. After every optimisation step the encoder's parameters and batch-norm buffers are
  copied into it, so it equals the encoder the loss was computed with (the paper's literal reading). It
  stays in eval mode.
- ``"ema"`` (ablation): the same frozen copy, moved towards the encoder by an exponential moving average,
  ``copy = momentum * copy + (1 - momentum) * encoder``, applied alike to the parameters and to the
  batch-norm running statistics (a copied statistic with lagging weights would normalise features the
  weights do not produce). ``num_batches_tracked`` is copied.
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

__all__ = ["FEATURE_EXTRACTORS", "FROZEN_UPDATES", "EncoderFeatures", "PretrainedFeatures", "build_feature_extractor"]

FEATURE_EXTRACTORS = ("copy", "ema", "gradient", "pretrained")
FROZEN_UPDATES = ("copy", "ema")
"""Encoder copies that get no gradient and follow the encoder through :meth:`EncoderFeatures.update`."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderFeatures(nn.Module):
    """Features of stages ``1 .. depth`` of a copy of the reconstruction encoder.

    Args:
        encoder: The reconstruction encoder to copy (deep-copied once here).
        update: ``"copy"``: frozen, hard copy of the encoder by :meth:`update`; ``"ema"``: frozen, EMA of
            the encoder's parameters and buffers by :meth:`update`; ``"gradient"``: trainable by the
            consistency loss.
        momentum: EMA momentum of ``"ema"`` in ``[0, 1)`` (unused by the other updates).
    """

    def __init__(self, encoder: ReconstructionEncoder, update: str = "copy", momentum: float = 0.99) -> None:
        super().__init__()
        if update not in {*FROZEN_UPDATES, "gradient"}:
            msg = f"feature_extractor update must be one of {(*FROZEN_UPDATES, 'gradient')}, got '{update}'."
            raise ValueError(msg)
        if not 0.0 <= momentum < 1.0:
            msg = f"ema_momentum must be in [0, 1), got {momentum}."
            raise ValueError(msg)
        self.update_mode = update
        self.frozen = update in FROZEN_UPDATES
        self.momentum = momentum if update == "ema" else 0.0
        self.encoder = copy.deepcopy(encoder).requires_grad_(not self.frozen)
        self.train()  # a frozen copy starts in eval mode: Lightning keeps the modes modules have at fit start

    def train(self, mode: bool = True) -> EncoderFeatures:
        """Follow ``mode`` when trained by gradient; a frozen copy always stays in eval mode."""
        return super().train(mode and not self.frozen)

    @torch.no_grad()
    def update(self, encoder: ReconstructionEncoder) -> None:
        """Follow ``encoder``: ``copy <- momentum * copy + (1 - momentum) * encoder`` for parameters and float buffers.

        ``momentum`` is 0 (hard copy) for ``"copy"``. Integer buffers (``num_batches_tracked``) are copied.
        """
        if not self.frozen:
            msg = "update() is for the frozen 'copy' and 'ema' extractors; the 'gradient' extractor is trained by its loss."
            raise RuntimeError(msg)
        for copied, source in zip(self.encoder.state_dict().values(), encoder.state_dict().values(), strict=True):
            if self.momentum and copied.is_floating_point():
                copied.lerp_(source, 1.0 - self.momentum)
            else:
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
    if kind in {*FROZEN_UPDATES, "gradient"}:
        return EncoderFeatures(encoder, update=kind, momentum=momentum)
    msg = f"feature_extractor must be one of {FEATURE_EXTRACTORS}, got '{kind}'."
    raise ValueError(msg)
