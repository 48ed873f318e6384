"""PyTorch model of ToCoAD: feature extractor F, discriminator D, SimSiam heads and the memory bank."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from anomalib.data import InferenceBatch
from anomalib.data.utils.tiler import Tiler
from anomalib.models.components import DynamicBufferMixin
from torch import nn
from torch.nn import functional as F  # noqa: N812

from anomalib_surface.components import create_backbone
from anomalib_surface.components.finite_inputs import mark_nonfinite, replace_nonfinite
from anomalib_surface.components.input_size import InputSizeRequirement, gaussian_blur_min_side

from .anomaly_map import AnomalyMapGenerator
from .nearest_neighbor import NearestNeighborSearch
from .tiling import untile_features

__all__ = ["TocoadModel"]


def _layer_indices(backbone: str, layers: Sequence[str]) -> list[int]:
    """timm ``out_indices`` of the named ``layers`` (e.g. ``"layer2"``) of ``backbone``."""
    with torch.device("meta"):  # only the layer names are needed: build without memory or weights
        model = create_backbone(backbone, pre_trained=False, features_only=True)
    names = model.feature_info.module_name()
    unknown = [layer for layer in layers if layer not in names]
    if unknown or not layers:
        msg = f"layers must be a non-empty subset of {names} for backbone '{backbone}', got {list(layers)}."
        raise ValueError(msg)
    return [names.index(layer) for layer in layers]


def _mlp(dims: Sequence[int], last_batch_norm: bool) -> nn.Sequential:
    """Linear-BN-ReLU layers through ``dims`` (SimSiam style), the last one without ReLU."""
    layers: list[nn.Module] = []
    for index, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        last = index == len(dims) - 2
        layers.append(nn.Linear(in_dim, out_dim, bias=last and not last_batch_norm))
        if not last:
            layers += [nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]
        elif last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


ANOMALY_PRIOR = 0.01
"""Anomaly probability the untrained D outputs everywhere: its last bias starts at ``logit(ANOMALY_PRIOR)``, the
prior initialisation of the focal loss (Lin et al., ICCV 2017), as Dmp's defect head. With a zero bias D starts at
0.5 on every patch and its first epochs only lower the background."""


class SegmentationHead(nn.Module):
    """D: per-patch anomaly logits ``[B, 1, h, w]`` from ``[B, C, h, w]`` patch features of F."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, kernel_size=1),
        )
        nn.init.constant_(self.layers[-1].bias, torch.logit(torch.tensor(ANOMALY_PRIOR)).item())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Anomaly logits of each patch."""
        return self.layers(features)


class TocoadModel(DynamicBufferMixin, nn.Module):
    """ToCoAD network: F (timm backbone), D (segmentation head), SimSiam heads and a patch memory bank.

    In training mode :meth:`forward` returns the patch embedding; in eval mode it scores images
    PatchCore-style against ``memory_bank``. The backbone always stays in eval mode (its batch-norm
    statistics are the pre-trained ones; its weights are still trained in stage 2), and D is kept in
    eval mode from stage 2 on, when it is frozen. With a ``tiler`` (set by anomalib's
    ``TilerConfigurationCallback``) the features of large images are extracted tile by tile and
    assembled into one feature map per image, in training and in inference.

    Args:
        backbone: timm model name.
        layers: Backbone stages whose features are concatenated (e.g. ``("layer2", "layer3")``).
        pre_trained: Load ImageNet weights.
        weights_path: Local weights file of the backbone.
        discriminator_channels: Width of D.
        projector_dim: Width of the SimSiam projector (hidden and output).
        predictor_hidden_dim: Bottleneck width of the SimSiam predictor.
        num_neighbors: Memory-bank neighbours of PatchCore's image-score re-weighting (1: max patch score).
        anomaly_map_sigma: Standard deviation of the Gaussian smoothing of the anomaly map.
        search: Nearest-neighbour search of the memory bank.
    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] = ("layer2", "layer3"),
        pre_trained: bool = True,
        weights_path: str | Path | None = None,
        discriminator_channels: int = 256,
        projector_dim: int = 2048,
        predictor_hidden_dim: int = 512,
        num_neighbors: int = 9,
        anomaly_map_sigma: float = 4.0,
        search: NearestNeighborSearch | None = None,
    ) -> None:
        super().__init__()
        for name, value in {
            "discriminator_channels": discriminator_channels,
            "projector_dim": projector_dim,
            "predictor_hidden_dim": predictor_hidden_dim,
            "num_neighbors": num_neighbors,
        }.items():
            if value < 1:
                msg = f"{name} must be a positive integer, got {value}."
                raise ValueError(msg)
        self.feature_extractor = create_backbone(
            backbone,
            pre_trained=pre_trained,
            weights_path=weights_path,
            features_only=True,
            exportable=True,
            out_indices=_layer_indices(backbone, layers),
        ).eval()
        self.layers = tuple(layers)
        for name, parameter in self.feature_extractor.named_parameters():
            # Only the stages whose outputs form the patch features are ever fine-tuned (stage 2).
            parameter.requires_grad_(any(name.startswith(f"{layer}.") for layer in self.layers))
        embedding_dim = sum(self.feature_extractor.feature_info.channels())
        self.feature_pooler = nn.AvgPool2d(kernel_size=3, stride=1, padding=1)
        self.discriminator = SegmentationHead(embedding_dim, discriminator_channels)
        self.projector = _mlp([embedding_dim, projector_dim, projector_dim, projector_dim], last_batch_norm=True)
        self.predictor = _mlp([projector_dim, predictor_hidden_dim, projector_dim], last_batch_norm=False)
        self.anomaly_map_generator = AnomalyMapGenerator(sigma=anomaly_map_sigma)
        self.input_requirement = InputSizeRequirement(
            "Tocoad",
            minimum=gaussian_blur_min_side(anomaly_map_sigma),
            reason=f"Gaussian smoothing of the anomaly map, sigma={anomaly_map_sigma}",
        )
        self.num_neighbors = num_neighbors
        self.search = search or NearestNeighborSearch()
        self.tiler: Tiler | None = None

        self.memory_bank: torch.Tensor
        self.register_buffer("memory_bank", torch.empty(0))
        self.discriminator_frozen = False
        """Whether D is frozen (from stage 2 on); set by the Lightning module at each epoch start."""

    def train(self, mode: bool = True) -> TocoadModel:
        """Set training mode, keeping the backbone (always) and the frozen D (stage >= 2) in eval mode."""
        super().train(mode)
        self.feature_extractor.eval()
        if self.discriminator_frozen:
            self.discriminator.eval()
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Locally aggregated patch features ``[B, C, h, w]`` (PatchCore), at the first layer's resolution."""
        if self.tiler:
            images = self.tiler.tile(images)
        features = [self.feature_pooler(feature) for feature in self.feature_extractor(images)]
        size = features[0].shape[-2:]
        resized = [F.interpolate(feature, size=size, mode="bilinear") for feature in features[1:]]
        embedding = torch.cat([features[0], *resized], dim=1)
        return untile_features(self.tiler, embedding) if self.tiler else embedding

    def discriminate(self, embedding: torch.Tensor) -> torch.Tensor:
        """D's anomaly logits ``[B, 1, h, w]`` of ``[B, C, h, w]`` patch features."""
        return self.discriminator(embedding)

    def fine_tuned_parameters(self) -> list[nn.Parameter]:
        """F's parameters trained in stage 2: those of the stages named in ``layers`` (the others stay frozen)."""
        return [parameter for parameter in self.feature_extractor.parameters() if parameter.requires_grad]

    def simsiam(self, embedding: torch.Tensor, per_patch: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """SimSiam projection ``z`` and prediction ``p`` of one view's ``[B, C, h, w]`` patch features.

        ``per_patch``: project every patch (``[B, projector_dim, h, w]`` results, the heads' batch norm over all
        patches of the view), else the spatial mean of the patches (``[B, projector_dim]``, as SimSiam).
        """
        if not per_patch:
            projection = self.projector(embedding.mean(dim=(2, 3)))
            return projection, self.predictor(projection)
        batch, channels, height, width = embedding.shape
        patches = embedding.permute(0, 2, 3, 1).reshape(-1, channels)
        projection = self.projector(patches)
        prediction = self.predictor(projection)
        return tuple(  # type: ignore[return-value]
            tensor.reshape(batch, height, width, -1).permute(0, 3, 1, 2) for tensor in (projection, prediction)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Patch embedding ``[B, C, h, w]`` in training mode, else scores against the memory bank.

        Args:
            images: ``[B, 3, H, W]`` pre-processed images.

        Returns:
            Training: the embedding. Eval: ``InferenceBatch(pred_score=[B], anomaly_map=[B, 1, H, W])``.

        Raises:
            ValueError: In eval mode, if the memory bank has not been built (training did not reach its pass).
        """
        self.input_requirement.check_batch(images)
        if self.training:
            return self.embed(images)
        images, nonfinite = replace_nonfinite(images)
        embedding = self.embed(images)
        if self.memory_bank.numel() == 0:
            msg = (
                "The memory bank is empty: train Tocoad through its memory-bank pass (the last epoch of training) "
                "before validation, test, prediction or export."
            )
            raise ValueError(msg)
        batch_size, channels, height, width = embedding.shape
        patches = embedding.permute(0, 2, 3, 1).reshape(batch_size, height * width, channels)
        distances, locations = self.search(self.memory_bank, patches.reshape(-1, channels), k=1)
        patch_scores = distances.reshape(batch_size, height * width)
        pred_score = self.compute_anomaly_score(patch_scores, locations.reshape(batch_size, -1), patches)
        anomaly_map = self.anomaly_map_generator(patch_scores.reshape(batch_size, 1, height, width), images.shape[-2:])
        return mark_nonfinite(InferenceBatch(pred_score=pred_score, anomaly_map=anomaly_map), nonfinite)

    def compute_anomaly_score(
        self,
        patch_scores: torch.Tensor,
        locations: torch.Tensor,
        patches: torch.Tensor,
    ) -> torch.Tensor:
        """Image scores ``[B]`` with PatchCore's re-weighting (as anomalib's ``PatchcoreModel.compute_anomaly_score``).

        The largest patch distance ``s*`` of each image is weighted by ``1 - softmax(d)[0]``, where ``d`` are the
        distances of that patch to the ``num_neighbors`` bank neighbours of its nearest bank row.

        Args:
            patch_scores: ``[B, P]`` nearest-neighbour distances of the patches.
            locations: ``[B, P]`` bank indices of those nearest neighbours.
            patches: ``[B, P, C]`` patch features.
        """
        if self.num_neighbors == 1:
            return patch_scores.amax(dim=1)
        rows = torch.arange(patch_scores.shape[0], device=patch_scores.device)
        max_patches = patch_scores.argmax(dim=1)
        score = patch_scores[rows, max_patches]
        nearest = self.memory_bank[locations[rows, max_patches]]
        num_support = min(self.num_neighbors, self.memory_bank.shape[0])
        _, support = self.search(self.memory_bank, nearest, k=num_support)
        distances = torch.linalg.vector_norm(patches[rows, max_patches].unsqueeze(1) - self.memory_bank[support], dim=-1)
        weights = 1 - F.softmax(distances, dim=1)[:, 0]
        return weights * score
