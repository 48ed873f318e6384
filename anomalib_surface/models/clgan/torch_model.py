"""PyTorch networks of CLGAN: ResNet generator, PatchGAN discriminator and PatchNCE projection heads.

The generator and discriminator follow CUT / pix2pix (Park et al., "Contrastive Learning for Unpaired
Image-to-Image Translation", ECCV 2020); the generator ends in a sigmoid so that reconstructions live in
``[0, 1]`` like the input images. At inference only the generator is used: the anomaly map is the smoothed
residual between an image and its reconstruction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_surface.components.checks import require_int
from anomalib_surface.components.finite_inputs import mark_nonfinite, replace_nonfinite
from anomalib_surface.components.input_size import InputSizeRequirement, gaussian_blur_min_side, patchgan_min_side

from .anomaly_map import AnomalyMapGenerator

__all__ = [
    "GENERATORS",
    "ClganModel",
    "ConvAutoencoder",
    "PatchGANDiscriminator",
    "PatchSampleMLP",
    "ResnetBlock",
    "ResnetGenerator",
    "StagedAutoencoder",
]

NORMS = ("instance", "batch")
GENERATORS = ("resnet", "conv_ae", "vae")
"""Generators by name: CUT's ResNet generator (CLGAN), and the paper's baselines in the same code: a plain
convolutional autoencoder (UDCAE-like) and a convolutional VAE (trained with SSIM for VAE-SSIM)."""


def _norm_layer(norm: str, channels: int) -> nn.Module:
    """Normalisation layer by name: affine-free InstanceNorm (as CUT) or BatchNorm."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    msg = f"norm must be one of {NORMS}, got {norm!r}."
    raise ValueError(msg)


class ResnetBlock(nn.Module):
    """Residual block ``x + conv-norm-relu-conv-norm(x)`` with reflection padding (width kept)."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        bias = norm != "batch"
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
            _norm_layer(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
            _norm_layer(norm, channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` -> ``[B, C, h, w]``."""
        return features + self.block(features)


class StagedAutoencoder(nn.Module):
    """Encoder given as a list of stages (``self.encoder``, whose outputs PatchNCE can use) and a decoder
    (``self.decoder``) from the last stage's output to an image in ``[0, 1]``."""

    encoder: nn.ModuleList
    decoder: nn.Sequential

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every encoder stage for ``[B, C, H, W]`` images (stage ``i`` at index ``i``)."""
        features = []
        for stage in self.encoder:
            images = stage(images)
            features.append(images)
        return features

    def decode(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[B, C, H, W]`` in ``[0, 1]`` from the last encoder stage's output."""
        return self.decoder(bottleneck)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``[B, C, H, W]`` images; the output has the same shape, values in ``[0, 1]``."""
        return self.decode(self.encode(images)[-1])


class ResnetGenerator(StagedAutoencoder):
    """Encoder-decoder generator of CUT with a sigmoid output.

    The encoder is a list of *stages* whose outputs are the features PatchNCE can use: stage 0 is the stem
    (7x7 conv, ``ngf`` channels), stages ``1..n_downsampling`` are stride-2 3x3 convs doubling the width,
    and the last ``n_blocks`` stages are residual blocks at width ``ngf * 2**n_downsampling``. The decoder
    mirrors the downsampling with transposed convs and ends in a 7x7 conv and a sigmoid.

    Args:
        in_channels (int): Image channels. Defaults to ``3``.
        ngf (int): Width of the stem. Defaults to ``64``.
        n_downsampling (int): Number of stride-2 stages; ``H`` and ``W`` must be divisible by
            ``2**n_downsampling``. Defaults to ``2``.
        n_blocks (int): Residual blocks at the bottleneck. Defaults to ``6``.
        norm (str): ``"instance"`` or ``"batch"``. Defaults to ``"instance"``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        ngf: int = 64,
        n_downsampling: int = 2,
        n_blocks: int = 6,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        require_int("ngf", ngf, 1)
        require_int("n_downsampling", n_downsampling, 0)
        require_int("n_blocks", n_blocks, 0)
        bias = norm != "batch"
        widths = [ngf * 2**level for level in range(n_downsampling + 1)]

        stages = [
            nn.Sequential(
                nn.ReflectionPad2d(3),
                nn.Conv2d(in_channels, ngf, kernel_size=7, bias=bias),
                _norm_layer(norm, ngf),
                nn.ReLU(inplace=True),
            ),
        ]
        stages += [
            nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=bias),
                _norm_layer(norm, c_out),
                nn.ReLU(inplace=True),
            )
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        ]
        stages += [ResnetBlock(widths[-1], norm) for _ in range(n_blocks)]
        self.encoder = nn.ModuleList(stages)
        self.stage_channels: list[int] = widths + [widths[-1]] * n_blocks

        decoder: list[nn.Module] = []
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
            decoder += [
                nn.ConvTranspose2d(c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias),
                _norm_layer(norm, c_out),
                nn.ReLU(inplace=True),
            ]
        decoder += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, in_channels, kernel_size=7), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)
        self.size_divisor = 2**n_downsampling


