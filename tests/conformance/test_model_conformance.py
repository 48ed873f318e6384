"""Conformance harness: every model registered in the ``anomalib.models`` entry points by this package
goes through anomalib's Engine like a built-in model.

Per model: fit (all training phases), validate, test, predict, export to torch and ONNX (and OpenVINO
when installed), and reload from the checkpoint. Exports and the reloaded model must give the same
scores and maps as the trained model. A new model is picked up by registering its entry point; it
only has to provide ``smoke_test_init_args()`` with a tiny configuration.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

import anomalib.models
import numpy as np
import pytest
import torch
from anomalib.deploy import ExportType
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule

from anomalib_surface.data import SurfaceDemo
from anomalib_surface.data.surface_demo import make_surface_demo

IMAGE_SIZE = 64
DEMO_SETTINGS = {"image_size": IMAGE_SIZE, "num_train": 8, "num_test_good": 2, "num_test_defect_per_type": 1}
ENTRY_POINTS = sorted(
    (ep for ep in entry_points(group="anomalib.models") if ep.value.startswith("anomalib_surface.")),
    key=lambda ep: ep.name,
)
# Exports are compared with the Lightning model on the same images, after post-processing. Scores and maps
# are min-max normalised into [0, 1] by the post-processor, which divides raw differences by the range seen in
# validation: for a model trained for a few steps that range is tiny (e.g. Dmp's defect map, all near its 1 %
# prior), so the normalised tolerance is widened to RAW_SCORE_ATOL divided by that range where this is larger.
SCORE_TOLERANCE = {"rtol": 1e-3, "atol": 2e-3}
RAW_SCORE_ATOL = 1e-6
NORMALISATION_RANGES = {"pred_score": ("image_min", "image_max"), "anomaly_map": ("pixel_min", "pixel_max")}
# Boolean outputs and the normalised values they threshold.
DECISIONS = {"pred_label": "pred_score", "pred_mask": "anomaly_map"}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SurfaceDemo dataset: 8 training images of 64 px, 2 good + 1 per defect type for test."""
    return make_surface_demo(tmp_path_factory.mktemp("surface_demo"), categories="brick", **DEMO_SETTINGS)


def build_model(model_class: type[AnomalibModule]) -> AnomalibModule:
    """The model in its smoke-test configuration, pre-processing images to ``IMAGE_SIZE``."""
    pre_processor = model_class.configure_pre_processor(image_size=(IMAGE_SIZE, IMAGE_SIZE))
    return model_class(pre_processor=pre_processor, **model_class.smoke_test_init_args())


