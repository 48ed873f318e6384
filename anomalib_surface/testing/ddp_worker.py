"""Train conformance cases under DDP and rebuild their training-set state in one process.

Run as ``python -m anomalib_surface.testing.ddp_worker MODE CASES ROOT OUT``: ``CASES`` is a pickle of a list of
:class:`~anomalib_surface.testing.case.ConformanceCase` (model classes are pickled by reference, so they must
be importable in this process), ``ROOT`` the tiny SurfaceDemo dataset, ``OUT`` the output folder (one
sub-folder per case).

``MODE`` ``ddp``: two CPU processes (gloo) fit each case; a checkpoint after every epoch goes to
``OUT/<name>/epochs``. Each rank saves its ``state_dict`` and its predictions on the first test batch to
``OUT/<name>/rank<r>.pt``.

``MODE`` ``single``: one process rebuilds what the DDP run built from the whole training set. For every epoch
in which a key of the model's ``training_set_state`` changed in the DDP run, it re-runs that epoch, resumed
from the DDP checkpoint before it, and keeps the rebuilt value beside the DDP one. The post-processor's
statistics come from validating the final DDP weights with a fresh post-processor. It saves those, with the
predictions of the final DDP weights, to ``OUT/<name>/single.pt``.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import lightning as L
import torch
from anomalib.models.components import AnomalibModule
from lightning.pytorch.callbacks import Callback, Checkpoint

from anomalib_surface.testing.case import ConformanceCase, cpu_engine, demo_datamodule

POST_PROCESSOR = "post_processor."


class SaveEveryEpoch(Checkpoint):
    """Save ``epoch=<e>.ckpt`` at the end of every training epoch, steps or not (unlike ``ModelCheckpoint``).

    A ``Checkpoint`` subclass, so Lightning calls it after the model's own ``on_train_epoch_end``.
    """

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = dirpath

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the checkpoint of the epoch that just ended (every rank takes part, rank 0 writes)."""
        del pl_module
        trainer.save_checkpoint(self.dirpath / f"epoch={trainer.current_epoch}.ckpt")


class StopAfterEpoch(Callback):
    """Stop ``fit`` at the end of training epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Request the stop once ``epoch`` is done."""
        del pl_module
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True


def cpu_state(model: AnomalibModule) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model.state_dict()``."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def predictions(model: AnomalibModule, root: Path) -> dict[str, torch.Tensor]:
    """Scores, maps, labels and masks of the exportable forward on the first test batch."""
    datamodule = demo_datamodule(root)
    datamodule.setup("test")
    images = next(iter(datamodule.test_dataloader())).image
    with torch.no_grad():
        batch = model.eval()(images.to(model.device))
    return {key: value.cpu() for key, value in batch._asdict().items() if value is not None}


def run_ddp(case: ConformanceCase, root: Path, out: Path) -> None:
    """Fit ``case`` on two processes; each rank saves its state and predictions."""
    model = case.build_model()
    # One workspace per rank: anomalib's Engine.fit creates a versioned folder on every rank, and two ranks
    # creating the same one race (FileExistsError).
    workspace = out / "ddp" / f"rank{os.environ.get('LOCAL_RANK', '0')}"
    engine = cpu_engine(case, workspace, callbacks=[SaveEveryEpoch(out / "epochs")], devices=2)
    engine.fit(model, datamodule=demo_datamodule(root))
    engine.trainer.save_checkpoint(out / "final.ckpt")
    rank = engine.trainer.global_rank
    torch.save({"state": cpu_state(model), "predictions": predictions(model, root)}, out / f"rank{rank}.pt")


def rebuild_training_set_state(case: ConformanceCase, root: Path, out: Path) -> tuple[dict, dict]:
    """``(rebuilt, ddp)``: the training-set state keys rebuilt in one process and their DDP values."""
    rebuilt: dict[str, torch.Tensor] = {}
    reference: dict[str, torch.Tensor] = {}
    before = cpu_state(case.build_model())
    epochs = sorted(out.glob("epochs/epoch=*.ckpt"), key=lambda path: int(path.stem.split("=")[1]))
    for epoch, path in enumerate(epochs):
        after = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        built = [
            key for key, value in after.items()
            if case.spec.is_training_set_state(key) and (key not in before or not torch.equal(before[key], value))
        ]
        if built:
            model = case.build_model()
            resume = epochs[epoch - 1] if epoch > 0 else None
            cpu_engine(case, out / "single", callbacks=[StopAfterEpoch(epoch)]).fit(
                model, datamodule=demo_datamodule(root), ckpt_path=resume,
            )
            state = cpu_state(model)
            rebuilt |= {key: state[key] for key in built}
            reference |= {key: after[key] for key in built}
        before = after
    return rebuilt, reference


def run_single(case: ConformanceCase, root: Path, out: Path) -> None:
    """Rebuild the DDP run's whole-training-set state in one process; save it with the final predictions."""
    rebuilt, reference = rebuild_training_set_state(case, root, out)

    model = case.build_model()  # a fresh post-processor: its statistics come from this validation only
    trained = torch.load(out / "final.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    missing, unexpected = model.load_state_dict(
        {key: value for key, value in trained.items() if not key.startswith(POST_PROCESSOR)}, strict=False,
    )
    assert not unexpected and all(key.startswith(POST_PROCESSOR) for key in missing), (missing, unexpected)
    cpu_engine(case, out / "single").validate(model, datamodule=demo_datamodule(root))
    post_processor = {key: value for key, value in cpu_state(model).items() if key.startswith(POST_PROCESSOR)}
    torch.save(
        {"rebuilt": rebuilt, "ddp": reference, "post_processor": post_processor, "predictions": predictions(model, root)},
        out / "single.pt",
    )


def main(mode: str, cases_file: Path, root: Path, out: Path) -> None:
    """Run ``mode`` for each case in ``cases_file``, writing under ``out / case.name``."""
    run = {"ddp": run_ddp, "single": run_single}[mode]
    with cases_file.open("rb") as file:
        cases: list[ConformanceCase] = pickle.load(file)  # noqa: S301 - written by our own harness
    for case in cases:
        run(case, root, out / case.name)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
