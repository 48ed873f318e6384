"""The held-out history callback and the convergence summaries shared by the Dmp ablation and the Clgan study."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from benchmarks import convergence


def epoch(history: convergence.HeldOutHistory, trainer: SimpleNamespace, maps: list[float] | None) -> None:
    """One training epoch, with a validation on one batch (masks 0, 0, 1, 1) unless ``maps`` is None."""
    if maps is not None:
        history.on_validation_epoch_start(trainer, None)
        outputs = SimpleNamespace(anomaly_map=torch.tensor([[maps]]), gt_mask=torch.tensor([[0, 0, 1, 1]]).bool())
        history.on_validation_batch_end(trainer, None, outputs, None, 0)
        history.on_validation_epoch_end(trainer, None)
    history.on_train_epoch_end(trainer, None)


def test_history_pairs_each_epoch_loss_and_terms_with_the_validation_ap() -> None:
    history = convergence.HeldOutHistory(terms=("rec_loss",))
    metrics = {"train_loss_epoch": torch.tensor(0.5), "train_rec_loss_epoch": torch.tensor(0.25)}
    trainer = SimpleNamespace(current_epoch=0, global_step=4, callback_metrics=metrics)
    epoch(history, trainer, [0.1, 0.2, 0.9, 0.8])
    trainer.current_epoch, trainer.global_step = 1, 8
    epoch(history, trainer, [0.9, 0.2, 0.1, 0.8])
    trainer.current_epoch, trainer.global_step = 2, 12
    epoch(history, trainer, None)  # no validation this epoch: no stale AP
    assert history.history[0] == {"epoch": 1, "step": 4, "train_loss": 0.5, "train_rec_loss": 0.25,
                                  "held_out_pixel_AP": pytest.approx(1.0)}
    assert history.history[1]["held_out_pixel_AP"] == pytest.approx(0.5), "precision 1/2 at ranks 2 and 4"
    assert history.history[2]["held_out_pixel_AP"] is None
    assert convergence.HeldOutHistory().terms == ()


def test_last_quarter_change_and_curve_table() -> None:
    history = [{"ap": value} for value in (0.1, 0.3, 0.5, 0.6, 0.6, None, 0.61, 0.62, 0.64)]
    assert convergence.values(history, "ap") == [0.1, 0.3, 0.5, 0.6, 0.6, 0.61, 0.62, 0.64]
    assert convergence.last_quarter_change(history, "ap") == pytest.approx(0.02), "from the 7th of 8 recorded values"
    assert convergence.last_quarter_change(history[:1], "ap") is None
    table = convergence.curve_table({"a": [history, history], "b": [history[:4]]}, "ap", points=3)
    header, _, a, b = table.splitlines()
    assert header == "| ap | epoch 3 | epoch 6 | epoch 9 |"
    assert a == "| a | 50.0 | – | 64.0 |"
    assert b == "| b | 50.0 | – | – |"
    losses = convergence.curve_table({"a": [[{"loss": 1.23456}]]}, "loss", points=3, percent=False)
    assert losses.splitlines()[2] == "| a | 1.235 |"
