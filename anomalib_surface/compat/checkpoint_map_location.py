"""anomalib's checkpoint loader restores every tensor onto the device it was saved from.

``AnomalibCheckpointIO.load_checkpoint(path, map_location=None, ...)`` replaces Lightning's default
``map_location`` (keep storages on the CPU; the strategy moves them to its device afterwards) by ``None``, so
``torch.load`` puts every tensor back on its original device: resuming (``Engine.fit(ckpt_path=...)``,
``anomalib train --ckpt_path``) or testing a checkpoint written on a GPU fails on a machine without CUDA, and one
written on ``cuda:1`` fails on a single-GPU machine. Detected by behaviour: the ``map_location`` default is
``None``. The fix passes Lightning's default instead; an explicit ``map_location`` is passed on unchanged.
Versions without ``AnomalibCheckpointIO`` never import its module, so the fix never runs there.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any

IO_MODULE = "anomalib.engine.plugins.checkpoint_io"


def keep_storages_on_cpu(storage: Any, location: str) -> Any:  # noqa: ANN401 - torch.UntypedStorage
    """``torch.load`` ``map_location`` that leaves every storage on the CPU, whatever device it was saved from."""
    del location
    return storage


def _load_checkpoint() -> Any:  # noqa: ANN401 - the method
    return sys.modules[IO_MODULE].AnomalibCheckpointIO.load_checkpoint


def applies() -> bool:
    """``load_checkpoint(self, path, map_location=None, ...)``: ``None`` sends tensors back to their saved device."""
    load = _load_checkpoint()
    if getattr(load, "_anomalib_surface_fixed", False):
        return False
    parameters = inspect.signature(load).parameters
    return list(parameters)[:3] == ["self", "path", "map_location"] and parameters["map_location"].default is None


def install() -> None:
    """Wrap ``load_checkpoint`` so that a missing ``map_location`` means :func:`keep_storages_on_cpu`."""
    load = _load_checkpoint()

    @functools.wraps(load)
    def load_checkpoint(self: Any, path: Any, map_location: Any = keep_storages_on_cpu, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        return load(self, path, keep_storages_on_cpu if map_location is None else map_location, *args, **kwargs)

    load_checkpoint._anomalib_surface_fixed = True  # type: ignore[attr-defined]
    sys.modules[IO_MODULE].AnomalibCheckpointIO.load_checkpoint = load_checkpoint
