"""A throw-away ``AnomalibModule`` for the behaviour probes of the checkpoint workarounds."""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["checkpoint_round_trip"]


def _round_trip(load: bool) -> tuple[dict[str, Any], str, str, bool]:
    from anomalib.models.components import AnomalibModule
    from anomalib.post_processing import PostProcessor

    class ProbePostProcessor(PostProcessor):
        pass

    class ProbeModule(AnomalibModule):
        learning_type = trainer_arguments = None

        @staticmethod
        def configure_post_processor() -> PostProcessor:
            return PostProcessor()

    checkpoint: dict[str, Any] = {}
    options = {"pre_processor": False, "evaluator": False, "visualizer": False}
    ProbeModule(post_processor=ProbePostProcessor(), **options).on_save_checkpoint(checkpoint)
    restored = ProbeModule(**options)
    if load:
        restored.on_load_checkpoint(checkpoint)
    module_path = f"{ProbeModule.__module__}.{ProbeModule.__qualname__}"
    return checkpoint, module_path, ProbeModule.__name__, isinstance(restored.post_processor, ProbePostProcessor)


def checkpoint_round_trip(*, load: bool = True) -> tuple[dict[str, Any], str, str, bool]:
    """Save a probe module holding a probe post-processor and (if ``load``) load the checkpoint into a fresh one.

    Returns:
        The checkpoint dict, the probe module's class path and name, and whether the fresh module got the
        probe post-processor back. The probe classes are garbage-collected before returning, so they leave
        ``AnomalibModule.__subclasses__()`` (which anomalib's ``get_model`` searches).
    """
    result = _round_trip(load)
    gc.collect()
    return result
