"""Two-process DDP (gloo, CPU): both ranks end equal, and equal to what one process builds from the same data.

:func:`run_ddp` trains a list of cases in one pair of worker processes (process start-up is most of the
cost); :func:`check_ddp` then checks one case: both ranks hold the same weights, buffers, post-processor
statistics and predictions, and the training-set state and post-processor statistics equal the ones a
single process rebuilds, exactly for values picked or copied from the data (templates, min/max,
thresholds) and within :data:`STATE_TOLERANCE` where DDP sums in another order (centres, means).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .case import ConformanceCase
from .outputs import assert_same_outputs, normalised_tolerances

# Float summation order (all-reduce of per-rank sums, other batch compositions): differences seen are <= 1e-6.
STATE_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
NORMALISATION_STATISTICS = ("image_min", "image_max", "pixel_min", "pixel_max")
POST_PROCESSOR = "post_processor."
WORKER_TIMEOUT_S = 900


def _run_worker(mode: str, cases_file: Path, data_root: Path, out: Path) -> None:
    # The worker unpickles model classes by reference: give it this process's import path (test modules included).
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    command = [sys.executable, "-m", "anomalib_surface.testing.ddp_worker", mode, str(cases_file), str(data_root), str(out)]
    result = subprocess.run(  # noqa: S603 - our own module
        command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=environment, check=False,
    )
    assert result.returncode == 0, f"DDP {mode} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def run_ddp(cases: Sequence[ConformanceCase], data_root: Path, out: Path) -> Path:
    """Fit ``cases`` on two processes, then rebuild their training-set state in one; return ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cases_file = out / "cases.pkl"
    with cases_file.open("wb") as file:
        pickle.dump(list(cases), file)
    _run_worker("ddp", cases_file, data_root, out)
    _run_worker("single", cases_file, data_root, out)
    return out


def _numpy(predictions: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.float().numpy() for key, value in predictions.items()}


def check_ddp(case: ConformanceCase, out: Path) -> None:
    """Check the DDP run of ``case`` in ``out`` (written by :func:`run_ddp`)."""
    missing = [path.name for path in (out / case.name / f"rank{rank}.pt" for rank in (0, 1)) if not path.is_file()]
    assert not missing, f"{case.name}: no {missing} in {out / case.name}: the DDP run did not start two processes"
    rank0, rank1 = (torch.load(out / case.name / f"rank{rank}.pt") for rank in (0, 1))
    single = torch.load(out / case.name / "single.pt")

    # Both ranks: the same weights, buffers and post-processor statistics, and the same predictions.
    assert rank0["state"].keys() == rank1["state"].keys()
    for key, value in rank0["state"].items():
        torch.testing.assert_close(rank1["state"][key], value, rtol=0, atol=0, equal_nan=True, msg=f"{case.name} rank 1: {key}")
    assert_same_outputs(_numpy(rank1["predictions"]), _numpy(rank0["predictions"]), f"{case.name} rank 1", {"rtol": 0, "atol": 0})

    # Every declared training-set state was built, and equals the one a single process builds.
    for prefix in case.spec.training_set_state:
        assert any(case.spec.is_training_set_state(key) and key.startswith(prefix) for key in single["rebuilt"]), (
            f"{case.name}.training_set_state names {prefix!r}, but no such state_dict entry changed during training"
        )
    for key, value in single["rebuilt"].items():
        assert value.numel() > 0 and torch.isfinite(value).all(), f"{case.name}: {key} is empty or not finite"
        torch.testing.assert_close(single["ddp"][key], value, **STATE_TOLERANCE, msg=f"{case.name} DDP vs single: {key}")

    statistics = {}
    for key, value in single["post_processor"].items():
        torch.testing.assert_close(rank0["state"][key], value, **STATE_TOLERANCE, equal_nan=True, msg=f"{case.name}: {key}")
        name = key.removeprefix(POST_PROCESSOR)
        if name in NORMALISATION_STATISTICS:
            assert torch.isfinite(value).all(), f"{case.name}: {key} not computed by validation"
            statistics[name] = float(value)
    assert_same_outputs(
        _numpy(single["predictions"]),
        _numpy(rank0["predictions"]),
        f"{case.name} single process",
        STATE_TOLERANCE,
        per_key=normalised_tolerances(statistics, STATE_TOLERANCE),
    )
