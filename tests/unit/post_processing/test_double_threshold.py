"""Tests for the DoubleThresholdMorphology post-processor and its building blocks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from anomalib.data import ImageBatch, InferenceBatch
from lightning.pytorch.trainer.states import TrainerFn
from skimage.measure import label as skimage_label

from anomalib_surface.post_processing import DoubleThresholdMorphology
from anomalib_surface.post_processing.double_threshold import (
    hysteresis_threshold,
    label_components,
    structuring_element,
)

SIZE = 48


def _blank() -> torch.Tensor:
    return torch.zeros(SIZE, SIZE)


def _thresholds(anomaly_map: torch.Tensor, low: float, high: float) -> tuple[float, float]:
    std, mean = torch.std_mean(anomaly_map, correction=0)
    return (mean + low * std).item(), (mean + high * std).item()


@pytest.fixture
def seed_tail_blob() -> tuple[torch.Tensor, torch.Tensor]:
    """Map with a strong seed, a thin weak tail touching it and an isolated weak blob; plus the expected mask."""
    anomaly_map = _blank()
    anomaly_map[10:13, 10:13] = 10.0  # strong seed
    anomaly_map[11, 13:40] = 1.6  # weak tail connected to the seed
    anomaly_map[38:41, 38:41] = 1.6  # weak blob, not connected
    low, high = _thresholds(anomaly_map, 2.0, 3.0)
    assert low < 1.6 < high < 10.0  # premise of the test
    expected = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    expected[10:13, 10:13] = True
    expected[11, 13:40] = True
    return anomaly_map, expected


def test_hysteresis_keeps_connected_tail_and_drops_isolated_weak_blob(
    seed_tail_blob: tuple[torch.Tensor, torch.Tensor],
) -> None:
    anomaly_map, expected = seed_tail_blob
    mask = hysteresis_threshold(anomaly_map[None, None], 2.0, 3.0, num_iterations=64)
    assert torch.equal(mask[0, 0], expected)
    # Through the post-processor without morphology, a [B, H, W] map gives the same [B, H, W] mask.
    post_processor = DoubleThresholdMorphology(operations=())
    assert torch.equal(post_processor.compute_mask(anomaly_map[None]), expected[None])


def test_opening_removes_thin_structures_and_closing_fills_holes() -> None:
    anomaly_map = _blank()
    anomaly_map[5:15, 5:15] = 10.0
    anomaly_map[9, 9] = 0.0  # one-pixel hole in a strong square
    anomaly_map[30, 10:40] = 10.0  # one-pixel-wide strong line
    raw = DoubleThresholdMorphology(operations=()).compute_mask(anomaly_map[None])[0]
    assert raw[30, 20] and not raw[9, 9]
    cleaned = DoubleThresholdMorphology(operations=("open", "close")).compute_mask(anomaly_map[None])[0]
    expected = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    expected[5:15, 5:15] = True
    assert torch.equal(cleaned, expected)


def test_min_area_removes_specks() -> None:
    anomaly_map = _blank()
    anomaly_map[5:11, 5:11] = 10.0  # 36 px
    anomaly_map[30:32, 30:32] = 10.0  # 4 px speck
    keep_all = DoubleThresholdMorphology(operations=()).compute_mask(anomaly_map[None])[0]
    filtered = DoubleThresholdMorphology(operations=(), min_area=5).compute_mask(anomaly_map[None])[0]
    assert keep_all.sum() == 40
    assert filtered.sum() == 36
    assert filtered[5:11, 5:11].all()


def test_channels_are_thresholded_separately_and_ored() -> None:
    maps = torch.zeros(1, 2, SIZE, SIZE)
    maps[0, 0, 5:10, 5:10] = 1.0  # small-scale anomaly in channel 0
    maps[0, 1, 30:35, 30:35] = 1000.0  # large-scale anomaly in channel 1
    post_processor = DoubleThresholdMorphology()
    mask = post_processor.compute_mask(maps)[0]
    assert mask[5:10, 5:10].all()
    assert mask[30:35, 30:35].all()
    assert mask.sum() == 50
    per_channel = post_processor.compute_mask(maps[:, :1]) | post_processor.compute_mask(maps[:, 1:])
    assert torch.equal(mask, per_channel[0])


def test_batched_equals_per_image_and_is_deterministic() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.nn.functional.avg_pool2d(torch.rand(4, 1, SIZE, SIZE, generator=generator), 5, 1, 2)
    post_processor = DoubleThresholdMorphology(kernel_shape="disk", kernel_size=3, min_area=3)
    batched = post_processor.compute_mask(maps)
    assert batched.shape == (4, SIZE, SIZE)
    assert batched.dtype == torch.bool
    assert batched.any()
    single = torch.cat([post_processor.compute_mask(anomaly_map[None]) for anomaly_map in maps])
    assert torch.equal(batched, single)
    assert torch.equal(batched, post_processor.compute_mask(maps.clone()))


def test_label_components_matches_skimage_8_connectivity() -> None:
    generator = torch.Generator().manual_seed(1)
    masks = torch.nn.functional.avg_pool2d(torch.rand(3, 1, 32, 32, generator=generator), 3, 1, 1) > 0.55
    labels = label_components(masks, num_iterations=64).view(3, 32, 32)
    for mask, ours in zip(masks[:, 0], labels, strict=True):
        reference = torch.from_numpy(skimage_label(mask.numpy(), connectivity=2))
        pairs = set(zip(reference[mask].tolist(), ours[mask].tolist(), strict=True))
        # same partition: a one-to-one map between reference and our labels, background 0 in both
        assert len(pairs) == reference.max().item() == len(set(ours[mask].tolist()))
        assert (ours[~mask] == 0).all()


@pytest.mark.parametrize("num_iterations", [2, 64])
def test_label_components_eager_early_stop_equals_all_steps(
    num_iterations: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per-map early stopping and skipping empty maps give the labels of running every step on every map."""
    from anomalib_surface.post_processing import double_threshold

    generator = torch.Generator().manual_seed(2)
    masks = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 40, 40, generator=generator), 3, 1, 1) > 0.5
    masks[1] = False  # an empty map
    masks[2] = True  # one component spanning the map: the slowest to converge
    eager = label_components(masks, num_iterations)
    monkeypatch.setattr(double_threshold, "is_traced", lambda: True)
    assert torch.equal(eager, label_components(masks, num_iterations))


