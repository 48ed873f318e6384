"""What test harnesses need to know about a model, declared by the model class itself.

A model states, as class attributes at the top of its class body:

- ``phases: ClassVar[tuple[str, ...]]``: its training phases in training order (``()`` when it has one);
- ``phase_buffer: ClassVar[str | None]``: the ``state_dict`` name of the buffer holding the current phase
  (saved in checkpoints, so a run resumes in the right phase);
- ``training_set_state: ClassVar[tuple[str, ...]]``: ``state_dict`` key prefixes of what is built from the
  whole training set (memory bank, template, centres): under DDP every process must build the same values;
- ``smoke_test_init_args()``: a classmethod returning constructor arguments of a tiny, fast configuration;
- ``smoke_test_max_epochs: ClassVar[int]`` (optional): the trainer's epoch budget that runs every phase of
  that configuration once (default ``max(1, len(phases))``).

:func:`model_spec` reads them with defaults for anything missing, so anomalib's built-in models (which
declare none of them) are covered as single-phase models with their default arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """The declarations of one model class (see the module docstring for each field)."""

    phases: tuple[str, ...] = ()
    phase_buffer: str | None = None
    training_set_state: tuple[str, ...] = ()
    smoke_test_init_args: dict[str, Any] = field(default_factory=dict)
    smoke_test_max_epochs: int = 1

    def is_training_set_state(self, key: str) -> bool:
        """Whether ``state_dict`` key ``key`` is built from the whole training set."""
        return any(key == prefix or key.startswith(f"{prefix}.") for prefix in self.training_set_state)


def model_spec(model_class: type) -> ModelSpec:
    """The declarations of ``model_class`` (an ``AnomalibModule`` subclass), with defaults where it has none."""
    phases = tuple(getattr(model_class, "phases", ()))
    smoke_test_init_args = getattr(model_class, "smoke_test_init_args", None)
    spec = ModelSpec(
        phases=phases,
        phase_buffer=getattr(model_class, "phase_buffer", None),
        training_set_state=tuple(getattr(model_class, "training_set_state", ())),
        smoke_test_init_args=dict(smoke_test_init_args()) if callable(smoke_test_init_args) else {},
        smoke_test_max_epochs=getattr(model_class, "smoke_test_max_epochs", max(1, len(phases))),
    )
    if spec.phase_buffer is not None and not spec.phases:
        msg = f"{model_class.__name__}.phase_buffer is {spec.phase_buffer!r} but {model_class.__name__}.phases is empty."
        raise ValueError(msg)
    if isinstance(spec.smoke_test_max_epochs, bool) or not isinstance(spec.smoke_test_max_epochs, int) or spec.smoke_test_max_epochs < 1:
        msg = f"{model_class.__name__}.smoke_test_max_epochs must be an integer >= 1, got {spec.smoke_test_max_epochs!r}."
        raise ValueError(msg)
    return spec
