"""PyTorch model of Dmp: a reconstruction network and a large-kernel defect prediction network.

Dmp (Peng, Zheng, Zhao, Zheng, "Industrial Product Surface Anomaly Detection with Realistic Synthetic
Anomalies Based on Defect Map Prediction", Sensors 2024, 24(1):264):

1. :class:`ReconstructionNetwork`, an encoder-decoder without skip connections, restores the
   anomaly-free image from an image with synthetic defects.
2. :class:`DefectPredictionNetwork`, a U-Net whose stages at strides 4 and coarser contain RepLKNet-style
   :class:`LargeKernelBlock` s, predicts the defect map from the input concatenated with its reconstruction.
3. The anomaly map is the sigmoid of the predicted defect map; the image score is the maximum of its
   mean-filtered version (:class:`~.anomaly_map.MeanFilteredMax`).

The large-kernel convolutions train as two parallel branches (a ``31 x 31`` and a ``5 x 5`` depthwise
convolution, each followed by batch norm) and are structurally re-parameterised into a single ``31 x 31``
convolution for inference by :meth:`DmpModel.reparameterize` (Ding et al., "Scaling Up Your Kernels to
31x31", CVPR 2022); the fused kernel then runs through the FFT.
"""

from __future__ import annotations

import torch
from anomalib.data import InferenceBatch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils.fusion import fuse_conv_bn_weights

from anomalib_surface.components.checks import is_traced
from anomalib_surface.components.finite_inputs import mark_nonfinite, replace_nonfinite
from anomalib_surface.components.input_size import InputSizeRequirement

from .anomaly_map import MeanFilteredMax
from .fft_conv import FFT_DTYPES, depthwise_conv2d_fft

__all__ = [
    "DefectPredictionNetwork",
    "DmpModel",
    "LargeKernelBlock",
    "ReconstructionEncoder",
    "ReconstructionNetwork",
    "ReparamLargeKernelConv",
]

DEFECT_PRIOR = 0.01
"""Defect probability that the untrained defect prediction network outputs everywhere (its head's bias is
``logit(DEFECT_PRIOR)``, the prior initialisation of the focal loss, Lin et al., ICCV 2017). With a zero bias
it would start at 0.5, and Adam, which moves a bias by about the learning rate per step, would spend thousands
of steps lowering the background before the map can localise anything."""
DEFAULT_FFT_MIN_KERNEL_SIZE = 17
"""Re-parameterised kernels this large or larger run through the FFT. On CPU PyTorch's direct depthwise
convolution is fast up to 13x13 and many times slower from 17x17 on (measured in
``benchmarks/dmp_reparam_speed.py``); the FFT's cost does not depend on the kernel size."""


def stage_widths(base_width: int, depth: int) -> list[int]:
    """Channel widths of stage 0 (full resolution) to stage ``depth``: doubled per stage, at most ``8 x``."""
    return [base_width * 2 ** min(stage, 3) for stage in range(depth + 1)]


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """``3 x 3`` convolution, batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two :func:`conv_bn_relu` layers at the same resolution."""
    return nn.Sequential(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))


def resize_to(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize ``[B, C, h, w]`` features to the spatial size of ``reference``."""
    return F.interpolate(features, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class ReconstructionEncoder(nn.Module):
    """Encoder of the reconstruction network: stage 0 at full resolution, then ``depth`` halving stages.

    Args:
        in_channels: Channels of the input image.
        base_width: Channels of stage 0 (doubled per stage, at most ``8 x``).
        depth: Number of down-sampling stages.
    """

    def __init__(self, in_channels: int = 3, base_width: int = 128, depth: int = 4) -> None:
        super().__init__()
        widths = stage_widths(base_width, depth)
        self.stages = nn.ModuleList([double_conv(in_channels, widths[0])])
        self.stages.extend(
            nn.Sequential(nn.MaxPool2d(2), double_conv(widths[stage - 1], widths[stage]))
            for stage in range(1, depth + 1)
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Features of every stage, ``[B, C_s, H / 2^s, W / 2^s]`` for ``s = 0 .. depth``."""
        features = [images]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features[1:]


class ReconstructionDecoder(nn.Module):
    """Decoder of the reconstruction network: up-samples the bottleneck back to the input size (no skips)."""

    def __init__(self, out_channels: int = 3, base_width: int = 128, depth: int = 4) -> None:
        super().__init__()
        widths = stage_widths(base_width, depth)
        self.stages = nn.ModuleList(double_conv(widths[stage], widths[stage - 1]) for stage in range(depth, 0, -1))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=3, padding=1)

    def forward(self, bottleneck: torch.Tensor, references: list[torch.Tensor]) -> torch.Tensor:
        """Image ``[B, out_channels, H, W]`` from the bottleneck, up-sampled to the sizes of ``references``.

        Args:
            bottleneck: Deepest encoder features.
            references: Encoder features of stages ``0 .. depth - 1`` (only their sizes are used).
        """
        decoded = bottleneck
        for stage, reference in zip(self.stages, reversed(references), strict=True):
            decoded = stage(resize_to(decoded, reference))
        return self.head(decoded)