def eval_outputs(model: torch.nn.Module, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Score, anomaly map, mask and label that ``model``'s exportable forward gives for ``images``."""
    with torch.no_grad():
        batch = model.eval()(images)
    return {key: value.detach().cpu().float().numpy() for key, value in batch._asdict().items() if value is not None}


def normalised_tolerances(
    statistics: dict[str, float],
    base: dict[str, float] = SCORE_TOLERANCE,
) -> dict[str, dict[str, float]]:
    """Per output, ``base`` widened to :data:`RAW_SCORE_ATOL` over the post-processor's normalisation range.

    ``statistics`` holds the post-processor's ``image_min``/``image_max``/``pixel_min``/``pixel_max``.
    """
    tolerances = {}
    for key, (low, high) in NORMALISATION_RANGES.items():
        value_range = float(statistics.get(high, np.nan)) - float(statistics.get(low, np.nan))
        atol = base["atol"]
        if np.isfinite(value_range) and value_range > 0:
            atol = max(atol, RAW_SCORE_ATOL / value_range)
        tolerances[key] = {**base, "atol": atol}
    return tolerances


def post_processor_statistics(model: AnomalibModule) -> dict[str, float]:
    """The normalisation range buffers of ``model``'s post-processor (NaN where it has none)."""
    names = [name for pair in NORMALISATION_RANGES.values() for name in pair]
    return {name: float(getattr(model.post_processor, name, np.nan)) for name in names}


def assert_same_outputs(
    actual: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    origin: str,
    tolerance: dict[str, float] = SCORE_TOLERANCE,
    per_key: dict[str, dict[str, float]] | None = None,
) -> None:
    """Scores and maps agree within ``tolerance`` (or ``per_key[key]``); labels and masks agree exactly, except
    where the normalised score or map value is within that key's ``atol`` of the normalised threshold 0.5 (a tie)."""
    assert actual.keys() == expected.keys(), origin
    per_key = per_key or {}
    for key, value in expected.items():
        if key in DECISIONS:
            decided_by = DECISIONS[key]
            distance_to_threshold = np.abs(expected[decided_by].reshape(value.shape) - 0.5)
            decided = distance_to_threshold > per_key.get(decided_by, tolerance)["atol"]
            np.testing.assert_array_equal(actual[key][decided], value[decided], err_msg=f"{origin}: {key}")
        else:
            np.testing.assert_allclose(actual[key], value, err_msg=f"{origin}: {key}", **per_key.get(key, tolerance))


@pytest.mark.parametrize("entry_point", ENTRY_POINTS, ids=lambda ep: ep.name)
def test_model_conforms_to_anomalib(entry_point, demo_root: Path, tmp_path: Path) -> None:  # noqa: ANN001
    model_class = entry_point.load()
    assert AnomalibModule in model_class.__bases__, "AnomalibModule must be a direct base (anomalib's get_model)"
    assert getattr(anomalib.models, model_class.__name__) is model_class

    torch.manual_seed(0)
    model = build_model(model_class)
    datamodule = SurfaceDemo(
        root=demo_root,
        category="brick",
        train_batch_size=4,
        eval_batch_size=4,
        num_workers=0,
        **DEMO_SETTINGS,
    )
    engine = Engine(
        accelerator="cpu",
        devices=1,
        max_epochs=max(1, len(model_class.phases)),  # one epoch per training phase
        default_root_dir=tmp_path,
        limit_train_batches=2,
        logger=False,
        enable_progress_bar=False,
    )

    engine.fit(model, datamodule=datamodule)
    assert engine.validate(model, datamodule=datamodule)
    (test,) = engine.test(model, datamodule=datamodule)
    assert np.isfinite(test["image_AUROC"])
    assert np.isfinite(test["pixel_AUROC"])

    predictions = engine.predict(model, datamodule=datamodule)
    first = predictions[0]
    batch_size = first.image.shape[0]
    assert first.pred_score.numel() == batch_size
    assert first.pred_label.numel() == batch_size
    assert first.anomaly_map.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
    assert first.pred_mask.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
    assert torch.isfinite(first.pred_score).all()

    images = first.image.clone()
    expected = eval_outputs(model, images)
    tolerances = normalised_tolerances(post_processor_statistics(model))

    torch_path = engine.export(model, ExportType.TORCH, export_root=tmp_path / "export")
    exported = torch.load(torch_path, map_location="cpu", weights_only=False)["model"]
    assert_same_outputs(eval_outputs(exported, images), expected, "torch export", per_key=tolerances)

    onnx_path = engine.export(model, ExportType.ONNX, export_root=tmp_path / "export", input_size=(IMAGE_SIZE, IMAGE_SIZE))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    names = [output.name for output in session.get_outputs()]
    assert_same_outputs(
        {name: value.astype(np.float32) for name, value in zip(names, onnx_outputs, strict=True)},
        {name: expected[name] for name in names},
        "ONNX export",
        per_key=tolerances,
    )

    if importlib.util.find_spec("openvino") is not None:
        openvino_path = engine.export(
            model,
            ExportType.OPENVINO,
            export_root=tmp_path / "export",
            input_size=(IMAGE_SIZE, IMAGE_SIZE),
        )
        assert openvino_path.exists()

    checkpoint = engine.trainer.checkpoint_callback.best_model_path or engine.trainer.checkpoint_callback.last_model_path
    reloaded = model_class.load_from_checkpoint(checkpoint, map_location="cpu")
    assert_same_outputs(eval_outputs(reloaded, images), expected, "checkpoint reload", per_key=tolerances)
