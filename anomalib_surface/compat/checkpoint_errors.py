"""A checkpoint of another model, or a damaged one, fails with one message naming the file and both models.

anomalib's ``load_from_checkpoint`` (``anomalib export --ckpt_path``) and Trainer restores
(``anomalib test/predict --ckpt_path``) of a checkpoint written by another model class dump lists of
state-dict keys, or fail earlier in the asked model's constructor fed the other model's hyper-parameters
(Locc given a Pgcn checkpoint blames missing ImageNet weights); a truncated file's error does not name it.

This workaround records the model class in every checkpoint (a plain string, ``weights_only``-safe) and:

- in ``on_load_checkpoint`` (both paths, before any weight is loaded) raises
  :class:`CheckpointMismatchError` when the recorded class is not the model's;
- when ``load_from_checkpoint`` fails for any reason, re-reads the file to explain the failure: a file that
  cannot be read gives :class:`DamagedCheckpointError`, a file recording another class gives
  :class:`CheckpointMismatchError`, both naming the file, the model it holds and the model asked for;
- when a Trainer restore (``Engine.fit/test/predict(ckpt_path=...)``) cannot read the file, raises
  :class:`DamagedCheckpointError` naming it (Lightning's own error is a bare unpickling message).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ._probe import checkpoint_round_trip

__all__ = ["MODEL_KEY", "CheckpointMismatchError", "DamagedCheckpointError", "applies", "install"]

MODEL_KEY = "anomalib_surface_model_class"
"""Checkpoint key holding ``"<module>.<class name>"`` of the model that wrote it."""


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by another model class (``held``, a class path) than the one asked to load it."""

    def __init__(self, message: str, held: str | None = None) -> None:
        super().__init__(message)
        self.held = held


class DamagedCheckpointError(ValueError):
    """The checkpoint file cannot be read (truncated, damaged or not a checkpoint)."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _mismatch(path: object, held: str, asked: type) -> CheckpointMismatchError:
    held_name = held.rpartition(".")[2]
    return CheckpointMismatchError(
        f"Checkpoint '{path}' holds a {held_name} model ({held}), but {asked.__name__} was asked to load it: use "
        f"{held_name}.load_from_checkpoint(...) or '--model {held_name}', or the checkpoint of a {asked.__name__}.",
        held,
    )


def _check_class(model: Any, checkpoint: dict[str, Any]) -> None:  # noqa: ANN401 - AnomalibModule
    held = checkpoint.get(MODEL_KEY)
    if held and held != _class_path(type(model)):
        trainer = getattr(model, "_trainer", None)
        raise _mismatch(getattr(trainer, "ckpt_path", None) or "(being loaded)", held, type(model))


def _damaged(path: str | Path, asked: type, read_error: Exception) -> DamagedCheckpointError:
    """The error for a checkpoint file that cannot be read."""
    return DamagedCheckpointError(
        f"Checkpoint '{path}' cannot be read ({type(read_error).__name__}: {(str(read_error).splitlines() or [''])[0]}); "
        f"it is damaged, truncated or not a checkpoint. Expected a complete checkpoint of a {asked.__name__} model.",
    )


def _explain(path: str | Path, asked: type, error: Exception) -> Exception | None:
    """The clearer error for a failed ``load_from_checkpoint`` of ``path``, or ``None`` to keep ``error``."""
    import torch
    from anomalib.utils.serialization import anomalib_safe_globals

    if isinstance(error, CheckpointMismatchError) and error.held:
        return _mismatch(path, error.held, asked)
    if not Path(path).is_file():
        return None
    try:
        with anomalib_safe_globals(extra=asked.checkpoint_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as read_error:  # noqa: BLE001 - any failure to read means a damaged file
        return _damaged(path, asked, read_error)
    held = checkpoint.get(MODEL_KEY) if isinstance(checkpoint, dict) else None
    if held and held != _class_path(asked):
        return _mismatch(path, held, asked)
    if "state_dict" in str(error):
        return CheckpointMismatchError(
            f"Checkpoint '{path}' does not fit {asked.__name__} (its weights differ: {str(error).splitlines()[0]}); it "
            f"records no model class (written before anomalib-surface recorded it), so it probably holds another model.",
        )
    return None


def _patched(cls: type) -> None:
    save, load, load_from_checkpoint = cls.on_save_checkpoint, cls.on_load_checkpoint, cls.load_from_checkpoint.__func__

    @functools.wraps(save)
    def on_save_checkpoint(self: Any, checkpoint: dict[str, Any]) -> None:  # noqa: ANN401
        save(self, checkpoint)
        checkpoint[MODEL_KEY] = _class_path(type(self))

    @functools.wraps(load)
    def on_load_checkpoint(self: Any, checkpoint: dict[str, Any]) -> None:  # noqa: ANN401
        _check_class(self, checkpoint)
        load(self, checkpoint)

    @functools.wraps(load_from_checkpoint)
    def load_from_checkpoint_explained(model_class: type, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        try:
            return load_from_checkpoint(model_class, checkpoint_path, *args, **kwargs)
        except Exception as error:
            explained = _explain(checkpoint_path, model_class, error)
            if explained is None:
                raise
            raise explained from error

    on_save_checkpoint._anomalib_surface_model_class = True  # type: ignore[attr-defined]
    cls.on_save_checkpoint, cls.on_load_checkpoint = on_save_checkpoint, on_load_checkpoint
    cls.load_from_checkpoint = classmethod(load_from_checkpoint_explained)


def _patched_strategy_restore() -> None:
    """Wrap Lightning's ``Strategy.load_checkpoint`` (the Trainer-restore read) so a file it cannot read is named."""
    from lightning.pytorch.strategies import Strategy

    load = Strategy.load_checkpoint
    if getattr(load, "_anomalib_surface_names_file", False):
        return

    @functools.wraps(load)
    def load_checkpoint(self: Any, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        try:
            return load(self, checkpoint_path, *args, **kwargs)
        except Exception as error:
            if not Path(checkpoint_path).is_file():
                raise
            raise _damaged(checkpoint_path, type(self.lightning_module), error) from error

    load_checkpoint._anomalib_surface_names_file = True  # type: ignore[attr-defined]
    Strategy.load_checkpoint = load_checkpoint


def applies() -> bool:
    """Whether anomalib's ``AnomalibModule`` writes no trace of the model's class into its checkpoints."""
    from anomalib.models.components import AnomalibModule

    if getattr(AnomalibModule.on_save_checkpoint, "_anomalib_surface_model_class", False):
        return False
    checkpoint, class_path, class_name, _ = checkpoint_round_trip(load=False)
    return not any(isinstance(value, str) and value in {class_path, class_name} for value in checkpoint.values())


def install() -> None:
    """Wrap ``AnomalibModule``'s checkpoint hooks, ``load_from_checkpoint`` and the Trainer-restore read (once)."""
    from anomalib.models.components import AnomalibModule

    if not getattr(AnomalibModule.on_save_checkpoint, "_anomalib_surface_model_class", False):
        _patched(AnomalibModule)
    _patched_strategy_restore()
