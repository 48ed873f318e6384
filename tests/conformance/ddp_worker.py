"""Train the plugin models for the DDP conformance test, run as a script: ``python ddp_worker.py MODE ROOT OUT NAME...``.

``NAME`` are model entry-point names; the models are trained one after the other in the same processes.

``MODE`` ``ddp``: two CPU processes (gloo) fit each model (all phases, a checkpoint after every epoch in
``OUT/<NAME>/checkpoints``, the final validation computes the post-processor's statistics). Each rank saves its
``state_dict`` and its predictions on the test images to ``OUT/<NAME>/rank<r>.pt``.

``MODE`` ``single``: one process rebuilds what the DDP run built from the whole training set, from the DDP
run's checkpoints: each buffer of :data:`TRAINING_SET_STATE` by re-running the epoch that builds it (resumed
from the checkpoint before it), and the post-processor's statistics by validating the final DDP weights. It
saves those buffers and the predictions of the final DDP weights to ``OUT/<NAME>/single.pt``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from anomalib.callbacks.checkpoint import ModelCheckpoint  # noqa: E402
from anomalib.engine import Engine  # noqa: E402
from anomalib.models.components import AnomalibModule  # noqa: E402
from lightning.pytorch import Callback, Trainer  # noqa: E402

from anomalib_surface.data import SurfaceDemo  # noqa: E402

IMAGE_SIZE = 64
# 7 training images: DistributedSampler pads rank 1's shard with a repeated image. 3 good + 5 defective
# test (= validation) images: an even number, so that no validation image is counted twice (see README).
DEMO_SETTINGS = {"image_size": IMAGE_SIZE, "num_train": 7, "num_test_good": 3, "num_test_defect_per_type": 1}
POST_PROCESSOR = "post_processor."



def max_epochs(model_class: type[AnomalibModule]) -> int:
    """The training length of the DDP run: one epoch per phase."""
    return max(1, len(model_class.phases))


def first_epoch_of(model: AnomalibModule, phase: str) -> int:
    """The (0-based) epoch at which ``model`` enters ``phase`` in a run of :func:`max_epochs` epochs."""
    epochs = model.phase_schedule.epochs(max_epochs(type(model)))
    return sum(epochs[name] for name in model.phases[: model.phases.index(phase)])


TRAINING_SET_STATE: dict[str, Callable[[AnomalibModule], dict[int, tuple[str, ...]]]] = {
    "Tocoad": lambda model: {first_epoch_of(model, "memory_bank"): ("model.memory_bank",)},
    "Locc": lambda model: {0: ("model.imm.template",), first_epoch_of(model, "centres"): ("model.alm.centres",)},
}
"""Buffers a model builds from the whole training set during ``fit``, by the (0-based) epoch that builds them.

Tocoad's memory bank (its last epoch); Locc's template (drawn when training starts) and local centres (its
centres pass).
"""


class StopAfterEpoch(Callback):
    """Stop ``fit`` at the end of training epoch ``epoch`` (after its validation, if any)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: Trainer, pl_module: L.LightningModule) -> None:
        """Request the stop once ``epoch`` is done."""
        del pl_module
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True


def model_class(name: str) -> type[AnomalibModule]:
    """The model class registered under ``name`` in the ``anomalib.models`` entry points."""
    (entry_point,) = (ep for ep in entry_points(group="anomalib.models") if ep.name == name)
    return entry_point.load()


def build_model(name: str) -> AnomalibModule:
    """The model in its smoke-test configuration at :data:`IMAGE_SIZE`, initialised from seed 0."""
    L.seed_everything(0, verbose=False)
    cls = model_class(name)
    pre_processor = cls.configure_pre_processor(image_size=(IMAGE_SIZE, IMAGE_SIZE))
    return cls(pre_processor=pre_processor, **cls.smoke_test_init_args())