class ReconstructionNetwork(nn.Module):
    """Encoder-decoder that restores the anomaly-free image.

    Args:
        channels: Image channels.
        base_width: Channels of the full-resolution stage.
        depth: Number of down-sampling stages (bottleneck at ``1 / 2^depth`` resolution).
    """

    def __init__(self, channels: int = 3, base_width: int = 128, depth: int = 4) -> None:
        super().__init__()
        self.encoder = ReconstructionEncoder(channels, base_width, depth)
        self.decoder = ReconstructionDecoder(channels, base_width, depth)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[B, C, H, W]`` of ``[B, C, H, W]`` images."""
        features = self.encoder(images)
        return self.decoder(features[-1], features[:-1])


def depthwise_conv_bn(channels: int, kernel_size: int) -> nn.Sequential:
    """Depthwise ``k x k`` convolution without bias followed by batch norm (one branch of a large kernel)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
    )


def fuse_branch(branch: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel ``[C, 1, k, k]`` and bias ``[C]`` of one convolution equal to a conv-BN branch in eval mode."""
    conv, norm = branch
    weight, bias = fuse_conv_bn_weights(
        conv.weight,
        conv.bias,
        norm.running_mean,
        norm.running_var,
        norm.eps,
        norm.weight,
        norm.bias,
    )
    return weight.detach(), bias.detach()


class ReparamLargeKernelConv(nn.Module):
    """Depthwise large-kernel convolution with a parallel small-kernel branch, re-parameterisable.

    Training: ``BN(conv_k(x)) + BN(conv_s(x))``. :meth:`reparameterize` folds each batch norm into its
    convolution, zero-pads the small kernel to ``k x k`` (centred) and adds the two kernels and biases:
    by linearity the single ``k x k`` convolution gives the same output in eval mode. The fused kernel
    lives in (non-persistent) buffers, so it travels with exported models; checkpoints keep the
    branches, from which it is recomputed. Switching back to training mode drops the fused kernel.

    The fused kernel runs through the FFT (:func:`~.fft_conv.depthwise_conv2d_fft`)
    when its side is at least ``fft_min_kernel_size``, in float32/64 and outside graph capture (exports keep
    the direct convolution): one FFT product replaces two convolutions and two batch norms, and its cost does
    not grow with the kernel area.

    Args:
        channels: Input and output channels.
        kernel_size: Odd side of the large kernel (31 in RepLKNet and Dmp).
        small_kernel_size: Odd side of the parallel small kernel (5); ``0`` or ``>= kernel_size``: no branch.
        fft_min_kernel_size: Smallest fused kernel side run through the FFT; ``0``: never.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 31,
        small_kernel_size: int = 5,
        fft_min_kernel_size: int = DEFAULT_FFT_MIN_KERNEL_SIZE,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            msg = f"kernel_size must be a positive odd number, got {kernel_size}."
            raise ValueError(msg)
        if small_kernel_size < 0 or (small_kernel_size and small_kernel_size % 2 == 0):
            msg = f"small_kernel_size must be 0 (no small branch) or a positive odd number, got {small_kernel_size}."
            raise ValueError(msg)
        self.channels = channels
        self.kernel_size = kernel_size
        self.use_fft = 0 < fft_min_kernel_size <= kernel_size
        self.large = depthwise_conv_bn(channels, kernel_size)
        self.small = depthwise_conv_bn(channels, small_kernel_size) if 0 < small_kernel_size < kernel_size else None
        self.register_buffer("fused_weight", torch.zeros(channels, 1, kernel_size, kernel_size), persistent=False)
        self.register_buffer("fused_bias", torch.zeros(channels), persistent=False)
        self.reparameterized = False

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Depthwise large-kernel response ``[B, C, H, W]`` of ``[B, C, H, W]`` features.

        A training-mode call drops the fused kernel (the branches are about to change), also when the mode was
        set by assigning ``module.training`` directly, as Lightning does after validation.
        """
        if self.training:
            self.reparameterized = False
        if self.reparameterized:
            if self.use_fft and features.dtype in FFT_DTYPES and not is_traced():
                return depthwise_conv2d_fft(features, self.fused_weight, self.fused_bias)
            return F.conv2d(
                features,
                self.fused_weight,
                self.fused_bias,
                padding=self.kernel_size // 2,
                groups=self.channels,
            )
        output = self.large(features)
        if self.small is not None:
            output = output + self.small(features)
        return output

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse both branches and their batch norms into one ``k x k`` kernel (eval mode only).

        Raises:
            RuntimeError: If the module is in training mode, where batch norm uses batch statistics.
        """
        if self.training:
            msg = "ReparamLargeKernelConv.reparameterize() needs eval mode (batch norm running statistics)."
            raise RuntimeError(msg)
        weight, bias = fuse_branch(self.large)
        if self.small is not None:
            small_weight, small_bias = fuse_branch(self.small)
            pad = (self.kernel_size - small_weight.shape[-1]) // 2
            weight = weight + F.pad(small_weight, [pad] * 4)
            bias = bias + small_bias
        self.fused_weight.copy_(weight)
        self.fused_bias.copy_(bias)
        self.reparameterized = True

    def train(self, mode: bool = True) -> ReparamLargeKernelConv:
        """Set training mode; training invalidates the fused kernel, so the branches are used again."""
        if mode:
            self.reparameterized = False
        return super().train(mode)


class LargeKernelBlock(nn.Module):
    """RepLKNet block: ``x + BN(pw2(ReLU(LK(ReLU(BN(pw1(x)))))))`` with a re-parameterisable large kernel.

    Args:
        channels: Input and output channels.
        kernel_size: Side of the depthwise large kernel.
        small_kernel_size: Side of its parallel small kernel (``0``: none).
        fft_min_kernel_size: See :class:`ReparamLargeKernelConv`.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 31,
        small_kernel_size: int = 5,
        fft_min_kernel_size: int = DEFAULT_FFT_MIN_KERNEL_SIZE,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            ReparamLargeKernelConv(channels, kernel_size, small_kernel_size, fft_min_kernel_size),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Residual large-kernel update of ``[B, C, H, W]`` features."""
        return features + self.body(features)


class DefectPredictionNetwork(nn.Module):
    """U-Net predicting defect-map logits, with :class:`LargeKernelBlock` s at strides 4 and coarser.

    Stage ``s`` halves the resolution with a strided ``3 x 3`` convolution and then applies a large-kernel
    block (stages ``s >= 2``, i.e. strides 4 to ``2^depth``, as in RepLKNet) or a ``3 x 3`` convolution
    (stage 1, where a ``31 x 31`` depthwise convolution would cost 4 times more than at stride 4).
    The decoder up-samples and fuses the skip connection of every stage. The untrained network predicts
    :data:`DEFECT_PRIOR` everywhere.

    Args:
        in_channels: Input channels (image and reconstruction concatenated: 6).
        base_width: Channels of the full-resolution stage (doubled per stage, at most ``8 x``).
        depth: Number of down-sampling (stride-2) stages, at least 2.
        kernel_size: Side of the depthwise large kernels.
        small_kernel_size: Side of their parallel small kernels (``0``: none).
        fft_min_kernel_size: See :class:`ReparamLargeKernelConv`.
    """

    def __init__(
        self,
        in_channels: int = 6,
        base_width: int = 64,
        depth: int = 4,
        kernel_size: int = 31,
        small_kernel_size: int = 5,
        fft_min_kernel_size: int = DEFAULT_FFT_MIN_KERNEL_SIZE,
    ) -> None:
        super().__init__()
        widths = stage_widths(base_width, depth)
        self.stem = double_conv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(widths[stage - 1], widths[stage], stride=2),
                LargeKernelBlock(widths[stage], kernel_size, small_kernel_size, fft_min_kernel_size)
                if stage >= 2
                else conv_bn_relu(widths[stage], widths[stage]),
            )
            for stage in range(1, depth + 1)
        )
        self.up = nn.ModuleList(
            double_conv(widths[stage] + widths[stage - 1], widths[stage - 1]) for stage in range(depth, 0, -1)
        )
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)
        nn.init.constant_(self.head.bias, torch.logit(torch.tensor(DEFECT_PRIOR)).item())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Defect-map logits ``[B, 1, H, W]`` of ``[B, in_channels, H, W]`` inputs."""
        skips = [self.stem(inputs)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        decoded = skips.pop()
        for stage in self.up:
            skip = skips.pop()
            decoded = stage(torch.cat([resize_to(decoded, skip), skip], dim=1))
        return self.head(decoded)


class DmpModel(nn.Module):
    """Dmp network: reconstruction, then defect-map prediction from ``concat(input, reconstruction)``.

    Args:
        reconstruction_width: Channels of the reconstruction network's full-resolution stage.
        prediction_width: Channels of the defect prediction network's full-resolution stage.
        depth: Number of down-sampling stages of both networks.
        kernel_size: Side of the depthwise large kernels of the defect prediction network.
        small_kernel_size: Side of their parallel small kernels (``0``: none).
        fft_min_kernel_size: Re-parameterised kernels at least this large run through the FFT (``0``: never);
            see :class:`ReparamLargeKernelConv`.
        score_filter_size: Side of the mean filter applied to the anomaly map before taking its maximum.

    Example:
        >>> model = DmpModel(reconstruction_width=8, prediction_width=8, depth=2).eval()
        >>> output = model.reparameterize()(torch.rand(1, 3, 64, 64))
        >>> output.pred_score.shape, output.anomaly_map.shape
        (torch.Size([1]), torch.Size([1, 1, 64, 64]))
    """

    def __init__(
        self,
        reconstruction_width: int = 128,
        prediction_width: int = 64,
        depth: int = 4,
        kernel_size: int = 31,
        small_kernel_size: int = 5,
        score_filter_size: int = 21,
        fft_min_kernel_size: int = DEFAULT_FFT_MIN_KERNEL_SIZE,
    ) -> None:
        super().__init__()
        for name, value in (("reconstruction_width", reconstruction_width), ("prediction_width", prediction_width)):
            if value < 1:
                msg = f"{name} must be a positive number of channels, got {value}."
                raise ValueError(msg)
        if depth < 2:
            msg = f"depth must be >= 2 down-sampling stages (large kernels start at stride 4), got {depth}."
            raise ValueError(msg)
        self.reconstruction = ReconstructionNetwork(3, reconstruction_width, depth)
        if fft_min_kernel_size < 0:
            msg = f"fft_min_kernel_size must be >= 0 (0: never use the FFT), got {fft_min_kernel_size}."
            raise ValueError(msg)
        self.prediction = DefectPredictionNetwork(
            6, prediction_width, depth, kernel_size, small_kernel_size, fft_min_kernel_size
        )
        self.anomaly_score = MeanFilteredMax(score_filter_size)
        self.input_requirement = InputSizeRequirement(
            "Dmp",
            minimum=2**depth,
            reason=f"depth={depth} halvings of the reconstruction encoder must leave at least 1 pixel",
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | InferenceBatch:
        """Reconstruct and predict the defect map of ``[B, 3, H, W]`` images in ``[0, 1]``.

        Returns:
            Training: reconstruction ``[B, 3, H, W]`` and defect-map logits ``[B, 1, H, W]``.
            Eval: :class:`InferenceBatch` with ``anomaly_map`` = sigmoid of the defect map
            ``[B, 1, H, W]`` and ``pred_score`` ``[B]`` = max of the mean-filtered map.
        """
        self.input_requirement.check_batch(images)
        nonfinite = None
        if not self.training:
            images, nonfinite = replace_nonfinite(images)
        reconstruction = self.reconstruction(images)
        logits = self.prediction(torch.cat([images, reconstruction], dim=1))
        if nonfinite is None:
            return reconstruction, logits
        anomaly_map = torch.sigmoid(logits)
        return mark_nonfinite(InferenceBatch(pred_score=self.anomaly_score(anomaly_map), anomaly_map=anomaly_map), nonfinite)

    def reparameterize(self) -> DmpModel:
        """Switch to eval mode and fuse every large-kernel block into a single convolution; returns ``self``.

        Outputs are unchanged (up to float rounding); inference is faster. Calling ``train()`` undoes it.
        """
        self.eval()
        for module in self.modules():
            if isinstance(module, ReparamLargeKernelConv):
                module.reparameterize()
        return self
