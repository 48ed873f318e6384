"""What a user of the ``anomalib`` command sees: build errors, class names, predictions (fast, no training)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from anomalib_surface.compat.cli_build_errors import build_error_message
from anomalib_surface.compat.cli_predict_output import prediction_lines


ANOMALIB = str(Path(sys.executable).with_name("anomalib"))
"""The ``anomalib`` command of the environment running the tests (not whichever comes first on ``PATH``)."""


def anomalib_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the ``anomalib`` command in ``cwd`` and return the finished process."""
    return subprocess.run(
        [ANOMALIB, *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_model_build_error_is_its_own_paragraph(tmp_path: Path) -> None:
    """Missing pretrained weights: one line naming the class and the ways out, no jsonargparse union traceback."""
    process = anomalib_cli(
        "fit", "--model", "Locc", "--data", "MVTecAD", cwd=tmp_path, HF_HUB_CACHE=str(tmp_path / "empty_cache"),
    )
    assert process.returncode == 1
    assert "error: Could not build anomalib_surface.models.Locc: Could not load ImageNet weights" in process.stderr
    assert "pre_trained=False" in process.stderr
    assert "Union subtypes" not in process.stderr
    assert "Traceback" not in process.stderr


def test_build_error_message_keeps_only_the_constructor_message() -> None:
    union_error = ValueError(
        "Does not validate against any of the Union subtypes\nSubtypes: [<class 'NoneType'>, <class 'X'>]\n"
        "Errors:\n  - Expected a <class 'NoneType'>\n  - ratio must be in (0, 1], got 2.0:\n    see the README\n"
        "Given value type: <class 'Namespace'>\nGiven value: Namespace(class_path='pkg.models.Model', init_args=x)",
    )
    assert build_error_message(union_error) == "Could not build pkg.models.Model: ratio must be in (0, 1], got 2.0: see the README"
    assert build_error_message(ValueError("some other error")) is None


def test_a_path_named_like_a_datamodule_is_not_rewritten(tmp_path: Path) -> None:
    """``--data folder`` where ``folder`` is a config file stays that file (class names only are case-insensitive)."""
    (tmp_path / "folder").write_text("class_path: anomalib.data.MVTecAD\ninit_args:\n  root: ./x\n")
    process = anomalib_cli("fit", "--model", "padim", "--data", "folder", "--print_config", cwd=tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "class_path: anomalib.data.MVTecAD" in process.stdout
    assert "Folder" not in process.stdout


def test_prediction_lines_give_path_score_label_and_mask_share() -> None:
    from anomalib.data import ImageBatch

    batch = ImageBatch(
        image=torch.zeros(2, 3, 4, 4),
        image_path=["a.png", "b.png"],
        pred_score=torch.tensor([0.25, 0.9]),
        pred_label=torch.tensor([False, True]),
        pred_mask=torch.stack([torch.zeros(4, 4, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool)]),
    )
    assert prediction_lines([batch]) == [
        "a.png  score=0.2500  label=normal  anomalous_pixels=0.00%",
        "b.png  score=0.9000  label=anomalous  anomalous_pixels=100.00%",
    ]
