"""Input-size requirements of a model, checked on its pre-processor at construction and on every batch.

A model whose networks need a smallest side or sides divisible by some number declares an
:class:`InputSizeRequirement`; the Lightning model checks its pre-processor's output size when it is
built (so a bad ``image_size`` fails before training starts) and the torch model checks each batch
(images that reach it without that pre-processor). Both errors name the model, the size and the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .checks import is_traced

__all__ = ["InputSizeRequirement", "gaussian_blur_min_side", "patchgan_min_side"]


def gaussian_blur_min_side(sigma: float) -> int:
    """Smallest side anomalib's ``GaussianBlur2d`` of ``sigma`` accepts (reflect padding must be < the side).

    Its kernel is ``2 * int(4 * sigma + 0.5) + 1`` wide (anomalib's ``compute_kernel_size``, not imported:
    importing ``anomalib.models`` from components loads this package's models, which import components).
    """
    return int(4.0 * sigma + 0.5) + 1 if sigma > 0 else 1


def patchgan_min_side(n_layers: int) -> int:
    """Smallest side a PatchGAN with ``n_layers`` stride-2 4x4 convs and two stride-1 4x4 convs maps to >= 1 logit."""
    return 3 * 2**n_layers


@dataclass(frozen=True)
class InputSizeRequirement:
    """Smallest side and side divisor a model needs, with the reasons for the error message.

    Args:
        model: Model name used in messages.
        minimum: Smallest allowed height and width.
        multiple_of: Height and width must be divisible by this.
        reason: Why (e.g. ``"Gaussian smoothing of the anomaly map, sigma 4"``).
    """

    model: str
    minimum: int = 1
    multiple_of: int = 1
    reason: str = ""

    def rule(self) -> str:
        """The requirement in words, e.g. ``"height and width >= 24 and divisible by 4"``."""
        parts = [f">= {self.minimum}"] if self.minimum > 1 else []
        parts += [f"divisible by {self.multiple_of}"] if self.multiple_of > 1 else []
        return "height and width " + " and ".join(parts or ["of any size"])

    def is_met_by(self, size: Sequence[int]) -> bool:
        """Whether an ``(H, W)`` size satisfies the requirement."""
        return all(side >= self.minimum and side % self.multiple_of == 0 for side in size)

    def check(self, size: Sequence[int], source: str) -> None:
        """Raise ``ValueError`` if ``size`` ``(H, W)`` (from ``source``, e.g. ``"the pre-processor"``) is not allowed."""
        if self.is_met_by(size):
            return
        reason = f" ({self.reason})" if self.reason else ""
        msg = (
            f"{self.model} needs images with {self.rule()}{reason}, got {tuple(int(side) for side in size)} "
            f"from {source}. Choose another image_size (e.g. {self.closest_allowed(size)}) in the pre-processor "
            f"({self.model}.configure_pre_processor(image_size=...)) or change the options named above."
        )
        raise ValueError(msg)

    def check_pre_processor(self, model: object) -> None:
        """Check the output size of an ``AnomalibModule``'s pre-processor, if it resizes (``model.input_size``)."""
        size = getattr(model, "input_size", None)
        if size is not None:
            self.check(tuple(size), "the pre-processor's resize")

    def check_batch(self, images: object) -> None:
        """Check the ``[..., H, W]`` size of a batch of images (skipped during graph capture)."""
        if not is_traced():
            self.check(tuple(images.shape[-2:]), "the input batch")

    def closest_allowed(self, size: Sequence[int]) -> tuple[int, ...]:
        """The allowed size nearest to ``size``: each side rounded to the divisor, at least the minimum."""
        smallest = -(-self.minimum // self.multiple_of) * self.multiple_of
        return tuple(max(smallest, round(side / self.multiple_of) * self.multiple_of) for side in size)
