"""Model declarations read by the test harnesses: defaults for models that declare nothing, checks."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from anomalib.models import Padim

from anomalib_surface.components.model_spec import ModelSpec, model_spec
from anomalib_surface.models.tocoad import Tocoad


def test_a_built_in_model_gets_single_phase_defaults() -> None:
    assert model_spec(Padim) == ModelSpec()


def test_declarations_are_read_from_the_class() -> None:
    spec = model_spec(Tocoad)
    assert spec.phases == Tocoad.phases
    assert spec.phase_buffer == "phase"
    assert spec.smoke_test_max_epochs == len(Tocoad.phases)
    assert spec.smoke_test_init_args == Tocoad.smoke_test_init_args()
    assert spec.is_training_set_state("model.memory_bank")
    assert not spec.is_training_set_state("model.memory_bank_size")


class _TwoPhases:
    phases: ClassVar[tuple[str, ...]] = ("a", "b")
    smoke_test_max_epochs: ClassVar[int] = 4

    @classmethod
    def smoke_test_init_args(cls) -> dict[str, Any]:
        return {"width": 2}


def test_smoke_test_max_epochs_overrides_the_default() -> None:
    assert model_spec(_TwoPhases) == ModelSpec(phases=("a", "b"), smoke_test_init_args={"width": 2}, smoke_test_max_epochs=4)


def test_inconsistent_declarations_are_named() -> None:
    class PhaseBufferWithoutPhases:
        phase_buffer = "phase"

    class ZeroEpochs:
        smoke_test_max_epochs = 0

    with pytest.raises(ValueError, match=r"PhaseBufferWithoutPhases.phase_buffer is 'phase' but .*phases is empty"):
        model_spec(PhaseBufferWithoutPhases)
    with pytest.raises(ValueError, match=r"ZeroEpochs.smoke_test_max_epochs must be an integer >= 1, got 0"):
        model_spec(ZeroEpochs)
