"""Images with NaN/infinite pixels: a clear error naming the file by default, scored anomalous on request,
never scored normal (eager, every model, and the ONNX export)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import ImageBatch, InferenceBatch
from anomalib.post_processing import PostProcessor

from anomalib_surface.components.checks import OptionError
from anomalib_surface.components.finite_inputs import (
    FiniteInputPreProcessor,
    NonFiniteInputError,
    mark_nonfinite,
    replace_nonfinite,
)
from anomalib_surface.post_processing import DoubleThresholdMorphology

SIZE = 64
MODELS = {ep.name: ep for ep in entry_points(group="anomalib.models") if ep.value.startswith("anomalib_surface.")}


def _images() -> torch.Tensor:
    images = torch.rand(2, 3, SIZE, SIZE)
    images[1, :, 10:14, 20:25] = float("nan")  # 20 pixels
    images[1, 0, 40, 40] = float("inf")  # one more
    return images


def _batch(images: torch.Tensor) -> ImageBatch:
    return ImageBatch(image=images, image_path=["ok.png", "dead sensor.png"])


def test_error_names_the_file_and_the_count() -> None:
    pre_processor = FiniteInputPreProcessor()
    with pytest.raises(NonFiniteInputError, match=r"predict images: 'dead sensor.png': 21 of 4096 pixels\.") as error:
        pre_processor.on_predict_batch_start(None, None, _batch(_images()), 0)
    assert "ok.png" not in str(error.value)


@pytest.mark.parametrize(("name", "default_size"), [("Clgan", 256), ("Dmp", 256), ("Locc", 256), ("Pgcn", 224)])
def test_unnormalised_models_resize_only_at_their_default_size(name: str, default_size: int) -> None:
    model_class = MODELS[name].load()
    default = model_class.configure_pre_processor()
    images = torch.rand(1, 3, 300, 200)
    resized = default.transform(images)
    assert resized.shape[-2:] == (default_size, default_size)
    assert resized.min() >= 0 and resized.max() <= 1  # no normalisation
    assert default.nonfinite_inputs == "error"
    chosen = model_class.configure_pre_processor(image_size=(48, 64), nonfinite_inputs="anomalous")
    assert chosen.transform(images).shape[-2:] == (48, 64)
    assert chosen.nonfinite_inputs == "anomalous"


@pytest.mark.parametrize("hook", ["on_train_batch_start", "on_validation_batch_start"])
def test_training_and_validation_always_refuse(hook: str) -> None:
    pre_processor = FiniteInputPreProcessor(nonfinite_inputs="anomalous")
    with pytest.raises(NonFiniteInputError, match="dead sensor.png"):
        getattr(pre_processor, hook)(None, None, _batch(_images()), 0)


def test_anomalous_policy_lets_test_images_through_and_is_checked() -> None:
    pre_processor = FiniteInputPreProcessor(nonfinite_inputs="anomalous")
    pre_processor.on_test_batch_start(None, None, _batch(_images()), 0)
    with pytest.raises(OptionError, match="nonfinite_inputs must be one of"):
        FiniteInputPreProcessor(nonfinite_inputs="ignore")
    with pytest.raises(OptionError, match="nonfinite_inputs must be one of"):
        pre_processor.load_checkpoint_config({"transform": None, "nonfinite_inputs": 1})


@pytest.mark.parametrize("post_processor", [PostProcessor, DoubleThresholdMorphology], ids=lambda cls: cls.__name__)
def test_marked_images_come_out_anomalous_from_any_post_processor(post_processor: type) -> None:
    """+inf scores and map pixels normalise to 1 and are labelled/masked anomalous."""
    images, bad = replace_nonfinite(_images())
    assert torch.isfinite(images).all()
    maps = torch.rand(2, 1, SIZE, SIZE) * 0.1
    marked = mark_nonfinite(InferenceBatch(pred_score=maps.flatten(1).amax(1), anomaly_map=maps), bad)
    processor = post_processor()
    for name, value in {"_image_threshold": 0.05, "_pixel_threshold": 0.05, "image_min": 0.0, "image_max": 0.1, "pixel_min": 0.0, "pixel_max": 0.1}.items():
        getattr(processor, name).fill_(value)
    output = processor(marked)
    assert output.pred_score[1] == 1.0 and bool(output.pred_label[1])
    assert output.pred_mask[1, 10:14, 20:25].all()


def _eval_model(name: str) -> torch.nn.Module:
    model_class = MODELS[name].load()
    model = model_class(pre_processor=model_class.configure_pre_processor(image_size=(SIZE, SIZE)), visualizer=False, **model_class.smoke_test_init_args())
    if name == "Tocoad":  # a memory bank as stage 3 would build (random rows of the embedding's width)
        width = model.model.embed(torch.rand(1, 3, SIZE, SIZE)).shape[1]
        model.model.memory_bank = torch.rand(50, width)
    if name == "Locc":  # the template training draws
        model.model.imm.set_template(torch.rand(3, SIZE, SIZE))
    return model.eval()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_scores_nonfinite_images_anomalous_never_nan(name: str) -> None:
    model = _eval_model(name)
    images = _images()
    with torch.no_grad():
        predictions = model.model(images)
        clean = model.model(torch.nan_to_num(images[:1]))
    assert predictions.pred_score[1] == float("inf")
    torch.testing.assert_close(predictions.pred_score[:1], clean.pred_score)  # the other image is unaffected
    anomaly_map = predictions.anomaly_map.reshape(2, SIZE, SIZE)
    assert (anomaly_map[1, 10:14, 20:25] == float("inf")).all()
    assert torch.isfinite(anomaly_map[0]).all()


def test_onnx_export_scores_them_anomalous(tmp_path: Path) -> None:
    """The exported graph cannot raise: it marks the image anomalous, as eager ``"anomalous"`` does."""
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _eval_model("Dmp")
    model.post_processor.image_min.fill_(0.0)
    model.post_processor.image_max.fill_(1.0)
    model.post_processor._image_threshold.fill_(0.5)  # noqa: SLF001
    model.post_processor.pixel_min.fill_(0.0)
    model.post_processor.pixel_max.fill_(1.0)
    model.post_processor._pixel_threshold.fill_(0.5)  # noqa: SLF001
    images = _images()
    with torch.no_grad():
        expected = model(images)
    session = onnxruntime.InferenceSession(str(model.to_onnx(tmp_path, input_size=(SIZE, SIZE))), providers=["CPUExecutionProvider"])
    outputs = dict(zip([output.name for output in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: images.numpy()}), strict=True))
    assert bool(outputs["pred_label"][1]) and outputs["pred_score"][1] == 1.0
    np.testing.assert_array_equal(outputs["pred_label"].astype(bool), expected.pred_label.numpy())
    np.testing.assert_allclose(outputs["pred_score"], expected.pred_score.numpy(), atol=1e-5)
