"""Loading a checkpoint of another model, or a damaged file: one message naming the file and both models."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest
import torch
from anomalib.models import Padim, Patchcore
from anomalib.models.components import AnomalibModule

from anomalib_surface.compat.checkpoint_errors import CheckpointMismatchError, DamagedCheckpointError
from anomalib_surface.models.locc import Locc
from anomalib_surface.models.pgcn import Pgcn


def _save(model: AnomalibModule, path: Path) -> Path:
    """The checkpoint Lightning writes for ``model`` (state dict, hyper-parameters, the model's hook)."""
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        (lambda: Patchcore(backbone="resnet18", pre_trained=False, visualizer=False), Padim),
        (lambda: Pgcn(**Pgcn.smoke_test_init_args(), visualizer=False), Locc),
    ],
    ids=["Patchcore-as-Padim", "Pgcn-as-Locc"],
)
def test_checkpoint_of_another_model(writer: object, reader: type, tmp_path: Path) -> None:
    written = writer()
    path = _save(written, tmp_path / "other model.ckpt")
    held = type(written).__name__
    with pytest.raises(CheckpointMismatchError, match=rf"Checkpoint '.*other model.ckpt' holds a {held} model .* but {reader.__name__} was asked") as error:
        reader.load_from_checkpoint(path, map_location="cpu")
    assert "\n" not in str(error.value)


def test_trainer_restore_of_another_model_names_the_file(tmp_path: Path) -> None:
    path = _save(Patchcore(backbone="resnet18", pre_trained=False, visualizer=False), tmp_path / "patchcore.ckpt")
    model = Padim(backbone="resnet18", pre_trained=False, visualizer=False)
    model._trainer = type("Trainer", (), {"ckpt_path": str(path)})()  # noqa: SLF001 - what a Trainer restore sets
    with pytest.raises(CheckpointMismatchError, match=r"'.*patchcore.ckpt' holds a Patchcore model .* but Padim"):
        model.on_load_checkpoint(torch.load(path, map_location="cpu", weights_only=False))


def test_truncated_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = _save(Patchcore(backbone="resnet18", pre_trained=False, visualizer=False), tmp_path / "model.ckpt")
    with pytest.raises(CheckpointMismatchError, match="holds a Patchcore"):  # read with anomalib's safe globals
        Padim.load_from_checkpoint(path, map_location="cpu")
    path = _save(Padim(backbone="resnet18", pre_trained=False, visualizer=False), tmp_path / "padim.ckpt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedCheckpointError, match=r"Checkpoint '.*padim.ckpt' cannot be read .* checkpoint of a Padim model"):
        Padim.load_from_checkpoint(path, map_location="cpu")


def test_trainer_restore_of_a_damaged_file_names_the_file(tmp_path: Path) -> None:
    """``anomalib test/predict --ckpt_path`` read through the Trainer: Lightning's bare unpickling error gets the file."""
    path = _save(Padim(backbone="resnet18", pre_trained=False, visualizer=False), tmp_path / "padim.ckpt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    trainer = lightning.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    model = Padim(backbone="resnet18", pre_trained=False, visualizer=False)
    with pytest.raises(DamagedCheckpointError, match=r"Checkpoint '.*padim.ckpt' cannot be read .* checkpoint of a Padim model"):
        trainer.test(model, dataloaders=torch.utils.data.DataLoader([0]), ckpt_path=path)


def test_own_checkpoint_still_loads(tmp_path: Path) -> None:
    model = Padim(backbone="resnet18", pre_trained=False, visualizer=False)
    reloaded = Padim.load_from_checkpoint(_save(model, tmp_path / "padim.ckpt"), map_location="cpu")
    assert reloaded.state_dict().keys() == model.state_dict().keys()
