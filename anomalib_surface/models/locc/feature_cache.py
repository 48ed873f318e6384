"""Cached frozen features of Locc's localisation phase: the training images and defect-augmented copies of each.

In the localisation phase the backbone is frozen and the image matching module is already trained, so
``F_Mixed`` of an aligned image never changes. The first localisation epoch (and the first one after resuming)
computes it once for every training image (version 0) and for ``copies`` copies of it with a generated defect
(versions ``1..copies``), with the defect masks on the feature grid; the later epochs train ``N_M`` on the cached
features, so the paper's schedule (300 epochs, batch 32) costs the mapping network's time only.

Every ``held_out_every``-th image is kept out of training: its clean version and defect copies choose the epoch
whose ``N_M`` is kept (held-out synthetic defects, never test images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics.functional.classification import binary_auroc

__all__ = ["FeatureCache"]

CACHE_DTYPE = torch.float16
"""Storage type of the cached ``F_Mixed`` (halves the memory; the features are cast back to float to train)."""


class FeatureCache:
    """``F_Mixed`` of ``N`` images in ``V = 1 + copies`` versions, filled batch by batch, then sampled.

    Args:
        copies: Defect-augmented copies per image (``0``: the clean images only, training without outlier exposure).
        held_out_every: Every ``held_out_every``-th image (in filling order) is held out; ``0`` holds out none.
    """

    def __init__(self, copies: int, held_out_every: int = 0) -> None:
        self.copies = copies
        self.held_out_every = held_out_every
        self._feature_parts: list[torch.Tensor] = []
        self._mask_parts: list[torch.Tensor] = []
        self.features: torch.Tensor | None = None  # [V, N, C, h, w]
        self.masks: torch.Tensor | None = None  # [V, N, h, w] bool
        self._order = torch.empty(0, dtype=torch.long)
        self._offset = 0

    @property
    def complete(self) -> bool:
        """Whether every image has been added (:meth:`finish` was called)."""
        return self.features is not None

    @property
    def size(self) -> int:
        """Images added so far."""
        return sum(part.shape[1] for part in self._feature_parts) if self.features is None else self.features.shape[1]

    def is_held_out(self, rows: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool: whether the images at cache rows ``rows`` ``[B]`` are held out."""
        if self.held_out_every < 1:
            return torch.zeros_like(rows, dtype=torch.bool)
        return rows % self.held_out_every == self.held_out_every - 1

    def add(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Append a batch: ``features`` ``[V, B, C, h, w]``, ``masks`` ``[V, B, h, w]``; return its rows ``[B]``."""
        start = self.size
        self._feature_parts.append(features.detach().to(CACHE_DTYPE))
        self._mask_parts.append(masks.detach().bool())
        return torch.arange(start, start + features.shape[1])

    def finish(self) -> None:
        """Join the added batches; from now on :meth:`next_rows` walks through the training images."""
        if not self._feature_parts:
            msg = "Locc's feature cache saw no training batch; check the training dataloader and limit_train_batches."
            raise RuntimeError(msg)
        self.features = torch.cat(self._feature_parts, dim=1)
        self.masks = torch.cat(self._mask_parts, dim=1)
        self._feature_parts, self._mask_parts = [], []

    def training_rows(self) -> torch.Tensor:
        """Rows ``[N_train]`` of the images that train ``N_M``."""
        rows = torch.arange(self.size)
        return rows[~self.is_held_out(rows)]

    def held_out_rows(self) -> torch.Tensor:
        """Rows ``[N_held]`` of the held-out images."""
        rows = torch.arange(self.size)
        return rows[self.is_held_out(rows)]

    def start_epoch(self) -> None:
        """Draw a new order of the training images (global torch RNG)."""
        rows = self.training_rows()
        if len(rows) == 0:
            msg = "Locc holds out every training image (held_out_fraction too high for so few images)."
            raise ValueError(msg)
        self._order = rows[torch.randperm(len(rows))]
        self._offset = 0

    def next_rows(self, batch_size: int) -> torch.Tensor:
        """The next ``batch_size`` training rows of this epoch's order (wrapping around)."""
        positions = (self._offset + torch.arange(batch_size)) % len(self._order)
        self._offset += batch_size
        return self._order[positions]

    def pick_versions(self, count: int, probability: float) -> torch.Tensor:
        """``[count]`` versions: a random defect copy with ``probability``, else the clean image (version 0)."""
        if self.copies == 0:
            return torch.zeros(count, dtype=torch.long)
        defective = torch.rand(count) < probability
        return torch.where(defective, torch.randint(1, self.copies + 1, (count,)), 0)

    def sample(self, rows: torch.Tensor, versions: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, C, h, w]`` (float) and masks ``[B, 1, h, w]`` (0/1 float) of ``rows`` in ``versions``."""
        features = self.features[versions, rows].to(device, torch.float32)
        masks = self.masks[versions, rows].to(device, torch.float32).unsqueeze(1)
        return features, masks

    def held_out_auroc(self, distance: Callable[[torch.Tensor], torch.Tensor], chunk: int = 32) -> float | None:
        """Position-level AUROC of ``distance(F_Mixed) -> [B, 1, h, w]`` on every version of the held-out images.

        ``None`` when no held-out position is defective or none is normal (nothing to rank).
        """
        rows = self.held_out_rows()
        if len(rows) == 0:
            return None
        scores, targets = [], []
        for version in range(self.features.shape[0]):
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                features, masks = self.sample(part, torch.full_like(part, version), self.features.device)
                scores.append(distance(features).flatten().float().cpu())
                targets.append(masks.flatten().long().cpu())
        target = torch.cat(targets)
        if target.min() == target.max():
            return None
        return float(binary_auroc(torch.cat(scores), target))
