"""Tocoad under DDP (2 CPU processes, gloo): every rank ends with the full memory bank of a single process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anomalib_surface.data.surface_demo import make_surface_demo

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(mode: str, root: Path, out: Path) -> None:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(WORKER), mode, str(root), str(out)],
        capture_output=True, text=True, timeout=300, env=environment, check=False,
    )
    assert result.returncode == 0, f"{mode} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def _sorted_rows(bank: torch.Tensor) -> torch.Tensor:
    """The rows of ``bank`` in lexicographic order, to compare banks up to row ordering."""
    for column in reversed(range(bank.shape[1])):
        bank = bank[torch.argsort(bank[:, column], stable=True)]
    return bank


@pytest.mark.ddp
def test_ddp_bank_equals_single_process_bank(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_surface_demo(root, "brick", image_size=64, num_train=7, num_test_good=2, num_test_defect_per_type=1)
    _run("ddp", root, tmp_path)  # stages 1-3 on 2 processes, checkpoint after each epoch
    _run("single", root, tmp_path)  # one process: resume after stage 2, run stage 3 alone

    banks = {name: torch.load(tmp_path / f"bank_{name}.pt") for name in ("rank0", "rank1", "single")}
    assert banks["single"].shape == (int(7 * 8 * 8 * 0.1), 384)  # 7 distinct images, the padded repeat dropped
    assert torch.equal(banks["rank0"], banks["rank1"])
    torch.testing.assert_close(_sorted_rows(banks["rank0"]), _sorted_rows(banks["single"]))

    predictions = {name: torch.load(tmp_path / f"predictions_{name}.pt") for name in ("rank0", "rank1", "single")}
    for name in ("rank1", "single"):
        torch.testing.assert_close(predictions[name]["pred_score"], predictions["rank0"]["pred_score"])
        torch.testing.assert_close(predictions[name]["anomaly_map"], predictions["rank0"]["anomaly_map"])
