"""Shared by the CLI fixes (:mod:`.cli_class_names`, :mod:`.cli_build_errors`): wrapping ``AnomalibCLI.__init__``.

Every anomalib 2.x CLI is built by ``AnomalibCLI.__init__(self, args=None, ...)``: it parses the arguments, builds
the model and the datamodule and runs the subcommand. A fix wraps that constructor once, under its own name.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

CLI_MODULE = "anomalib.cli.cli"


def cli_init(cli_module: ModuleType) -> Callable | None:
    """``AnomalibCLI.__init__`` if it has the ``(self, args, ...)`` shape the fixes rely on, else ``None``."""
    init = getattr(getattr(cli_module, "AnomalibCLI", None), "__init__", None)
    try:
        parameters = list(inspect.signature(init).parameters)
    except (TypeError, ValueError):
        return None
    return init if parameters[:2] == ["self", "args"] else None


def wrap_cli_init(cli_module: ModuleType, name: str, wrapper: Callable) -> None:
    """Replace ``AnomalibCLI.__init__`` by ``wrapper(init, self, args, *rest, **kwargs)``, once per ``name``."""
    cli_class = cli_module.AnomalibCLI
    init = cli_class.__init__
    marks = getattr(init, "_anomalib_surface_fixes", frozenset())
    if name in marks:
        return

    @functools.wraps(init)
    def __init__(self: object, args: object = None, *rest: object, **kwargs: object) -> None:  # noqa: N807
        wrapper(init, self, args, *rest, **kwargs)

    __init__._anomalib_surface_fixes = marks | {name}  # type: ignore[attr-defined]
    cli_class.__init__ = __init__
