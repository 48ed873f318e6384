"""Every model registered by this package under Lightning DDP (2 CPU processes, gloo).

The worker (``ddp_worker.py``) fits each model on two processes, then rebuilds in one process what the DDP
run built from the whole training set (memory bank, template, centres, post-processor statistics) from the
same data and seed. Both ranks must end with the same state and predictions, and that state must equal the
single-process one: exactly for the template and for statistics of the same values (min/max, thresholds),
within :data:`STATE_TOLERANCE` where DDP sums in another order (centres) or scores in other batches.
Normalised predictions get the same tolerance widened by the normalisation range (see
``test_model_conformance.normalised_tolerances``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_worker import DEMO_SETTINGS, POST_PROCESSOR, TRAINING_SET_STATE, build_model
from test_model_conformance import ENTRY_POINTS, assert_same_outputs, normalised_tolerances

from anomalib_surface.data.surface_demo import make_surface_demo

WORKER = Path(__file__).with_name("ddp_worker.py")
NAMES = [entry_point.name for entry_point in ENTRY_POINTS]
# Float summation order (all-reduce of per-rank sums, other batch compositions): differences seen are <= 1e-6.
STATE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
POST_PROCESSOR_STATISTICS = ("_image_threshold", "_pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max")


def _run(mode: str, root: Path, out: Path) -> None:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(WORKER), mode, str(root), str(out), *NAMES],
        capture_output=True, text=True, timeout=600, env=environment, check=False,
    )
    assert result.returncode == 0, f"{mode} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output folder of the DDP run and of the single-process rebuild, one sub-folder per model."""
    out = tmp_path_factory.mktemp("ddp")
    root = make_surface_demo(out / "data", categories="brick", **DEMO_SETTINGS)
    _run("ddp", root, out)
    _run("single", root, out)
    return out


def _numpy(predictions: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.float().numpy() for key, value in predictions.items()}


@pytest.mark.ddp
@pytest.mark.parametrize("name", NAMES)
def test_ddp_state_equals_single_process(name: str, runs: Path) -> None:
    rank0, rank1, single = (torch.load(runs / name / f"{run}.pt") for run in ("rank0", "rank1", "single"))

    # Both ranks: the same weights, buffers and post-processor statistics, and the same predictions.
    assert rank0["state"].keys() == rank1["state"].keys()
    for key, value in rank0["state"].items():
        torch.testing.assert_close(rank1["state"][key], value, rtol=0, atol=0, equal_nan=True, msg=key)
    assert_same_outputs(_numpy(rank1["predictions"]), _numpy(rank0["predictions"]), "rank 1", {"rtol": 0, "atol": 0})

    # The whole-training-set state equals the one a single process builds from the same images.
    training_set_state = TRAINING_SET_STATE.get(name, lambda _: {})(build_model(name))
    expected = {POST_PROCESSOR + statistic for statistic in POST_PROCESSOR_STATISTICS}
    expected |= {buffer for buffers in training_set_state.values() for buffer in buffers}
    assert expected <= single["state"].keys()
    for key, value in single["state"].items():
        assert value.numel() > 0 and torch.isfinite(value).all(), key
        torch.testing.assert_close(rank0["state"][key], value, **STATE_TOLERANCE, msg=key)
    statistics = {name: rank0["state"][POST_PROCESSOR + name] for name in ("image_min", "image_max", "pixel_min", "pixel_max")}
    assert_same_outputs(
        _numpy(single["predictions"]),
        _numpy(rank0["predictions"]),
        "single process",
        STATE_TOLERANCE,
        per_key=normalised_tolerances(statistics, STATE_TOLERANCE),
    )
