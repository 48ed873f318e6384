"""Fit a tiny Dmp with 2 DDP processes (gloo) and record what each rank saw: ``python ddp_workspace_worker.py ROOT OUT``.

Run once as a plain script, Lightning's launcher starts rank 1 after rank 0 has set up its workspace
("apart"). Run twice with ``LOCAL_RANK``/``NODE_RANK``/``WORLD_SIZE``/``MASTER_*`` set, the two processes
start together, as under torchrun or SLURM. Each rank writes ``OUT/rank<r>.json``: its ``default_root_dir``
and the paths of the validation images it scored.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from anomalib.data import Folder  # noqa: E402
from anomalib.engine import Engine  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402

from anomalib_surface.models.dmp import Dmp  # noqa: E402


class RecordValidation(Callback):
    """Collect the image paths of every validation batch of this rank."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def on_validation_batch_end(self, trainer: object, pl_module: object, outputs: object, batch: object, *args: object) -> None:
        """Record the batch's image paths."""
        del trainer, pl_module, outputs, args
        self.paths.extend(str(path) for path in batch.image_path)


def main(root: Path, out: Path) -> None:
    """Fit and write ``OUT/rank<r>.json``."""
    datamodule = Folder(
        name="demo", root=root, normal_dir="train/good", abnormal_dir="test/defect", normal_test_dir="test/good",
        train_batch_size=4, eval_batch_size=2, num_workers=0, val_split_mode="same_as_test",
    )
    recorder = RecordValidation()
    engine = Engine(
        accelerator="cpu", devices=2, strategy="ddp", default_root_dir=out / "results", logger=False,
        enable_progress_bar=False, max_epochs=1, callbacks=[recorder],
    )
    model = Dmp(**Dmp.smoke_test_init_args(), pre_processor=Dmp.configure_pre_processor(image_size=(32, 32)), evaluator=False, visualizer=False)
    engine.fit(model, datamodule=datamodule)
    rank = engine.trainer.global_rank
    (out / f"rank{rank}.json").write_text(json.dumps({
        "default_root_dir": str(Path(engine.trainer.default_root_dir).resolve()),
        "validation_paths": recorder.paths,
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