def test_hysteresis_without_seed_pixel_is_empty() -> None:
    maps = torch.zeros(2, 1, 16, 16)
    maps[:, :, 4:8, 4:8] = 1.0
    mask = hysteresis_threshold(maps, 0.5, 2.0, 64, statistics=(torch.tensor(0.0), torch.tensor(1.0)))
    assert not mask.any()
    maps[1, :, 5, 5] = 3.0  # a seed in the second map keeps its whole weak region
    mask = hysteresis_threshold(maps, 0.5, 2.0, 64, statistics=(torch.tensor(0.0), torch.tensor(1.0)))
    assert not mask[0].any()
    assert torch.equal(mask[1, 0], maps[1, 0] > 0.5)


def test_structuring_elements() -> None:
    assert structuring_element(3, "square").sum() == 9
    assert torch.equal(structuring_element(3, "cross"), structuring_element(3, "disk"))
    disk = structuring_element(5, "disk")
    assert disk.sum() == 13
    assert disk[0, 0] == 0
    assert disk[0, 2] == 1
    assert structuring_element(5, "cross").sum() == 9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"low_factor": 3.0, "high_factor": 2.0}, "low_factor <= high_factor"),
        ({"low_factor": -1.0}, "low_factor"),
        ({"kernel_size": 4}, "kernel_size must be odd"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_shape": "hexagon"}, "kernel_shape"),
        ({"operations": ("open", "erode")}, "operations"),
        ({"min_area": -1}, "min_area"),
        ({"min_area": 2.5}, "min_area"),
        ({"label_iterations": 0}, "label_iterations"),
        ({"label_mode": "both"}, "label_mode"),
        ({"threshold_statistics": "dataset"}, "threshold_statistics"),
        ({"factor_grid": (2.0, -1.0)}, "factor_grid"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DoubleThresholdMorphology(**kwargs)


def test_operations_accepts_a_single_string() -> None:
    assert DoubleThresholdMorphology(operations="close").operations == ("close",)


def test_compute_mask_rejects_unbatched_map() -> None:
    with pytest.raises(ValueError, match="anomaly_map"):
        DoubleThresholdMorphology().compute_mask(torch.rand(SIZE, SIZE))


def _calibrate(post_processor: DoubleThresholdMorphology) -> None:
    """Set validation statistics as if computed on a validation set: raw range [0, 4], thresholds 2."""
    for name, value in {
        "image_min": 0.0,
        "image_max": 4.0,
        "pixel_min": 0.0,
        "pixel_max": 4.0,
        "_image_threshold": 2.0,
        "_pixel_threshold": 2.0,
    }.items():
        getattr(post_processor, name).fill_(value)


def test_forward_uses_raw_map_and_keeps_parent_normalisation(
    seed_tail_blob: tuple[torch.Tensor, torch.Tensor],
) -> None:
    anomaly_map, expected = seed_tail_blob
    maps = torch.stack([anomaly_map, _blank()])  # second image has an empty mask
    post_processor = DoubleThresholdMorphology(operations=())
    _calibrate(post_processor)
    output = post_processor(InferenceBatch(pred_score=torch.tensor([10.0, 0.0]), anomaly_map=maps))
    # normalisation clips the seed (10 -> 1) and the tail (1.6 -> 0.4): the mask still comes from the raw map
    assert torch.allclose(output.anomaly_map, ((maps - 2.0) / 4.0 + 0.5).clamp(0, 1))
    assert torch.allclose(output.pred_score, torch.tensor([1.0, 0.0]))
    assert output.pred_mask.dtype == torch.bool
    assert torch.equal(output.pred_mask, torch.stack([expected, torch.zeros_like(expected)]))
    assert output.pred_label.tolist() == [True, False]


def test_score_label_mode_gates_the_mask(seed_tail_blob: tuple[torch.Tensor, torch.Tensor]) -> None:
    anomaly_map, expected = seed_tail_blob
    maps = torch.stack([anomaly_map, anomaly_map])
    post_processor = DoubleThresholdMorphology(operations=(), label_mode="score")
    _calibrate(post_processor)
    output = post_processor(InferenceBatch(pred_score=torch.tensor([3.0, 1.0]), anomaly_map=maps))
    assert output.pred_label.tolist() == [True, False]
    assert torch.equal(output.pred_mask[0], expected)
    assert not output.pred_mask[1].any()


def test_forward_without_thresholding_produces_no_mask() -> None:
    output = DoubleThresholdMorphology(enable_thresholding=False)(
        InferenceBatch(pred_score=torch.rand(2), anomaly_map=torch.rand(2, 1, SIZE, SIZE)),
    )
    assert output.pred_mask is None
    assert output.pred_label is None


def test_callback_path_on_lightning_batch(seed_tail_blob: tuple[torch.Tensor, torch.Tensor]) -> None:
    anomaly_map, expected = seed_tail_blob
    post_processor = DoubleThresholdMorphology(operations=())
    _calibrate(post_processor)
    batch = ImageBatch(
        image=torch.rand(2, 3, SIZE, SIZE),
        gt_label=torch.tensor([1, 0]),
        pred_score=torch.tensor([10.0, 0.0]),
        anomaly_map=torch.stack([anomaly_map, _blank()]),
    )
    post_processor.on_test_batch_end(None, None, batch)
    assert torch.equal(batch.pred_mask, torch.stack([expected, torch.zeros_like(expected)]))
    assert batch.pred_label.tolist() == [True, False]
    assert batch.anomaly_map.max() <= 1.0
    assert torch.allclose(batch.pred_score, torch.tensor([1.0, 0.0]))


def _calibrated(post_processor: DoubleThresholdMorphology) -> DoubleThresholdMorphology:
    """``post_processor`` with defect-free statistics and a high factor as a validation run would set them."""
    post_processor.normal_mean.fill_(0.45)
    post_processor.normal_std.fill_(0.05)
    post_processor.calibrated_high_factor.fill_(4.0)
    return post_processor


EXPORT_CASES = {
    "per-image statistics": lambda: DoubleThresholdMorphology(min_area=3, label_iterations=4),
    "normal statistics, not calibrated (per-image fallback)": lambda: DoubleThresholdMorphology(
        min_area=3, label_iterations=4, threshold_statistics="normal", factor_grid=(2.0, 3.0)
    ),
    "normal statistics, calibrated": lambda: _calibrated(
        DoubleThresholdMorphology(min_area=3, label_iterations=4, threshold_statistics="normal", factor_grid=(2.0, 3.0))
    ),
}


@pytest.mark.filterwarnings("ignore:DoubleThresholdMorphology.*no statistics yet")
@pytest.mark.parametrize("case", EXPORT_CASES)
def test_onnx_export_matches_eager(case: str, tmp_path: pytest.TempPathFactory) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.post_processor = EXPORT_CASES[case]()

        def forward(self, anomaly_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            scores = anomaly_map.amax((1, 2, 3))
            output = self.post_processor(InferenceBatch(pred_score=scores, anomaly_map=anomaly_map))
            return output.pred_mask, output.pred_label

    wrapper = Wrapper().eval()
    generator = torch.Generator().manual_seed(2)
    maps = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 32, 32, generator=generator), 5, 1, 2)
    path = tmp_path / "post_processor.onnx"
    torch.onnx.export(wrapper, (maps,), str(path), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},))
    session = ort.InferenceSession(str(path))
    test_maps = torch.nn.functional.avg_pool2d(torch.rand(3, 1, 32, 32, generator=generator), 5, 1, 2)
    test_maps[0, 0, 4:12, 6:14] += 1.0
    test_maps[1, 0, 20:30, 2:8] += 1.0
    onnx_mask, onnx_label = session.run(None, {session.get_inputs()[0].name: test_maps.numpy()})
    eager_mask, eager_label = wrapper(test_maps)
    assert eager_mask[0, 4:12, 6:14].all()
    assert eager_mask[1, 20:30, 2:8].all()
    assert torch.equal(torch.from_numpy(onnx_mask), eager_mask)
    assert torch.equal(torch.from_numpy(onnx_label), eager_label)


