"""Checkpoints remember which post-processor class a model holds, and loading rebuilds that class.

anomalib's ``AnomalibModule`` stores a post-processor's *settings* (``checkpoint_config``) and buffers in a
checkpoint, not its class: ``load_from_checkpoint`` (used by ``anomalib export --ckpt_path``) rebuilds the
model's default post-processor, so a Patchcore trained with
:class:`~anomalib_surface.post_processing.DoubleThresholdMorphology` comes back (and is exported) with
anomalib's plain ``PostProcessor``, and buffers only the plugin class has fail the strict state-dict load;
``Trainer`` restores (``anomalib test/predict --ckpt_path``) keep whatever post-processor the new model was
built with.

This workaround writes the class path into the checkpoint (a plain string, so loading stays
``weights_only``-safe) and, before anomalib restores the settings, replaces a post-processor of another
class by one built from the checkpoint's settings through the class's constructor (so its argument checks
run). Only classes defined in :data:`ALLOWED_PACKAGES` that subclass anomalib's ``PostProcessor`` are
imported; anything else raises naming the checkpoint key.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from ._probe import checkpoint_round_trip

__all__ = ["ALLOWED_PACKAGES", "CLASS_KEY", "applies", "install", "restore_post_processor"]

CLASS_KEY = "anomalib_surface_post_processor_class"
"""Checkpoint key holding ``"<module>.<class name>"`` of the model's post-processor."""
CONFIG_KEY = "anomalib_post_processor_config"
ALLOWED_PACKAGES = ("anomalib", "anomalib_surface")
"""Top-level packages whose post-processor classes a checkpoint may name."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _post_processor_class(path: str) -> type:
    """Import the ``PostProcessor`` subclass named ``path``; ``ValueError`` if it is not an allowed one."""
    from anomalib.post_processing import PostProcessor

    module_name, _, class_name = path.rpartition(".")
    cls = None
    if module_name.split(".")[0] in ALLOWED_PACKAGES:
        try:
            cls = getattr(importlib.import_module(module_name), class_name, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, PostProcessor)):
        msg = (
            f"The checkpoint's {CLASS_KEY} names {path!r}, which is not a PostProcessor class of "
            f"{' or '.join(ALLOWED_PACKAGES)}; cannot rebuild its post-processor."
        )
        raise ValueError(msg)
    return cls


def restore_post_processor(model: Any, checkpoint: dict[str, Any]) -> None:  # noqa: ANN401 - AnomalibModule
    """Replace ``model.post_processor`` by the checkpoint's class, built from the checkpoint's settings.

    Nothing happens when the checkpoint names no class (older checkpoints), when the model has no
    post-processor, or when the classes already match (anomalib then restores the settings itself). A
    Trainer the model is attached to gets the new post-processor in its callbacks in place of the old one.
    """
    path = checkpoint.get(CLASS_KEY)
    current = getattr(model, "post_processor", None)
    if not path or current is None or _class_path(type(current)) == path:
        return
    replacement = _post_processor_class(path)(**checkpoint.get(CONFIG_KEY, {}))
    model.post_processor = replacement
    trainer = getattr(model, "_trainer", None)
    if trainer is not None:
        callbacks = trainer.callbacks
        trainer.callbacks = [replacement if callback is current else callback for callback in callbacks]


def _patched(cls: type) -> None:
    save, load = cls.on_save_checkpoint, cls.on_load_checkpoint

    @functools.wraps(save)
    def on_save_checkpoint(self: Any, checkpoint: dict[str, Any]) -> None:  # noqa: ANN401
        save(self, checkpoint)
        if getattr(self, "post_processor", None) is not None:
            checkpoint[CLASS_KEY] = _class_path(type(self.post_processor))

    @functools.wraps(load)
    def on_load_checkpoint(self: Any, checkpoint: dict[str, Any]) -> None:  # noqa: ANN401
        restore_post_processor(self, checkpoint)
        load(self, checkpoint)

    on_save_checkpoint._anomalib_surface_patched = True  # type: ignore[attr-defined]
    cls.on_save_checkpoint, cls.on_load_checkpoint = on_save_checkpoint, on_load_checkpoint


def applies() -> bool:
    """Whether a save/load round trip of anomalib's ``AnomalibModule`` loses the post-processor's class."""
    from anomalib.models.components import AnomalibModule

    if getattr(AnomalibModule.on_save_checkpoint, "_anomalib_surface_patched", False):
        return False
    return not checkpoint_round_trip()[3]


def install() -> None:
    """Wrap ``AnomalibModule.on_save_checkpoint``/``on_load_checkpoint`` (once)."""
    from anomalib.models.components import AnomalibModule

    if not getattr(AnomalibModule.on_save_checkpoint, "_anomalib_surface_patched", False):
        _patched(AnomalibModule)
