"""A model's whole life cycle through anomalib's ``Engine``: fit, validate, test, train, predict, export, reload."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from anomalib.deploy import ExportType
from anomalib.models.components import AnomalibModule

from .case import IMAGE_SIZE, ConformanceCase, cpu_engine, demo_datamodule
from .outputs import assert_same_outputs, assert_same_state, eval_outputs, normalised_tolerances, post_processor_statistics


def check_registration(case: ConformanceCase) -> None:
    """``AnomalibModule`` is a direct base, so anomalib's ``get_model`` finds the class by name."""
    import anomalib.models

    assert AnomalibModule in case.model_class.__bases__, (
        f"{case.name}: AnomalibModule must be a direct base class (anomalib's get_model only looks at those)"
    )
    assert type(anomalib.models.get_model(case.name.lower(), **case.init_kwargs)) is case.model_class


def check_life_cycle(case: ConformanceCase, data_root: Path, workdir: Path) -> None:
    """Fit, validate, test and predict through one ``Engine``; export to torch, ONNX (and OpenVINO when
    installed) and reload the checkpoint with ``weights_only=True``: exports and reload predict what the
    trained model predicts, after post-processing. ``Engine.train`` from the final checkpoint tests the same model."""
    model = case.build_model()
    datamodule = demo_datamodule(data_root)
    engine = cpu_engine(case, workdir)

    engine.fit(model, datamodule=datamodule)
    assert engine.trainer.current_epoch == engine.trainer.max_epochs, f"{case.name}: fit stopped early"
    assert engine.validate(model, datamodule=datamodule), f"{case.name}: validate returned no metrics"
    (test,) = engine.test(model, datamodule=datamodule)
    assert np.isfinite(test["image_AUROC"]), f"{case.name}: image_AUROC {test['image_AUROC']}"

    predictions = engine.predict(model, datamodule=datamodule)
    first = predictions[0]
    batch_size = first.image.shape[0]
    assert first.pred_score.numel() == batch_size
    assert first.pred_label.numel() == batch_size
    assert torch.isfinite(first.pred_score).all(), f"{case.name}: non-finite pred_score"
    if first.anomaly_map is not None:
        assert first.anomaly_map.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
        assert first.pred_mask.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)

    images = first.image.clone()
    expected = eval_outputs(model, images)
    tolerances = normalised_tolerances(post_processor_statistics(model))
    export_root = workdir / "export"

    torch_path = engine.export(model, ExportType.TORCH, export_root=export_root)
    exported = torch.load(torch_path, map_location="cpu", weights_only=False)["model"]
    assert_same_outputs(eval_outputs(exported, images), expected, f"{case.name} torch export", per_key=tolerances)

    import onnxruntime

    onnx_path = engine.export(model, ExportType.ONNX, export_root=export_root, input_size=(IMAGE_SIZE, IMAGE_SIZE))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    names = [output.name for output in session.get_outputs()]
    assert_same_outputs(
        {name: value.astype(np.float32) for name, value in zip(names, onnx_outputs, strict=True)},
        {name: expected[name] for name in names},
        f"{case.name} ONNX export",
        per_key=tolerances,
    )
    if importlib.util.find_spec("openvino") is not None:
        openvino_path = engine.export(model, ExportType.OPENVINO, export_root=export_root, input_size=(IMAGE_SIZE, IMAGE_SIZE))
        assert openvino_path.exists()

    callback = engine.trainer.checkpoint_callback
    checkpoint = Path(callback.best_model_path or callback.last_model_path)
    check_weights_only_reload(case, checkpoint, model, images, expected)

    # Engine.train (fit, then test) from the final checkpoint: restores the finished run and tests it.
    train_engine = cpu_engine(case, workdir / "train")
    (trained,) = train_engine.train(case.build_model(), datamodule=demo_datamodule(data_root), ckpt_path=checkpoint)
    assert trained["image_AUROC"] == test["image_AUROC"], f"{case.name}: Engine.train tests another model"


def check_weights_only_reload(
    case: ConformanceCase, checkpoint: Path, model: AnomalibModule, images: torch.Tensor, expected: dict[str, np.ndarray],
) -> None:
    """``checkpoint`` holds plain data only (``torch.load(weights_only=True)`` loads it without registering any
    class) and the model rebuilt from it predicts ``expected`` on ``images``."""
    assert checkpoint.is_file(), f"{case.name}: no checkpoint written at {checkpoint}"
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(checkpoint)
    assert unsafe == [], f"{case.name}: the checkpoint needs weights_only=False for {unsafe}"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    reloaded = case.model_class.load_from_checkpoint(checkpoint, map_location="cpu")
    state = reloaded.state_dict()
    assert_same_state({key: state[key] for key in saved["state_dict"]}, saved["state_dict"], f"{case.name} reload")
    tolerances = normalised_tolerances(post_processor_statistics(model))
    assert_same_outputs(eval_outputs(reloaded, images), expected, f"{case.name} checkpoint reload", per_key=tolerances)
