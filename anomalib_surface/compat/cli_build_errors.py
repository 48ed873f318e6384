"""anomalib's CLI buries an error raised while it builds the model or datamodule under jsonargparse's traceback.

In every anomalib 2.x CLI the model and the datamodule are typed ``AnomalibModule | None`` (resp. the datamodule
base), so jsonargparse tries each member of the union: an exception raised by the model's constructor (missing
pretrained weights, an option out of range) ends as one bullet of a ``ValueError: Does not validate against any of
the Union subtypes``, printed at the bottom of a 200-line rich traceback. This fix catches that error in
``AnomalibCLI.__init__``, keeps the constructor's own message and prints it as one paragraph naming the class, then
exits with status 1. Any other error is re-raised unchanged.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from anomalib_surface.compat.cli_wrapping import CLI_MODULE, cli_init, wrap_cli_init

if TYPE_CHECKING:
    from collections.abc import Callable

UNION_ERROR = "Does not validate against any of the Union subtypes"
_NONE_BULLET = re.compile(r"^Expected a <class 'NoneType'>")
_CLASS_PATH = re.compile(r"class_path='([\w.]+)'")


def build_error_message(error: BaseException) -> str | None:
    """The one-paragraph message for a class that failed to build inside ``error``, or ``None`` if it is not one.

    ``error`` is jsonargparse's union error; its text lists one bullet per union member (``- Expected a <class
    'NoneType'>`` and the constructor's own message, wrapped over several lines) between ``Errors:`` and
    ``Given value type:``, then the value with its ``class_path``.
    """
    text = str(error)
    if UNION_ERROR not in text or "Errors:" not in text or "Given value type:" not in text:
        return None
    bullets_text = text.split("Errors:", 1)[1].split("Given value type:", 1)[0]
    bullets = [" ".join(bullet.split()) for bullet in re.split(r"(?:^|\n)\s*- ", bullets_text) if bullet.strip()]
    reasons = [bullet for bullet in bullets if not _NONE_BULLET.match(bullet)]
    if not reasons:
        return None
    class_path = _CLASS_PATH.search(text.split("Given value:", 1)[-1])
    name = class_path.group(1) if class_path else "the requested class"
    return f"Could not build {name}: " + " ".join(reasons)


def applies() -> bool:
    """The CLI has the ``AnomalibCLI.__init__(self, args, ...)`` constructor this fix wraps."""
    return cli_init(sys.modules[CLI_MODULE]) is not None


def install() -> None:
    """Turn a build error of the model or datamodule into its own message and exit status 1."""

    def build_errors(init: Callable, self: object, args: object, *rest: object, **kwargs: object) -> None:
        try:
            init(self, args, *rest, **kwargs)
        except ValueError as error:
            message = build_error_message(error)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)  # noqa: T201 - the CLI's message to its user
            raise SystemExit(1) from None

    wrap_cli_init(sys.modules[CLI_MODULE], "build_errors", build_errors)
