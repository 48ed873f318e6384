"""Depthwise convolution through the FFT, for large fixed kernels at inference."""

from __future__ import annotations

import torch

__all__ = ["FFT_DTYPES", "depthwise_conv2d_fft"]

FFT_DTYPES = (torch.float32, torch.float64)
"""Dtypes the FFT path supports on every device (half-precision FFTs need power-of-two sizes on GPU)."""


def depthwise_conv2d_fft(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(inputs, weight, bias, padding=k // 2, groups=C)`` (zero padding) computed through the FFT.

    The cost does not grow with the kernel area, which suits large kernels (RepLKNet's 31x31); direct
    convolution's CPU implementation falls back to a slow path above 16x16.

    Args:
        inputs: ``[B, C, H, W]`` features.
        weight: ``[C, 1, k_h, k_w]`` depthwise kernels of odd sides.
        bias: ``[C]`` or ``None``.

    Returns:
        ``[B, C, H, W]``, equal to the direct convolution up to float rounding (about 1e-6 relative).
    """
    height, width = inputs.shape[-2:]
    kernel_h, kernel_w = weight.shape[-2:]
    size = (height + kernel_h - 1, width + kernel_w - 1)
    # conv2d is a cross-correlation: a convolution with the flipped kernel, cropped to the "same" window.
    spectrum = torch.fft.rfft2(inputs, s=size) * torch.fft.rfft2(weight[:, 0].flip(-2, -1), s=size)
    output = torch.fft.irfft2(spectrum, s=size)[..., kernel_h // 2 : kernel_h // 2 + height, kernel_w // 2 : kernel_w // 2 + width]
    return output if bias is None else output + bias.view(1, -1, 1, 1)
