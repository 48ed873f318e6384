"""PGCN's pattern comparator: a pseudo-Siamese CNN scoring whether a generated patch matches the real one.

Paper: Huang, Li, Lin, Lian, "Unsupervised Industrial Anomaly Detection via Pattern Generative and
Contrastive Networks", arXiv 2207.09792.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["COMPARATOR_DOWNSAMPLING", "PatternComparator", "conv_block"]

COMPARATOR_DOWNSAMPLING = 4
"""The comparator's two max-pools: its features and difference mask are at 1/4 of the patch size."""


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, batch norm and ReLU (resolution kept)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PatternComparator(nn.Module):
    """Pseudo-Siamese CNN comparing a generated patch with the real one.

    Each input has its own first two conv-BN-ReLU blocks (each followed by a 2x max-pool); the third
    block is shared by both branches. The concatenated features feed two fully connected layers (the
    logit of the probability that the patches match) and two conv blocks (logits of the difference
    mask at a quarter of the patch size).

    Args:
        patch_hw: Patch ``(h, w)`` in pixels, multiples of 4.
        width: Channels of the first block (doubled by each following block).
        hidden: Units of the first fully connected layer.
        in_chans: Image channels.
    """

    def __init__(self, patch_hw: tuple[int, int], width: int = 16, hidden: int = 128, in_chans: int = 3) -> None:
        super().__init__()
        self.generated_branch = self._branch(in_chans, width)
        self.real_branch = self._branch(in_chans, width)
        self.shared_block = conv_block(2 * width, 4 * width)
        feature_hw = (patch_hw[0] // COMPARATOR_DOWNSAMPLING, patch_hw[1] // COMPARATOR_DOWNSAMPLING)
        self.similarity_head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(8 * width * feature_hw[0] * feature_hw[1], hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )
        self.mask_head = nn.Sequential(conv_block(8 * width, 2 * width), nn.Conv2d(2 * width, 1, kernel_size=1))

    @staticmethod
    def _branch(in_chans: int, width: int) -> nn.Sequential:
        """The unshared part of a branch: two conv blocks, each followed by a 2x max-pool."""
        return nn.Sequential(
            conv_block(in_chans, width),
            nn.MaxPool2d(2),
            conv_block(width, 2 * width),
            nn.MaxPool2d(2),
        )

    def forward(self, generated: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compare ``[M, C, h, w]`` patch pairs.

        Returns:
            Match logits ``[M]`` and difference-mask logits ``[M, 1, h / 4, w / 4]``.
        """
        features = torch.cat(
            [self.shared_block(self.generated_branch(generated)), self.shared_block(self.real_branch(real))],
            dim=1,
        )
        return self.similarity_head(features).squeeze(1), self.mask_head(features)
