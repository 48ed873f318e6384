"""anomalib's CLI takes ``--model`` / ``--data`` only as exact class names (``Padim``, not ``padim``).

Every anomalib 2.x CLI (``AnomalibCLI.__init__(self, args=None, ...)``) resolves the value of ``--model`` and
``--data`` through jsonargparse, which needs the class name as written (``--model Padim``), while ``get_model``
accepts ``padim`` and ``efficient_ad``. This fix rewrites a plain name into the one class name it means, ignoring
case and underscores (``--model clgan``, ``--data mvtec_ad``). Only class names are rewritten: a value that is an
existing file or folder (a config file called ``folder``), a dotted class path, or a name matching no class or
several is passed on unchanged, so anomalib reports it as it always did.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from anomalib_surface.compat.cli_wrapping import CLI_MODULE, cli_init, wrap_cli_init

if TYPE_CHECKING:
    from collections.abc import Sequence

MODELS_MODULE = "anomalib.models"
DATA_MODULE = "anomalib.data"
_NAME_OPTIONS = {"--model": MODELS_MODULE, "--data": DATA_MODULE}
_PLAIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _normalise(name: str) -> str:
    return name.replace("_", "").lower()


def _all_subclasses(base: type) -> list[type]:
    found, stack = [], [base]
    while stack:
        for subclass in stack.pop().__subclasses__():
            found.append(subclass)
            stack.append(subclass)
    return found


def _base_class(host: str) -> type:
    if host == MODELS_MODULE:
        from anomalib.models.components import AnomalibModule

        return AnomalibModule
    from anomalib.data import AnomalibDataModule

    return AnomalibDataModule


def resolve_class_name(name: str, host: str) -> str:
    """Return the class name that ``name`` means, ignoring case and underscores.

    ``"padim"``, ``"efficient_ad"`` and ``"EfficientAd"`` resolve to ``"Padim"`` and ``"EfficientAd"`` (``host``:
    ``"anomalib.models"`` or ``"anomalib.data"``). Existing paths, dotted class paths, unknown and ambiguous names
    are returned unchanged.
    """
    if not _PLAIN_NAME.match(name) or os.path.exists(name):
        return name
    module = sys.modules.get(host)
    candidates = {
        cls.__name__ for cls in _all_subclasses(_base_class(host)) if module is None or getattr(module, cls.__name__, None)
    }
    if name in candidates:
        return name
    matches = sorted(cls for cls in candidates if _normalise(cls) == _normalise(name))
    return matches[0] if len(matches) == 1 else name


def normalise_cli_args(args: Sequence[str]) -> list[str]:
    """Rewrite ``--model <name>`` / ``--data <name>`` (and ``--model=<name>``) to class names."""
    normalised = list(args)
    for index, arg in enumerate(normalised):
        option, sep, value = arg.partition("=")
        if option not in _NAME_OPTIONS:
            continue
        if sep:
            normalised[index] = f"{option}={resolve_class_name(value, _NAME_OPTIONS[option])}"
        elif index + 1 < len(normalised):
            normalised[index + 1] = resolve_class_name(normalised[index + 1], _NAME_OPTIONS[option])
    return normalised


def applies() -> bool:
    """The CLI has the ``AnomalibCLI.__init__(self, args, ...)`` constructor this fix wraps."""
    return cli_init(sys.modules[CLI_MODULE]) is not None


def install() -> None:
    """Rewrite the CLI's arguments before anomalib parses them."""

    def class_names(init: object, self: object, args: Sequence[str] | None, *rest: object, **kwargs: object) -> None:
        init(self, normalise_cli_args(sys.argv[1:] if args is None else args), *rest, **kwargs)

    wrap_cli_init(sys.modules[CLI_MODULE], "class_names", class_names)
