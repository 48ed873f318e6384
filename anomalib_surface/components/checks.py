"""Argument checks with messages that name the argument, and graph-capture detection."""

from __future__ import annotations

import numbers

import torch
from torchvision.transforms.v2 import Normalize

__all__ = ["is_traced", "require_int", "require_number", "require_unnormalised_inputs"]


def require_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as ``int`` if it is an integer (not a bool) ``>= minimum``; else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value!r}."
        raise ValueError(msg)
    return int(value)


def require_number(name: str, value: object, minimum: float = 0.0, *, strict: bool = True) -> float:
    """Return ``value`` as ``float`` if it is a real number ``> minimum`` (``>=`` when not ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        msg = f"{name} must be a number {relation} {minimum}, got {value!r}."
        raise ValueError(msg)
    return float(value)


def require_unnormalised_inputs(pre_processor: object, model_name: str) -> None:
    """Raise ``ValueError`` if ``pre_processor``'s transform contains ``Normalize``.

    For models that work on images in ``[0, 1]`` (reconstruction, patch generation, or a backbone that
    normalises inside the model).
    """
    # Imported here: importing anomalib.data loads this package's datamodules, which import this module.
    from anomalib.data.transforms.utils import extract_transforms_by_type

    transform = getattr(pre_processor, "transform", None)
    if transform is not None and extract_transforms_by_type(transform, Normalize):
        msg = (
            f"{model_name} expects images in [0, 1]: remove Normalize from its pre_processor "
            f"({model_name}.configure_pre_processor(image_size=...) gives the default one)."
        )
        raise ValueError(msg)


def is_traced() -> bool:
    """Whether the code is being captured into a graph (torch.export / ONNX / torch.compile / jit trace).

    Data-dependent Python control flow (early exits, shape checks that raise) must be skipped then.
    """
    return (
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    )