def build_datamodule(root: Path) -> SurfaceDemo:
    """The tiny SurfaceDemo data in ``root``."""
    return SurfaceDemo(
        root=root, category="brick", train_batch_size=4, eval_batch_size=8, num_workers=0, **DEMO_SETTINGS,
    )


def engine(out: Path, name: str, devices: int, callbacks: list[Callback]) -> Engine:
    """A CPU engine on ``devices`` processes (DDP when more than one) for model ``name``."""
    strategy = {"strategy": "ddp"} if devices > 1 else {}
    return Engine(
        accelerator="cpu", devices=devices, max_epochs=max_epochs(model_class(name)), default_root_dir=out,
        logger=False, enable_progress_bar=False, callbacks=callbacks, **strategy,
    )


def predictions(model: AnomalibModule, root: Path) -> dict[str, torch.Tensor]:
    """Scores, maps, labels and masks of the exportable forward on the first test batch."""
    datamodule = build_datamodule(root)
    datamodule.setup("test")
    images = next(iter(datamodule.test_dataloader())).image
    with torch.no_grad():
        batch = model.eval()(images.to(model.device))
    return {key: value.cpu() for key, value in batch._asdict().items() if value is not None}


def cpu_state(model: AnomalibModule) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model.state_dict()``."""
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def run_ddp(name: str, root: Path, out: Path) -> None:
    """Fit ``name`` on two processes; each rank saves its state and predictions."""
    model = build_model(name)
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="{epoch}", save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True,
    )
    # One workspace per rank: anomalib's Engine.fit creates a new versioned folder on every rank, and two ranks
    # creating the same one race (FileExistsError).
    workspace = out / "ddp" / f"rank{os.environ.get('LOCAL_RANK', '0')}"
    trainer_engine = engine(workspace, name, devices=2, callbacks=[checkpoints])
    trainer_engine.fit(model, datamodule=build_datamodule(root))
    # The per-epoch checkpoints skip an epoch without optimiser step (Tocoad's last): save the final state.
    trainer_engine.trainer.save_checkpoint(out / "final.ckpt")
    rank = trainer_engine.trainer.global_rank
    torch.save({"state": cpu_state(model), "predictions": predictions(model, root)}, out / f"rank{rank}.pt")


def run_single(name: str, root: Path, out: Path) -> None:
    """Rebuild the DDP run's whole-training-set state in one process; save it with the final predictions."""
    rebuilt: dict[str, torch.Tensor] = {}
    for epoch, buffers in sorted(TRAINING_SET_STATE.get(name, lambda _: {})(build_model(name)).items()):
        model = build_model(name)
        resume = out / "checkpoints" / f"epoch={epoch - 1}.ckpt" if epoch > 0 else None
        engine(out / "single", name, devices=1, callbacks=[StopAfterEpoch(epoch)]).fit(
            model, datamodule=build_datamodule(root), ckpt_path=resume,
        )
        rebuilt |= {buffer: cpu_state(model)[buffer] for buffer in buffers}

    model = build_model(name)  # a fresh post-processor: its statistics come from this validation only
    trained = torch.load(out / "final.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    missing, unexpected = model.load_state_dict(
        {key: value for key, value in trained.items() if not key.startswith(POST_PROCESSOR)}, strict=False,
    )
    assert not unexpected and all(key.startswith(POST_PROCESSOR) for key in missing), (missing, unexpected)
    engine(out / "single", name, devices=1, callbacks=[]).validate(model, datamodule=build_datamodule(root))
    rebuilt |= {key: value for key, value in cpu_state(model).items() if key.startswith(POST_PROCESSOR)}
    torch.save({"state": rebuilt, "predictions": predictions(model, root)}, out / "single.pt")


def main(mode: str, root: Path, out: Path, names: list[str]) -> None:
    """Run ``mode`` for each model in ``names``, writing under ``out / name``."""
    run = {"ddp": run_ddp, "single": run_single}[mode]
    for name in names:
        run(name, root, out / name)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
