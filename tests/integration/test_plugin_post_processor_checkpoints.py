"""Plugin post-processors on anomalib's built-in models survive the checkpoint round trip.

A checkpoint records its post-processor's class (``anomalib_surface.compat.post_processor_checkpoint``):
``Model.load_from_checkpoint(path)`` with no extra argument (what ``anomalib export --ckpt_path`` does) and
a Trainer restore (``anomalib test/predict --ckpt_path``) of a model built with its default post-processor
both come back with the plugin post-processor, its settings and statistics, and the ONNX export of the
reloaded model gives the trained model's masks (DoubleThresholdMorphology, whose masks are computed in the
graph; BidirectionalIntersection's exported graph is the single pass, compared in torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import Folder, InferenceBatch
from anomalib.engine import Engine
from anomalib.models import Padim, Patchcore
from anomalib.models.components import AnomalibModule
from lightning.fabric.utilities.seed import seed_everything

from anomalib_surface.compat.post_processor_checkpoint import CLASS_KEY
from anomalib_surface.data.surface_demo import make_surface_demo
from anomalib_surface.post_processing import BidirectionalIntersection, DoubleThresholdMorphology

IMAGE_SIZE = 32
MODELS = {
    "Patchcore": lambda **kwargs: Patchcore(
        backbone="resnet18", pre_trained=False, layers=["layer2", "layer3"], coreset_sampling_ratio=0.5, **kwargs,
    ),
    "Padim": lambda **kwargs: Padim(backbone="resnet18", pre_trained=False, layers=["layer1", "layer2"], **kwargs),
}
POST_PROCESSORS = {
    "dtm-image": lambda: DoubleThresholdMorphology(low_factor=1.5, high_factor=2.5, min_area=4),
    "dtm-normal": lambda: DoubleThresholdMorphology(threshold_statistics="normal", factor_grid=[1.0, 2.0, 3.0]),
    "bidirectional": lambda: BidirectionalIntersection(flip="vertical", image_sensitivity=0.4),
}


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SurfaceDemo category read with anomalib's own Folder datamodule."""
    root = make_surface_demo(
        tmp_path_factory.mktemp("demo"), categories="brick", image_size=IMAGE_SIZE, num_train=6,
        num_test_good=2, num_test_defect_per_type=1,
    )
    return root / "brick"


def _datamodule(root: Path) -> Folder:
    return Folder(
        name="brick", root=root, normal_dir="train/good", abnormal_dir=[path.relative_to(root) for path in sorted((root / "test").iterdir()) if path.name != "good"],
        normal_test_dir="test/good", mask_dir=[path.relative_to(root) for path in sorted((root / "ground_truth").iterdir())],
        train_batch_size=8, eval_batch_size=8, num_workers=0,
    )


def _engine(root: Path) -> Engine:
    return Engine(accelerator="cpu", devices=1, default_root_dir=root, logger=False, enable_progress_bar=False, max_epochs=1)


def _images(root: Path) -> torch.Tensor:
    datamodule = _datamodule(root)
    datamodule.setup()
    return next(iter(datamodule.test_dataloader())).image


def _assert_onnx_gives(model: AnomalibModule, images: torch.Tensor, expected: InferenceBatch, tmp_path: Path) -> None:
    """The ONNX export of ``model`` gives ``expected``'s masks and labels on ``images``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model.to_onnx(tmp_path / "export", input_size=(IMAGE_SIZE, IMAGE_SIZE))), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    batch = session.get_inputs()[0].shape[0]  # the exporter may fix the batch size
    step = batch if isinstance(batch, int) else len(images)
    chunks = [session.run(None, {session.get_inputs()[0].name: images[start : start + step].numpy()}) for start in range(0, len(images), step)]
    outputs = {name: np.concatenate([chunk[index] for chunk in chunks]) for index, name in enumerate(names)}
    np.testing.assert_array_equal(outputs["pred_mask"].astype(bool), expected.pred_mask.numpy().astype(bool))
    np.testing.assert_array_equal(outputs["pred_label"].astype(bool), expected.pred_label.numpy().astype(bool))


@pytest.mark.parametrize("post_processor", sorted(POST_PROCESSORS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_checkpoint_keeps_the_plugin_post_processor(model_name: str, post_processor: str, folder_root: Path, tmp_path: Path) -> None:
    seed_everything(0, verbose=False)
    model = MODELS[model_name](post_processor=POST_PROCESSORS[post_processor](), evaluator=False, visualizer=False)
    engine = _engine(tmp_path)
    engine.fit(model, datamodule=_datamodule(folder_root))
    checkpoint = tmp_path / "model.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    # What this package adds is plain data: no global of ours for weights_only loading to allow.
    assert not [name for name in torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint) if "anomalib_surface" in name]
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved[CLASS_KEY] == f"{type(model.post_processor).__module__}.{type(model.post_processor).__name__}"

    images = _images(folder_root)
    model.eval()
    with torch.no_grad():
        expected = model(images)

    # anomalib export --ckpt_path: load_from_checkpoint with no extra argument.
    reloaded = type(model).load_from_checkpoint(checkpoint, map_location="cpu")
    assert type(reloaded.post_processor) is type(model.post_processor)
    assert reloaded.post_processor.checkpoint_config() == model.post_processor.checkpoint_config()
    for key, value in model.post_processor.state_dict().items():
        torch.testing.assert_close(reloaded.post_processor.state_dict()[key], value, equal_nan=True, msg=key)

    if isinstance(model.post_processor, DoubleThresholdMorphology):  # its masks are computed in the exported graph
        _assert_onnx_gives(reloaded, images, expected, tmp_path)
    else:  # BidirectionalIntersection's second pass runs in the Lightning hooks; forward is the single pass
        with torch.no_grad():
            torch.testing.assert_close(reloaded.eval()(images).pred_mask, expected.pred_mask)

    # anomalib test --ckpt_path: a model built with its default post-processor, restored by the Trainer.
    fresh = MODELS[model_name](evaluator=False, visualizer=False)
    tester = _engine(tmp_path / "test")
    tester.test(fresh, datamodule=_datamodule(folder_root), ckpt_path=checkpoint)
    assert type(fresh.post_processor) is type(model.post_processor)
    assert fresh.post_processor in tester.trainer.callbacks


def test_checkpoint_naming_a_foreign_class_is_refused(tmp_path: Path) -> None:
    """Only PostProcessor classes of anomalib / anomalib_surface are imported from a checkpoint."""
    model: AnomalibModule = MODELS["Padim"](visualizer=False)
    checkpoint = {"state_dict": model.state_dict(), CLASS_KEY: "os.system", "pytorch-lightning_version": "2.5.0"}
    with pytest.raises(ValueError, match="'os.system', which is not a PostProcessor class"):
        model.on_load_checkpoint(checkpoint)
