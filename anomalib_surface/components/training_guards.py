"""Guards that stop training with a clear message instead of silently learning from NaN/inf."""

from __future__ import annotations

import torch

__all__ = ["NonFiniteLossError", "check_finite"]


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite during training."""


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming every loss term that is NaN or infinite.

    Args:
        losses: Loss terms by name (scalar tensors).
        step: Global training step, reported in the message.

    Raises:
        NonFiniteLossError: If any term is not finite. Lightning stops the run; the checkpoints
            written before this step are kept.
    """
    bad = {name: float(value.detach()) for name, value in losses.items() if not torch.isfinite(value).all()}
    if bad:
        terms = ", ".join(f"{name}={value}" for name, value in bad.items())
        msg = (
            f"Non-finite loss at training step {step}: {terms}. Training stopped; the last checkpoint written "
            "before this step is kept. Lower the learning rate or check the input images for NaN/inf values."
        )
        raise NonFiniteLossError(msg)
