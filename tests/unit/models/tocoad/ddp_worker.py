"""Train Tocoad on SurfaceDemo for the DDP test, run as a script: ``python ddp_worker.py MODE ROOT OUT``.

``MODE`` ``ddp``: two CPU processes (gloo), all three stages, a checkpoint after every epoch; each rank
saves its memory bank to ``OUT/bank_rank<r>.pt``. ``MODE`` ``single``: one process resumes the DDP
run's checkpoint taken after stage 2 and runs stage 3 alone; it saves ``OUT/bank_single.pt``. Both
save the predictions of their model on the test images to ``OUT/predictions_<name>.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from anomalib.engine import Engine  # noqa: E402
from anomalib.callbacks.checkpoint import ModelCheckpoint  # noqa: E402

from anomalib_surface.data import SurfaceDemo  # noqa: E402
from anomalib_surface.models.tocoad import Tocoad  # noqa: E402

NUM_TRAIN = 7  # odd: DistributedSampler pads rank 1 with a repeated image


def main(mode: str, root: Path, out: Path) -> None:
    L.seed_everything(0)
    datamodule = SurfaceDemo(
        root=root, category="brick", image_size=64, num_train=NUM_TRAIN, num_test_good=2,
        num_test_defect_per_type=1, train_batch_size=4, eval_batch_size=8, num_workers=0,
    )
    model = Tocoad(**Tocoad.smoke_test_init_args(), pre_processor=Tocoad.configure_pre_processor(image_size=(64, 64)))
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="{epoch}", save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True,
    )
    arguments = {"accelerator": "cpu", "default_root_dir": out / mode, "logger": False, "callbacks": [checkpoints]}
    if mode == "ddp":
        engine = Engine(devices=2, strategy="ddp", **arguments)
        engine.fit(model, datamodule=datamodule)
        name = f"rank{engine.trainer.global_rank}"
    else:
        arguments["callbacks"] = []
        engine = Engine(devices=1, **arguments)
        engine.fit(model, datamodule=datamodule, ckpt_path=out / "checkpoints" / "epoch=1.ckpt")
        name = "single"
    torch.save(model.model.memory_bank.cpu(), out / f"bank_{name}.pt")
    datamodule.setup("test")
    images = next(iter(datamodule.test_dataloader())).image
    model.eval()
    with torch.no_grad():
        predictions = model.model(model.pre_processor(images))
    torch.save(predictions._asdict(), out / f"predictions_{name}.pt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
