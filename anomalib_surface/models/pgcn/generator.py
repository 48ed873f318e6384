"""PGCN's pattern generator: two Swin-transformer encoders and a Swin decoder predicting a patch from two neighbours.

Paper: Huang, Li, Lin, Lian, "Unsupervised Industrial Anomaly Detection via Pattern Generative and
Contrastive Networks", arXiv 2207.09792.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from timm.layers import Mlp, PatchEmbed
from timm.models.swin_transformer import SwinTransformerStage
from torch import nn

__all__ = ["PatchExpand", "PatternGenerator", "SwinDecoder", "SwinEncoder"]


class PatchExpand(nn.Module):
    """Swin-Unet patch expanding: double the resolution and halve the channels, ``[B, h, w, C] -> [B, 2h, 2w, C/2]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Expand ``[B, h, w, C]`` NHWC features."""
        expanded = F.pixel_shuffle(self.expand(features).permute(0, 3, 1, 2), 2)
        return self.norm(expanded.permute(0, 2, 3, 1))


def _stage_dims(embed_dim: int, num_stages: int) -> list[int]:
    return [embed_dim * 2**stage for stage in range(num_stages)]


class SwinEncoder(nn.Module):
    """Patch embedding and Swin stages (timm blocks); returns the NHWC features of every stage.

    Args:
        patch_hw: Input patch ``(h, w)`` in pixels.
        patch_size: Side of the pixel squares embedded as tokens.
        embed_dim: Channels ``C`` of the first stage; stage ``s`` has ``C * 2**s``.
        depths: Swin blocks per stage.
        num_heads: Attention heads per stage.
        window_size: Attention window side (clamped by timm to smaller token grids).
        mlp_ratio: Hidden size of the blocks' MLPs relative to their width.
        in_chans: Image channels.
    """

    def __init__(
        self,
        patch_hw: tuple[int, int],
        patch_size: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        mlp_ratio: float,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(
            img_size=patch_hw,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            norm_layer=nn.LayerNorm,
            output_fmt="NHWC",
        )
        dims = _stage_dims(embed_dim, len(depths))
        resolution = self.patch_embed.grid_size
        stages = []
        for stage, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            stages.append(
                SwinTransformerStage(
                    dim=dims[max(stage - 1, 0)],
                    out_dim=dims[stage],
                    input_resolution=resolution,
                    depth=depth,
                    downsample=stage > 0,
                    num_heads=heads,
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                ),
            )
            resolution = stages[-1].output_resolution
        self.stages = nn.ModuleList(stages)

    def forward(self, patches: torch.Tensor) -> list[torch.Tensor]:
        """``[M, C_in, h, w]`` patches -> per-stage features ``[M, h_s, w_s, C_s]``, shallowest first."""
        features = self.patch_embed(patches)
        outputs = []
        for stage in self.stages:
            features = stage(features)
            outputs.append(features)
        return outputs


class SwinDecoder(nn.Module):
    """Decoder of the two encoders' features, deepest stage first.

    The deepest stage concatenates the two encoders' deepest features and projects them linearly to
    its width; every shallower stage takes the sum of both encoders' features at its resolution and
    the patch-expanded output of the stage below. Each stage then runs Swin blocks.

    Args:
        token_grid: Token grid ``(h, w)`` of the first encoder stage.
        embed_dim, depths, num_heads, window_size, mlp_ratio: As for :class:`SwinEncoder`.
    """

    def __init__(
        self,
        token_grid: tuple[int, int],
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        dims = _stage_dims(embed_dim, len(depths))
        self.bottom_projection = nn.Linear(2 * dims[-1], dims[-1])
        self.stages = nn.ModuleList(
            SwinTransformerStage(
                dim=dims[stage],
                out_dim=dims[stage],
                input_resolution=(token_grid[0] >> stage, token_grid[1] >> stage),
                depth=depth,
                downsample=False,
                num_heads=heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
            )
            for stage, (depth, heads) in enumerate(zip(depths, num_heads, strict=True))
        )
        self.expands = nn.ModuleList(PatchExpand(dims[stage + 1]) for stage in range(len(depths) - 1))

    def forward(self, far: list[torch.Tensor], near: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decode per-stage encoder features (shallowest first) into per-stage outputs, deepest first."""
        decoded = self.stages[-1](self.bottom_projection(torch.cat([far[-1], near[-1]], dim=-1)))
        outputs = [decoded]
        for stage in reversed(range(len(self.stages) - 1)):
            decoded = self.stages[stage](far[stage] + near[stage] + self.expands[stage](decoded))
            outputs.append(decoded)
        return outputs


class PatternGenerator(nn.Module):
    """Predict a patch from the two patches before it: two Swin encoders, a Swin decoder and two MLPs.

    The ``far`` (two steps away) and ``near`` (adjacent) patches each have their own encoder. An MLP
    fuses the decoder outputs of all stages (projected to ``embed_dim`` and upsampled to the first
    token grid); another MLP maps every token to its ``patch_size x patch_size`` pixels (sigmoid, so
    predictions are images in ``[0, 1]``).

    Args:
        patch_hw: Patch ``(h, w)`` in pixels (valid for :func:`validate_patch_grid`).
        patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio: Swin settings, see
            :class:`SwinEncoder`.
        in_chans: Image channels.
    """

    def __init__(
        self,
        patch_hw: tuple[int, int],
        patch_size: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        mlp_ratio: float,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        swin = {
            "embed_dim": embed_dim,
            "depths": depths,
            "num_heads": num_heads,
            "window_size": window_size,
            "mlp_ratio": mlp_ratio,
        }
        self.patch_size = patch_size
        self.far_encoder = SwinEncoder(patch_hw, patch_size, in_chans=in_chans, **swin)
        self.near_encoder = SwinEncoder(patch_hw, patch_size, in_chans=in_chans, **swin)
        self.token_grid = tuple(self.far_encoder.patch_embed.grid_size)
        self.decoder = SwinDecoder(self.token_grid, **swin)
        self.stage_projections = nn.ModuleList(
            nn.Linear(dim, embed_dim) for dim in reversed(_stage_dims(embed_dim, len(depths)))
        )
        self.fusion = Mlp(len(depths) * embed_dim, int(mlp_ratio * embed_dim), embed_dim)
        self.head = Mlp(embed_dim, int(mlp_ratio * embed_dim), in_chans * patch_size**2)

    def forward(self, far: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
        """Predict the next patch ``[M, C, h, w]`` from ``far`` and ``near`` patches ``[M, C, h, w]``."""
        decoded = self.decoder(self.far_encoder(far), self.near_encoder(near))
        upsampled = [
            F.interpolate(projection(features).permute(0, 3, 1, 2), size=self.token_grid, mode="bilinear")
            for projection, features in zip(self.stage_projections, decoded, strict=True)
        ]
        fused = self.fusion(torch.cat(upsampled, dim=1).permute(0, 2, 3, 1))
        pixels = self.head(fused).permute(0, 3, 1, 2)
        return torch.sigmoid(F.pixel_shuffle(pixels, self.patch_size))