def _validation_batch(maps: torch.Tensor, masks: torch.Tensor) -> ImageBatch:
    labels = masks.flatten(1).any(dim=1)
    image = torch.rand(len(maps), 3, SIZE, SIZE)
    return ImageBatch(image=image, gt_label=labels, gt_mask=masks, pred_score=labels.float(), anomaly_map=maps)


def test_normal_statistics_and_factor_grid_are_calibrated_on_validation() -> None:
    normal = _blank()
    normal[::2] = 2.0  # defect-free pixels: mean 1, std 1
    defective, truth = normal.clone(), torch.zeros(SIZE, SIZE, dtype=torch.bool)
    defective[8:22, 8:22] = 4.0  # weak halo, not in the ground truth
    defective[10:20, 10:20] = 10.0
    truth[10:20, 10:20] = True
    post_processor = DoubleThresholdMorphology(
        low_factor=2.0, high_factor=3.0, operations=(), threshold_statistics="normal", factor_grid=(2.0, 5.0, 12.0)
    )
    # before validation: each image's own statistics and the configured factors, with a warning
    with pytest.warns(UserWarning, match="validation"):
        uncalibrated = post_processor.compute_mask(defective[None])
    per_image = DoubleThresholdMorphology(low_factor=2.0, high_factor=3.0, operations=())
    assert torch.equal(uncalibrated, per_image.compute_mask(defective[None]))
    normal_masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    post_processor.on_validation_batch_end(None, None, _validation_batch(torch.stack([normal, normal]), normal_masks))
    post_processor.on_validation_batch_end(None, None, _validation_batch(defective[None], truth[None]))
    post_processor.on_validation_epoch_end(None, None)

    # statistics of the defect-free images only; k = 2 keeps the halo (low 1 + 1 * 1), k = 12 misses the defect
    assert (post_processor.normal_mean.item(), post_processor.normal_std.item()) == (1.0, 1.0)
    assert post_processor.calibrated_high_factor.item() == 5.0
    assert torch.equal(post_processor.compute_mask(defective[None])[0], truth)
    bump = _blank()
    bump[30:34, 30:34] = 2.0  # within the defect-free range: empty, whereas per-image statistics flag it
    assert not post_processor.compute_mask(bump[None]).any()
    assert DoubleThresholdMorphology(operations=()).compute_mask(bump[None]).any()
    assert {"normal_mean", "normal_std", "calibrated_high_factor"} <= set(post_processor.state_dict())
    assert "normal_mean" not in DoubleThresholdMorphology().state_dict()


