"""The shared phase schedule: the trainer's budget (epochs or steps) split into named phases by ratio."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from anomalib_surface.components.phase_schedule import LIGHTNING_DEFAULT_EPOCHS, PhaseSchedule, epoch_budget
from anomalib_surface.models import Pgcn

THREE_STAGES = {"discriminator": 0.5, "fine_tune": 0.5, "memory_bank": None}


def test_trained_phases_split_the_epochs_left_after_the_passes() -> None:
    schedule = PhaseSchedule(THREE_STAGES)
    assert schedule.names == ("discriminator", "fine_tune", "memory_bank")
    assert schedule.minimum_epochs() == 3
    assert schedule.epochs(21) == {"discriminator": 10, "fine_tune": 10, "memory_bank": 1}
    assert schedule.epochs(3) == {"discriminator": 1, "fine_tune": 1, "memory_bank": 1}
    assert [schedule.phase_of_epoch(epoch, 5) for epoch in range(6)] == [0, 0, 1, 1, 2, 2]
    # Every phase with a share keeps at least one epoch, however small its share.
    assert PhaseSchedule({"a": 0.01, "b": 0.99}).epochs(2) == {"a": 1, "b": 1}
    assert PhaseSchedule({"a": 0.99, "b": 0.01}).epochs(2) == {"a": 1, "b": 1}
    # A zero share skips its phase (e.g. an ablation).
    assert PhaseSchedule({"a": 0.0, "pass": None, "b": 1.0}).epochs(5) == {"a": 0, "pass": 1, "b": 4}


def test_a_budget_too_short_for_every_phase_gives_the_passes_first() -> None:
    schedule = PhaseSchedule(THREE_STAGES)
    assert schedule.epochs(1) == {"discriminator": 0, "fine_tune": 0, "memory_bank": 1}
    assert schedule.epochs(2) == {"discriminator": 1, "fine_tune": 0, "memory_bank": 1}


@pytest.mark.parametrize("shares", [{"a": 0.5, "b": 0.6}, {"a": -0.5, "b": 1.5}, {"pass": None}])
def test_shares_must_be_fractions_summing_to_one(shares: dict) -> None:
    with pytest.raises(ValueError, match="share"):
        PhaseSchedule(shares)


def test_the_budget_is_the_trainers_epochs_or_steps() -> None:
    assert epoch_budget(SimpleNamespace(max_epochs=150, max_steps=-1)) == 150
    steps = SimpleNamespace(
        max_epochs=-1, max_steps=25, estimated_stepping_batches=25, num_training_batches=10, accumulate_grad_batches=1,
    )
    assert epoch_budget(steps) == 3  # ceil(25 / 10)
    accumulated = SimpleNamespace(**{**vars(steps), "accumulate_grad_batches": 5})
    assert epoch_budget(accumulated) == 13  # 2 optimiser steps per epoch
    endless = SimpleNamespace(
        max_epochs=-1, max_steps=-1, estimated_stepping_batches=float("inf"), num_training_batches=10,
        accumulate_grad_batches=1,
    )
    with pytest.raises(ValueError, match="max_epochs or max_steps"):
        epoch_budget(endless)


def test_without_a_budget_the_model_says_it_trains_lightnings_default(caplog: pytest.LogCaptureFixture) -> None:
    model = Pgcn(**Pgcn.smoke_test_init_args())
    model.trainer = SimpleNamespace(max_epochs=LIGHTNING_DEFAULT_EPOCHS, max_steps=-1)
    with caplog.at_level(logging.INFO):
        model.on_train_start()
    assert "1000 epochs, Lightning's default" in caplog.text
    assert "generator 667, comparator 333" in caplog.text


def test_a_short_budget_names_the_phases_left_untrained(caplog: pytest.LogCaptureFixture) -> None:
    model = Pgcn(**Pgcn.smoke_test_init_args())
    model.trainer = SimpleNamespace(max_epochs=1, max_steps=-1)
    with caplog.at_level(logging.WARNING):
        model.on_train_start()
    assert "too few for all its phases (it needs 2): comparator not trained" in caplog.text
