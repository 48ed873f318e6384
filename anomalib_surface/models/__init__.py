"""anomalib-surface models (each registered in the ``anomalib.models`` entry-point group).

``from anomalib_surface.models import Clgan`` imports that model's package only, on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .clgan import Clgan
    from .dmp import Dmp
    from .locc import Locc
    from .pgcn import Pgcn
    from .tocoad import Tocoad

__all__ = ["Clgan", "Dmp", "Locc", "Pgcn", "Tocoad"]


def __getattr__(name: str) -> type:
    """Import the model class ``name`` from its subpackage (PEP 562), so that one model never loads the others."""
    if name not in __all__:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(f".{name.lower()}", __name__), name)