def _fitting_trainer(epoch: int, max_epochs: int = 5, max_steps: int = -1, sanity: bool = False) -> SimpleNamespace:
    """The attributes of a fitting Lightning trainer that ``DoubleThresholdMorphology.calibrates`` reads."""
    return SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING), sanity_checking=sanity, current_epoch=epoch,
        max_epochs=max_epochs, max_steps=max_steps,
    )


@pytest.mark.parametrize(("every", "calibrated_epochs"), [(0, [4]), (2, [1, 3, 4])])
def test_factor_grid_is_searched_at_the_last_epoch_or_every_n(every: int, calibrated_epochs: list[int]) -> None:
    post_processor = DoubleThresholdMorphology(factor_grid=(2.0, 3.0), calibrate_every_n_epochs=every)
    epochs = [epoch for epoch in range(5) if post_processor.calibrates(_fitting_trainer(epoch), None)]
    assert epochs == calibrated_epochs
    assert not post_processor.calibrates(_fitting_trainer(4, sanity=True), None)
    assert post_processor.calibrates(None, None)  # a stand-alone validation always calibrates
    assert post_processor.calibrates(SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.VALIDATING)), None)
    phased = SimpleNamespace(epochs_planned=3)  # a phased model's own plan decides the last epoch
    assert post_processor.calibrates(_fitting_trainer(2), phased)


