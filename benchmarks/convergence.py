"""Convergence checks of the trained studies: a per-epoch history of the training loss and the held-out pixel AP.

Used by the Dmp ablation and the Clgan claim check: a component is only judged once its run has converged (loss
and held-out AP flat over the last epochs), so each fit records, after every epoch, the epoch's mean training loss
(and the named loss terms) and the pixel AP of the model's anomaly maps on the datamodule's validation set, which
holds no test image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics.classification import BinaryAveragePrecision

HELD_OUT_AP = "held_out_pixel_AP"
"""The history's key of the validation pixel AP."""


class HeldOutHistory(Callback):
    """Per epoch: mean training loss, the mean of each of ``terms`` and the pixel AP of the anomaly maps on the
    validation (held-out) set.

    The model logs ``train_loss`` and ``train_<term>`` per epoch (``SurfaceModule.log_train_losses``); the history
    stores them as ``train_loss`` / ``train_<term>``. Validation runs before ``on_train_epoch_end`` in Lightning 2, so
    each row pairs an epoch's losses with the AP of the model at the end of that epoch; an epoch without validation
    gets ``None``.
    """

    def __init__(self, terms: Sequence[str] = ()) -> None:
        self.terms = tuple(terms)
        self.history: list[dict[str, float | None]] = []
        self.average_precision = BinaryAveragePrecision()
        self.last_ap: float | None = None

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del trainer, pl_module  # unused
        self.average_precision.reset()

    def on_validation_batch_end(  # noqa: PLR0913 - Lightning's hook signature
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,  # noqa: ANN401 - the model's validation batch
        batch: Any,  # noqa: ANN401
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        del trainer, pl_module, batch, batch_idx, dataloader_idx  # unused
        self.average_precision.update(outputs.anomaly_map.detach().flatten().float().cpu(),
                                      outputs.gt_mask.flatten().int().cpu())

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del trainer, pl_module  # unused
        self.last_ap = float(self.average_precision.compute())

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        del pl_module  # unused
        row: dict[str, float | None] = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step}
        for name in ("loss", *self.terms):
            value = trainer.callback_metrics.get(f"train_{name}_epoch")
            row[f"train_{name}"] = None if value is None else float(value)
        row[HELD_OUT_AP] = self.last_ap
        self.last_ap = None
        self.history.append(row)


def values(history: Sequence[dict[str, Any]], key: str) -> list[float]:
    """The recorded values of ``key`` in epoch order (epochs without it left out)."""
    return [row[key] for row in history if row.get(key) is not None]


def last_quarter_change(history: Sequence[dict[str, Any]], key: str) -> float | None:
    """Change of ``key`` over the last quarter of the epochs (flat when converged); ``None`` if not recorded."""
    recorded = values(history, key)
    if len(recorded) < 2:  # noqa: PLR2004
        return None
    start = recorded[min(len(recorded) - 2, (3 * len(recorded)) // 4)]
    return recorded[-1] - start


def histories(rows: Sequence[dict[str, Any]], key: str, names: Sequence[str]) -> dict[str, list[list[dict[str, Any]]]]:
    """Per group of ``names`` (the rows whose ``key`` is the name: an arm, a variant), the per-epoch histories of its
    finished runs; groups without any are left out (rows written before the history was recorded have none)."""
    curves = {name: [row["history"] for row in rows if row[key] == name and row["status"] == "ok" and "history" in row]
              for name in names}
    return {name: runs for name, runs in curves.items() if runs}


def curve_table(histories: dict[str, list[Sequence[dict[str, Any]]]], key: str, points: int = 5,
                percent: bool = True) -> str:
    """Markdown: per group (say an arm), the mean over its runs of ``key`` at ``points`` evenly spaced epochs (the
    last one included); in % with one decimal (``percent``) or as it is with three."""
    epochs = max((len(history) for runs in histories.values() for history in runs), default=0)
    marks = sorted({max(1, round(epochs * (step + 1) / points)) for step in range(points)})
    lines = [f"| {key} | " + " | ".join(f"epoch {mark}" for mark in marks) + " |", "|---|" + "---:|" * len(marks)]
    for name, runs in histories.items():
        cells = []
        for mark in marks:
            at_mark = [history[mark - 1][key] for history in runs
                       if len(history) >= mark and history[mark - 1].get(key) is not None]
            mean = float(np.mean(at_mark)) if at_mark else None
            cells.append("–" if mean is None else f"{100 * mean:.1f}" if percent else f"{mean:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