class ConvAutoencoder(StagedAutoencoder):
    """Plain convolutional (variational) autoencoder, the paper's UDCAE and VAE-SSIM baselines.

    No residual blocks and no skip connections: the encoder is a stride-1 3x3 stem (``ngf`` channels) and
    ``n_downsampling`` stride-2 4x4 convs doubling the width (norm, LeakyReLU 0.2), then a 1x1 bottleneck conv
    to ``latent_channels`` channels (twice that for the VAE: mean and log-variance). The decoder mirrors it
    with stride-2 transposed convs and ends in a 3x3 conv and a sigmoid. The encoder stages (stem,
    downsamplings, bottleneck) are the features PatchNCE can use, as in :class:`ResnetGenerator`.

    With ``variational`` the bottleneck holds ``(mean, log_variance)`` of a diagonal Gaussian per location;
    :meth:`decode` samples it in training mode (reparameterisation) and takes the mean in eval mode, and
    :meth:`kl_divergence` gives the KL term to ``N(0, I)``.

    Args:
        in_channels (int): Image channels. Defaults to ``3``.
        ngf (int): Width of the stem. Defaults to ``64``.
        n_downsampling (int): Number of stride-2 stages; ``H`` and ``W`` must be divisible by
            ``2**n_downsampling``. Defaults to ``4``.
        latent_channels (int): Channels of the bottleneck (of the mean for the VAE). Defaults to ``16``.
        norm (str): ``"instance"`` or ``"batch"``. Defaults to ``"batch"``.
        variational (bool): Gaussian latent (VAE) instead of a deterministic one. Defaults to ``False``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        ngf: int = 64,
        n_downsampling: int = 4,
        latent_channels: int = 16,
        norm: str = "batch",
        variational: bool = False,
    ) -> None:
        super().__init__()
        require_int("ngf", ngf, 1)
        require_int("n_downsampling", n_downsampling, 0)
        require_int("latent_channels", latent_channels, 1)
        widths = [ngf * 2**level for level in range(n_downsampling + 1)]
        self.variational = variational
        moments = 2 * latent_channels if variational else latent_channels
        stages = [nn.Sequential(nn.Conv2d(in_channels, ngf, 3, padding=1), _norm_layer(norm, ngf), nn.LeakyReLU(0.2))]
        stages += [
            nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), _norm_layer(norm, c_out), nn.LeakyReLU(0.2))
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        ]
        stages.append(nn.Conv2d(widths[-1], moments, kernel_size=1))
        self.encoder = nn.ModuleList(stages)
        self.stage_channels: list[int] = [*widths, moments]
        decoder: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
            decoder += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), _norm_layer(norm, c_out), nn.LeakyReLU(0.2)]
        decoder += [nn.Conv2d(ngf, in_channels, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)
        self.size_divisor = 2**n_downsampling

    def decode(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[B, C, H, W]`` in ``[0, 1]`` from the latent (VAE: sampled in training, mean in eval)."""
        if self.variational:
            mean, log_variance = bottleneck.chunk(2, dim=1)
            bottleneck = mean + torch.randn_like(mean) * (0.5 * log_variance).exp() if self.training else mean
        return self.decoder(bottleneck)

    def kl_divergence(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Mean KL divergence per latent element of the VAE's Gaussian ``[B, 2L, h, w]`` moments from ``N(0, I)``."""
        mean, log_variance = bottleneck.chunk(2, dim=1)
        return 0.5 * (mean.square() + log_variance.exp() - 1 - log_variance).mean()


class PatchGANDiscriminator(nn.Module):
    """PatchGAN discriminator of pix2pix/CUT: one realness score per overlapping receptive field.

    Args:
        in_channels (int): Image channels. Defaults to ``3``.
        ndf (int): Width of the first conv. Defaults to ``64``.
        n_layers (int): Number of stride-2 convs (the receptive field grows with it). Defaults to ``3``.
        norm (str): ``"instance"`` or ``"batch"``. Defaults to ``"instance"``.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        require_int("ndf", ndf, 1)
        require_int("n_layers_d", n_layers, 1)
        bias = norm != "batch"
        widths = [ndf * min(2**level, 8) for level in range(n_layers + 1)]
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for level in range(1, n_layers + 1):
            stride = 2 if level < n_layers else 1
            layers += [
                nn.Conv2d(widths[level - 1], widths[level], kernel_size=4, stride=stride, padding=1, bias=bias),
                _norm_layer(norm, widths[level]),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(widths[-1], 1, kernel_size=4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` images -> ``[B, 1, h, w]`` patch logits (``h ~ H / 2**(n_layers - 1) - 2``)."""
        return self.layers(images)


class PatchSampleMLP(nn.Module):
    """Per-layer 2-layer MLP projection heads on randomly sampled feature locations (``netF`` of CUT).

    Args:
        in_channels (Sequence[int]): Channels of each feature map the heads project, in order.
        out_dim (int): Width of both MLP layers and of the projected embeddings. Defaults to ``256``.
    """

    def __init__(self, in_channels: Sequence[int], out_dim: int = 256) -> None:
        super().__init__()
        require_int("nce_mlp_dim", out_dim, 1)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim))
            for channels in in_channels
        )

    def forward(
        self,
        features: Sequence[torch.Tensor],
        num_patches: int,
        patch_ids: Sequence[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample locations of each feature map, project them and L2-normalise.

        Args:
            features (Sequence[torch.Tensor]): One ``[B, C_l, h_l, w_l]`` map per head.
            num_patches (int): Locations drawn per layer (all of them if the map is smaller); the same
                locations are used for every image of the batch.
            patch_ids (Sequence[torch.Tensor] | None): Locations to reuse (flat indices per layer), e.g. those
                returned for the matching features of another image; ``None`` draws new ones.

        Returns:
            Embeddings ``[B, P_l, out_dim]`` per layer (unit norm) and the flat location indices ``[P_l]``.
        """
        if len(features) != len(self.heads):
            msg = f"Expected {len(self.heads)} feature maps (one per nce layer), got {len(features)}."
            raise ValueError(msg)
        embeddings, used_ids = [], []
        for index, (feature, head) in enumerate(zip(features, self.heads, strict=True)):
            flat = feature.flatten(2).transpose(1, 2)  # [B, h*w, C]
            if patch_ids is None:
                ids = torch.randperm(flat.shape[1], device=flat.device)[:num_patches]
            else:
                ids = patch_ids[index]
            embeddings.append(F.normalize(head(flat[:, ids]), dim=-1))
            used_ids.append(ids)
        return embeddings, used_ids


class ClganModel(nn.Module):
    """CLGAN networks: the generator used at inference plus the training-only discriminator and NCE heads.

    Args:
        generator (str): ``"resnet"`` (:class:`ResnetGenerator`, CLGAN), ``"conv_ae"`` or ``"vae"``
            (:class:`ConvAutoencoder`, the paper's baselines). Defaults to ``"resnet"``.
        ngf (int): Generator stem width. Defaults to ``64``.
        n_downsampling (int): Generator stride-2 stages. Defaults to ``2``.
        n_blocks (int): Generator residual blocks (``"resnet"`` only). Defaults to ``6``.
        latent_channels (int): Bottleneck width of ``"conv_ae"``/``"vae"``. Defaults to ``16``.
        norm (str): ``"instance"`` or ``"batch"`` in both networks. Defaults to ``"instance"``.
        ndf (int): Discriminator width. Defaults to ``64``.
        n_layers_d (int): Discriminator stride-2 convs. Defaults to ``3``.
        use_discriminator (bool): Build the discriminator (``False`` when the adversarial weight is 0).
            Defaults to ``True``.
        nce_layers (Sequence[int]): Encoder stages (see :class:`ResnetGenerator`) used by PatchNCE; empty
            builds no projection heads. Defaults to ``(0, 1, 2, 3, 7)``.
        nce_mlp_dim (int): Width of the projection heads. Defaults to ``256``.
        channel_reduction (str): How the per-channel residual becomes one map, see
            :class:`AnomalyMapGenerator`. Defaults to ``"max"``.
        sigma (float): Gaussian smoothing of the map in pixels; 0 disables it. Defaults to ``4.0``.
    """

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
        use_discriminator: bool = True,
        nce_layers: Sequence[int] = (0, 1, 2, 3, 7),
        nce_mlp_dim: int = 256,
        channel_reduction: str = "max",
        sigma: float = 4.0,
    ) -> None:
        super().__init__()
        if generator not in GENERATORS:
            msg = f"generator must be one of {GENERATORS}, got {generator!r}."
            raise ValueError(msg)
        self.generator: StagedAutoencoder = (
            ResnetGenerator(ngf=ngf, n_downsampling=n_downsampling, n_blocks=n_blocks, norm=norm)
            if generator == "resnet"
            else ConvAutoencoder(
                ngf=ngf, n_downsampling=n_downsampling, latent_channels=latent_channels, norm=norm, variational=generator == "vae",
            )
        )
        num_stages = len(self.generator.stage_channels)
        invalid = [layer for layer in nce_layers if isinstance(layer, bool) or not 0 <= layer < num_stages]
        if invalid or len(set(nce_layers)) != len(nce_layers):
            msg = (
                f"nce_layers must be distinct encoder stage indices in [0, {num_stages - 1}] "
                f"(0 = stem, 1..n_downsampling = downsampling convs, then residual blocks), got {list(nce_layers)}."
            )
            raise ValueError(msg)
        self.nce_layers = list(nce_layers)
        self.discriminator = (
            PatchGANDiscriminator(ndf=ndf, n_layers=n_layers_d, norm=norm) if use_discriminator else None
        )
        self.patch_heads = (
            PatchSampleMLP([self.generator.stage_channels[layer] for layer in self.nce_layers], nce_mlp_dim)
            if self.nce_layers
            else None
        )
        self.anomaly_map_generator = AnomalyMapGenerator(channel_reduction=channel_reduction, sigma=sigma)
        self.input_requirement = InputSizeRequirement(
            "Clgan",
            minimum=max(gaussian_blur_min_side(sigma), patchgan_min_side(n_layers_d) if use_discriminator else 1),
            multiple_of=self.generator.size_divisor,
            reason=f"generator n_downsampling={n_downsampling}, discriminator n_layers_d={n_layers_d}, "
            f"anomaly-map smoothing sigma={sigma}",
        )

    def residual(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction ``[B, C, H, W]`` and per-channel absolute residual ``|x - G(x)|`` ``[B, C, H, W]``."""
        reconstruction = self.generator(images)
        return reconstruction, (images - reconstruction).abs()

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Reconstruct images in training mode; score them in eval mode.

        Args:
            images (torch.Tensor): ``[B, C, H, W]`` images in ``[0, 1]``.

        Returns:
            Training: the reconstruction ``[B, C, H, W]``. Eval: ``InferenceBatch`` with ``anomaly_map``
            ``[B, 1, H, W]`` (smoothed residual) and ``pred_score`` ``[B]`` (its maximum).
        """
        self.input_requirement.check_batch(images)
        if self.training:
            return self.generator(images)
        images, nonfinite = replace_nonfinite(images)
        _, residual = self.residual(images)
        anomaly_map = self.anomaly_map_generator(residual)
        return mark_nonfinite(InferenceBatch(pred_score=anomaly_map.amax(dim=(1, 2, 3)), anomaly_map=anomaly_map), nonfinite)
