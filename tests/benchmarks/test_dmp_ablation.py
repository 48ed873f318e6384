"""The Dmp ablation's variants, held-out history and summary table (no training: the script's run is end to end)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from benchmarks import dmp_ablation


def test_each_variant_changes_one_option_and_the_draem_equivalent_matches_its_config() -> None:
    entries = {entry.name: entry for entry in dmp_ablation.variant_entries(pre_trained=False)}
    dmp = entries["Dmp"].init_args
    assert dmp["depth"] == 3, "large kernels on 32x32 and 16x16 maps at 128 px"
    for name, entry in entries.items():
        changed = {key for key, value in entry.init_args.items() if dmp.get(key, object()) != value}
        expected = set(dmp_ablation.VARIANTS[name])
        assert changed == expected, name
        assert len(changed) == (3 if name == "DRAEM-equivalent" else 0 if name == "Dmp" else 1), name
    config = yaml.safe_load(Path("configs/model/dmp_draem_equivalent.yaml").read_text())["model"]["init_args"]
    assert all(config[key] == value for key, value in dmp_ablation.DRAEM_EQUIVALENT.items())


def test_held_out_history_pairs_each_epoch_loss_with_the_validation_ap() -> None:
    history = dmp_ablation.HeldOutHistory()
    trainer = SimpleNamespace(current_epoch=0, global_step=4, callback_metrics={"train_loss_epoch": torch.tensor(0.5)})
    history.on_validation_epoch_start(trainer, None)
    masks = torch.tensor([[0, 0, 1, 1]]).bool()
    outputs = SimpleNamespace(anomaly_map=torch.tensor([[[0.1, 0.2, 0.9, 0.8]]]), gt_mask=masks)
    history.on_validation_batch_end(trainer, None, outputs, None, 0)
    history.on_validation_epoch_end(trainer, None)
    history.on_train_epoch_end(trainer, None)
    assert history.history == [{"epoch": 1, "step": 4, "train_loss": 0.5, "held_out_pixel_AP": pytest.approx(1.0)}]


def test_summary_table_means_confidence_intervals_and_paired_differences() -> None:
    def row(variant: str, seed: int, ap: float) -> dict:
        metrics = {"image_AUROC": 0.9, "pixel_AUROC": 0.8, "pixel_AUPRO": 0.7, "pixel_AP": ap}
        history = [{"held_out_pixel_AP": 0.4}, {"held_out_pixel_AP": 0.5}, {"held_out_pixel_AP": 0.5}]
        return {"variant": variant, "seed": seed, "status": "ok", "metrics": metrics, "history": history, "fit_seconds": 10.0}

    rows = [row("Dmp", 0, 0.5), row("Dmp", 1, 0.7), row("small kernels (5x5)", 0, 0.4), row("small kernels (5x5)", 1, 0.6)]
    table = dmp_ablation.summary_table(rows)
    dmp_line, small_line = table.splitlines()[2:]
    assert dmp_line.startswith("| Dmp | 2 | 90.0 ± 0.0 |") and "60.0 ± 127.1" in dmp_line
    assert "| -10.0 ± 0.0 |" in small_line, "paired with Dmp's seeds"
    assert dmp_ablation.last_quarter_change(rows[0]["history"], "held_out_pixel_AP") == pytest.approx(0.0)
    assert dmp_ablation.mean_ci([0.5]) == (0.5, None)
