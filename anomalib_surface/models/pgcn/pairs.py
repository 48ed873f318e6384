"""Training pairs of PGCN's comparator: (generated patch, real patch, difference mask).

Two kinds of mismatching pairs teach the comparator to *compare* its inputs rather than to spot defects
in the real patch alone:

- *defect* pairs: the prediction from a clean context against the real patch with a synthetic defect;
- *wrong-prediction* pairs: a prediction from another strip's context (a shifted context) against the
  clean real patch, so the real patch is flawless and only the comparison reveals the mismatch.

A pair's difference mask holds the pixels that visibly differ (:func:`visible_change`) between the real
patch and what it should be (defect pairs: the clean patch; wrong-prediction pairs: the prediction from
the right context). A mismatching pair whose visible change covers less than ``min_visible_change`` of
the patch becomes a matching pair (the clean real patch, the prediction from the right context): a defect
nobody could see is no useful mismatch. Every strip thus gives one pair, so batches keep their size (never
empty, the same count on every DDP rank).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["VISIBLE_CONTRAST", "ComparatorPairs", "comparator_pairs", "visible_change"]

VISIBLE_CONTRAST = 0.1
"""A pixel visibly changed when a channel changed by more than this (images in ``[0, 1]``)."""


class ComparatorPairs(NamedTuple):
    """``generated`` and ``real`` patches ``[M, C, h, w]``, difference ``masks`` ``[M, 1, h, w]``, ``kind`` ``[M]``.

    ``kind`` is 0 for matching pairs, 1 for defect pairs, 2 for wrong-prediction pairs.
    """

    generated: torch.Tensor
    real: torch.Tensor
    masks: torch.Tensor
    kind: torch.Tensor


def visible_change(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``[M, 1, h, w]`` 0/1 map of pixels where ``[M, C, h, w]`` patches differ by over :data:`VISIBLE_CONTRAST`."""
    return ((first - second).abs().amax(dim=1, keepdim=True) > VISIBLE_CONTRAST).float()


def comparator_pairs(
    generator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    strips: torch.Tensor,
    defective_targets: torch.Tensor,
    defect_masks: torch.Tensor,
    wrong_prediction_probability: float,
    min_visible_change: float,
) -> ComparatorPairs:
    """Comparator pairs of clean strips, the defective versions of their targets, and shifted contexts.

    Args:
        generator: The (frozen) pattern generator, ``(far, near) -> prediction``.
        strips: ``[M, 3, C, h, w]`` clean far, near and target patches (:func:`~.patches.sample_triplets`).
        defective_targets: ``[M, C, h, w]`` the targets with synthetic defects (unchanged where none).
        defect_masks: ``[M, 1, h, w]`` the synthetic defects' masks.
        wrong_prediction_probability: Chance that a strip without a defect becomes a wrong-prediction pair
            (its context replaced by the next strip's).
        min_visible_change: Least fraction of a mismatching pair's patch that visibly changed.

    Returns:
        One pair per strip.
    """
    far, near, target = strips.unbind(1)
    count = far.shape[0]
    with torch.no_grad():
        predictions = generator(torch.cat([far, far.roll(1, 0)]), torch.cat([near, near.roll(1, 0)]))
    generated, shifted = predictions[:count], predictions[count:]
    has_defect = defect_masks.flatten(1).amax(dim=1) > 0
    wrong = ~has_defect & (torch.rand(count, device=far.device) < wrong_prediction_probability)
    masks = torch.where(
        wrong[:, None, None, None],
        visible_change(shifted, generated),
        visible_change(defective_targets, target) * defect_masks,
    )
    visible = masks.flatten(1).mean(dim=1) >= min_visible_change
    has_defect, wrong = has_defect & visible, wrong & visible
    kind = has_defect.long() + 2 * wrong.long()
    return ComparatorPairs(
        generated=torch.where(wrong[:, None, None, None], shifted, generated),
        real=torch.where(has_defect[:, None, None, None], defective_targets, target),
        masks=masks * (kind > 0)[:, None, None, None],
        kind=kind,
    )
