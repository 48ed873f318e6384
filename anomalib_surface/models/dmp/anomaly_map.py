"""Image score of Dmp: the maximum of the mean-filtered defect map."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

__all__ = ["MeanFilteredMax"]


class MeanFilteredMax(nn.Module):
    """Image anomaly score as the maximum of the anomaly map after a ``k x k`` mean filter.

    The mean filter makes the score respond to defect *regions* rather than to single bright pixels
    (the scoring of DRAEM, kept by Dmp). Borders are averaged over the pixels inside the image.

    Args:
        filter_size: Odd side ``k`` of the mean filter in pixels of the map; ``1`` gives the plain maximum.

    Example:
        >>> score = MeanFilteredMax(filter_size=3)
        >>> score(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2])
    """

    def __init__(self, filter_size: int = 21) -> None:
        super().__init__()
        if filter_size < 1 or filter_size % 2 == 0:
            msg = f"score_filter_size must be a positive odd number of pixels, got {filter_size}."
            raise ValueError(msg)
        self.filter_size = filter_size

    def forward(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Score ``[B]`` of an anomaly map ``[B, 1, H, W]``."""
        smoothed = F.avg_pool2d(
            anomaly_map,
            kernel_size=self.filter_size,
            stride=1,
            padding=self.filter_size // 2,
            count_include_pad=False,
        )
        return smoothed.amax(dim=(-3, -2, -1))