def test_skipped_validation_keeps_no_maps_and_leaves_the_factor() -> None:
    post_processor = DoubleThresholdMorphology(factor_grid=(2.0, 3.0), operations=())
    post_processor.on_validation_epoch_start(_fitting_trainer(0), None)
    maps = torch.rand(2, SIZE, SIZE)
    post_processor.on_validation_batch_end(None, None, _validation_batch(maps, torch.ones(2, SIZE, SIZE, dtype=torch.bool)))
    assert not post_processor._validation_maps
    post_processor.on_validation_epoch_end(None, None)
    assert torch.isnan(post_processor.calibrated_high_factor)


def test_usable_as_post_processor_of_a_builtin_model() -> None:
    from anomalib.models import Padim

    post_processor = DoubleThresholdMorphology(low_factor=2.5, kernel_shape="cross", min_area=7)
    model = Padim(pre_trained=False, post_processor=post_processor)
    assert model.post_processor is post_processor
    assert post_processor in model.configure_callbacks()

    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    saved = checkpoint["anomalib_post_processor_config"]
    assert saved["min_area"] == 7
    assert saved["kernel_shape"] == "cross"

    restored = Padim(pre_trained=False, post_processor=DoubleThresholdMorphology())
    restored.on_load_checkpoint(checkpoint)
    assert restored.post_processor.checkpoint_config() == post_processor.checkpoint_config()


def test_configurable_from_yaml() -> None:
    from anomalib.models import Padim
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(Padim, "model")
    config = parser.parse_string(
        """
        model:
          pre_trained: false
          post_processor:
            class_path: anomalib_surface.post_processing.DoubleThresholdMorphology
            init_args:
              high_factor: 2.5
              operations: [close]
              min_area: 9
              image_sensitivity: 0.4
              threshold_statistics: normal
              factor_grid: [2.0, 3.0, 4.0]
        """,
    )
    post_processor = parser.instantiate_classes(config).model.post_processor
    assert isinstance(post_processor, DoubleThresholdMorphology)
    assert (post_processor.high_factor, post_processor.operations, post_processor.min_area) == (2.5, ("close",), 9)
    assert post_processor.image_sensitivity == 0.4
    assert (post_processor.threshold_statistics, post_processor.factor_grid) == ("normal", (2.0, 3.0, 4.0))
