"""Workarounds for anomalib (and Lightning) behaviours that break plugin models or plugin components.

One module per behaviour. Each module exposes:

- ``applies() -> bool``: whether the installed anomalib still behaves that way, detected by *behaviour*
  (a small probe of the code in question), never by version number, so a fixed anomalib switches the
  workaround off by itself;
- ``install()``: put the workaround in place (idempotent).

:func:`install_applicable` is called by :mod:`anomalib_surface.registration` once ``anomalib.models`` has
been imported, i.e. before any model, Engine or Trainer exists.
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger(__name__)

__all__ = ["MODULES", "install_applicable"]

MODULES = ("post_processor_checkpoint", "checkpoint_errors", "ddp_workspace", "unrepeated_eval_sampler")
"""The workaround modules of this package, installed in this order."""


def install_applicable() -> list[str]:
    """Install every workaround whose ``applies()`` is true; return the names of those installed."""
    installed = []
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        if module.applies():
            module.install()
            installed.append(name)
        else:
            logger.debug("anomalib_surface.compat.%s: anomalib no longer needs it, not installed.", name)
    return installed
