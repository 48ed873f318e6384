"""FFT depthwise convolution against torch's direct convolution."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from anomalib_surface.models.dmp.fft_conv import depthwise_conv2d_fft


@pytest.mark.parametrize(("kernel", "size"), [((31, 31), (40, 52)), ((5, 3), (9, 7)), ((1, 1), (4, 4)), ((7, 7), (3, 5))])
def test_fft_depthwise_conv_equals_direct_conv(kernel: tuple[int, int], size: tuple[int, int]) -> None:
    """Same output as ``F.conv2d(..., padding=k // 2, groups=C)``, also for kernels larger than the image."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 3, *size, generator=generator)
    weight = torch.randn(3, 1, *kernel, generator=generator)
    bias = torch.randn(3, generator=generator)
    padding = (kernel[0] // 2, kernel[1] // 2)
    expected = F.conv2d(inputs, weight, bias, padding=padding, groups=3)
    torch.testing.assert_close(depthwise_conv2d_fft(inputs, weight, bias), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(depthwise_conv2d_fft(inputs, weight), expected - bias.view(1, -1, 1, 1), rtol=1e-4, atol=1e-4)


def test_fft_depthwise_conv_is_not_used_in_exported_graphs() -> None:
    """Graph capture falls back to the direct convolution (ONNX has no FFT product in our opset)."""
    from anomalib_surface.models.dmp.torch_model import ReparamLargeKernelConv

    block = ReparamLargeKernelConv(2, 31, 5).eval()
    block.reparameterize()
    graph = str(torch.export.export(block, (torch.randn(1, 2, 16, 16),)).graph).lower()
    assert "conv" in graph
    assert "fft" not in graph
