"""Argument checks with messages that name the argument, and graph-capture detection."""

from __future__ import annotations

import math
import os
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import Normalize

__all__ = [
    "Boolean",
    "Choice",
    "Integer",
    "Items",
    "Number",
    "OptionError",
    "Optional",
    "Text",
    "check_options",
    "is_traced",
    "require_bool",
    "require_choice",
    "require_int",
    "require_number",
    "require_unnormalised_inputs",
]


class OptionError(ValueError):
    """A model or post-processor option has the wrong type or is out of range (one-line message naming it)."""


def require_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as ``int`` if it is an integer (not a bool) in ``[minimum, maximum]``; else raise.

    ``maximum`` bounds structural sizes (kernel sides, layer counts, iteration counts) so that a typo such
    as ``10**6`` fails at build instead of allocating for minutes.

    Raises:
        OptionError: Naming the argument, the value and the allowed range.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        msg = f"{name} must be an integer {allowed}, got {value!r}."
        raise OptionError(msg)
    return int(value)


def require_number(
    name: str,
    value: object,
    minimum: float = 0.0,
    *,
    strict: bool = True,
    maximum: float | None = None,
) -> float:
    """Return ``value`` as ``float`` if it is a finite real number ``> minimum`` (``>=`` when not ``strict``)
    and ``<= maximum`` (when given); else raise.

    Raises:
        OptionError: Naming the argument, the value and the allowed range (NaN and infinities are refused).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < minimum
        or (strict and value == minimum)
        or (maximum is not None and value > maximum)
    ):
        relation = ">" if strict else ">="
        bound = f" and <= {maximum}" if maximum is not None else ""
        msg = f"{name} must be a finite number {relation} {minimum}{bound}, got {value!r}."
        raise OptionError(msg)
    return float(value)


def require_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``; else raise :class:`OptionError` naming the argument."""
    if not isinstance(value, bool):
        msg = f"{name} must be true or false, got {value!r}."
        raise OptionError(msg)
    return value


def require_choice(name: str, value: object, choices: Sequence[object]) -> object:
    """Return ``value`` if it is one of ``choices``; else raise :class:`OptionError` listing them."""
    if not any(value == choice and type(value) is type(choice) for choice in choices):
        msg = f"{name} must be one of {tuple(choices)}, got {value!r}."
        raise OptionError(msg)
    return value


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


@dataclass(frozen=True)
class Integer:
    """Rule: an integer in ``[minimum, maximum]`` (``maximum`` bounds structural sizes)."""

    minimum: int = 0
    maximum: int | None = None

    def check(self, name: str, value: object) -> None:
        """Raise :class:`OptionError` naming ``name`` if ``value`` breaks the rule."""
        require_int(name, value, self.minimum, self.maximum)


@dataclass(frozen=True)
class Number:
    """Rule: a finite real number ``> minimum`` (``>=`` unless ``strict``), ``<= maximum`` if given."""

    minimum: float = 0.0
    maximum: float | None = None
    strict: bool = True

    def check(self, name: str, value: object) -> None:
        """Raise :class:`OptionError` naming ``name`` if ``value`` breaks the rule."""
        require_number(name, value, self.minimum, strict=self.strict, maximum=self.maximum)


@dataclass(frozen=True)
class Choice:
    """Rule: one of ``choices``."""

    choices: tuple[object, ...]

    def check(self, name: str, value: object) -> None:
        """Raise :class:`OptionError` naming ``name`` if ``value`` breaks the rule."""
        require_choice(name, value, self.choices)


@dataclass(frozen=True)
class Boolean:
    """Rule: ``True`` or ``False``."""

    def check(self, name: str, value: object) -> None:
        """Raise :class:`OptionError` naming ``name`` if ``value`` breaks the rule."""
        require_bool(name, value)


@dataclass(frozen=True)
class Text:
    """Rule: a string or a path (e.g. a folder of anomaly source images)."""

    def check(self, name: str, value: object) -> None:
        """Raise :class:`OptionError` naming ``name`` if ``value`` is neither a ``str`` nor a path."""
        if not isinstance(value, str | os.PathLike):
            msg = f"{name} must be a string or a path, got {value!r}."
            raise OptionError(msg)


@dataclass(frozen=True)
class Items:
    """Rule: a list or tuple of ``length`` items (any length if ``None``, at most ``max_length``), each meeting ``item``."""

    item: Integer | Number | Choice | Boolean | Text
    length: int | None = None
    max_length: int = 64
    min_length: int = 0

    def check(self, name: str, value: object) -> None:
        """Raise :class:`OptionError` naming ``name`` (and the item's index) if ``value`` breaks the rule."""
        if (
            not isinstance(value, Sequence)
            or isinstance(value, str)
            or (self.length is not None and len(value) != self.length)
            or not self.min_length <= len(value) <= self.max_length
        ):
            size = f"{self.length}" if self.length is not None else f"{self.min_length} to {self.max_length}"
            msg = f"{name} must be a list of {size} items, got {value!r}."
            raise OptionError(msg)
        for index, item in enumerate(value):
            self.item.check(f"{name}[{index}]", item)


@dataclass(frozen=True)
class Optional:
    """Rule: ``None`` or a value meeting ``rule``."""

    rule: Integer | Number | Choice | Boolean | Text | Items

    def check(self, name: str, value: object) -> None:
        """Raise :class:`OptionError` naming ``name`` if ``value`` is neither ``None`` nor meets the rule."""
        if value is not None:
            self.rule.check(name, value)


def check_options(
    rules: Mapping[str, Integer | Number | Choice | Boolean | Text | Items | Optional],
    values: Mapping[str, object],
) -> None:
    """Check every option of ``values`` that has a rule (a model's constructor arguments, ``locals()``).

    One call at the top of a constructor covers the build and every restore from a checkpoint (Lightning
    rebuilds a model through its constructor with the saved hyper-parameters).

    Raises:
        OptionError: One line naming the first bad option, its value and what is allowed.
    """
    for name, rule in rules.items():
        if name in values:
            rule.check(name, values[name])
