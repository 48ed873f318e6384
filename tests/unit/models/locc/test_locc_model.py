"""Locc model: options, phases, centre computation across ranks, outputs, and an Engine run."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import anomalib.models  # noqa: F401  # publish plugins first so the Locc package is never half-imported
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from anomalib.data import ImageBatch, InferenceBatch
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule

from anomalib_surface.components import NonFiniteLossError
from anomalib_surface.data import SurfaceDemo
from anomalib_surface.data.surface_demo import make_surface_demo
from anomalib_surface.models.locc import Locc, LoccModel
from anomalib_surface.models.locc.feature_cache import FeatureCache

CONFIG = Path(__file__).parents[4] / "configs" / "model" / "locc.yaml"
SIZE = 64


def tiny_locc(**overrides) -> Locc:
    kwargs = {
        **Locc.smoke_test_init_args(),
        "pre_processor": Locc.configure_pre_processor(image_size=(SIZE, SIZE)),
        "evaluator": False,
        "visualizer": False,
        **overrides,
    }
    return Locc(**kwargs)


class TwoRankStrategy:
    """Stands in for a DDP strategy whose other rank saw ``count`` images with feature sum ``total``."""

    root_device = torch.device("cpu")

    def __init__(self, total: torch.Tensor, count: float) -> None:
        self.other = {"sum": total, "count": torch.tensor(count)}

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        return tensor + (self.other["count"] if tensor.ndim == 0 else self.other["sum"])


def test_locc_is_a_direct_anomalib_module_with_documented_defaults() -> None:
    assert AnomalibModule in Locc.__bases__
    defaults = {name: p.default for name, p in inspect.signature(Locc).parameters.items()}
    assert defaults["alignment_ratio"] == 500 / 800  # 500 alignment, then 300 localisation epochs
    assert defaults["alignment_learning_rate"] == 2e-4 and defaults["learning_rate"] == 1e-3
    assert defaults["margin"] == 0.1
    assert defaults["pre_trained"] is True


def test_config_lists_every_option_with_its_default() -> None:
    config = yaml.safe_load(CONFIG.read_text())["model"]
    assert config["class_path"] == "anomalib_surface.models.Locc"
    parameters = inspect.signature(Locc).parameters
    components = {"pre_processor", "post_processor", "evaluator", "visualizer"}
    options = {name for name in parameters if name not in components}
    assert set(config["init_args"]) == options
    for name, value in config["init_args"].items():
        default = parameters[name].default
        assert value == (list(default) if isinstance(default, tuple) else default), name


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"center": "grid"}, "center"),
        ({"defect_shape": "circle"}, "defect_shape must be one of"),
        ({"alignment_ratio": 1.0}, "alignment_ratio"),
        ({"alignment_ratio": 0.0}, "alignment_ratio"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"alignment_learning_rate": -1.0}, "alignment_learning_rate"),
        ({"feature_dim": 1000}, "feature_dim"),
        ({"margin": 2.0}, "margin"),
        ({"imm_channels": ()}, "imm_channels"),
    ],
)
def test_invalid_options_are_rejected(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_locc(**overrides)


def test_foreign_source_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="anomaly_source_path"):
        tiny_locc(anomaly_source_path=str(tmp_path / "missing"))


def test_phases_split_the_trainer_budget() -> None:
    model = tiny_locc(alignment_ratio=0.4)
    assert "max_epochs" not in model.trainer_arguments  # the training length is the trainer's
    assert model.trainer_arguments["num_sanity_val_steps"] == 0
    assert model.phase_schedule.epochs(6) == {"alignment": 2, "centres": 1, "localisation": 3}
    assert model.phase_schedule.epochs(801) == {"alignment": 320, "centres": 1, "localisation": 480}

    unaligned = tiny_locc(align=False)
    assert unaligned.model.imm is None
    assert unaligned.phase_schedule.epochs(4) == {"alignment": 0, "centres": 1, "localisation": 3}


@pytest.mark.parametrize(("center", "grid"), [("map", (16, 16)), ("vector", (1, 1))])
def test_centres_are_summed_over_all_ranks(center: str, grid: tuple[int, int]) -> None:
    """The centres are the mean over the images of every rank: sums and counts are all-reduced; an image
    seen again (as ``DistributedSampler`` repeats images to even out the shards) counts once."""
    torch.manual_seed(0)
    model = tiny_locc(center=center)
    model.model.imm.set_template(torch.rand(3, SIZE, SIZE))
    images = torch.rand(4, 3, SIZE, SIZE)
    with torch.no_grad():
        aligned, _ = model.model.align(images)
        local = model.model.alm.reduce(model.model.alm.mixed_features(aligned))
    other_sum, other_count = torch.randn(local.shape[1:]), 6.0
    model.trainer = SimpleNamespace(current_epoch=1, world_size=2, strategy=TwoRankStrategy(other_sum, other_count))
    model.epochs_planned = 3  # alignment, centres, localisation

    model.on_train_epoch_start()
    assert model.current_phase == "centres"
    keys = torch.arange(len(images))
    for half, half_keys in [*zip(images.split(2), keys.split(2), strict=True), (images[:1], keys[:1])]:
        loss = model._accumulate_centres(half, half_keys)  # noqa: SLF001
        assert loss.item() == 0.0 and loss.requires_grad
    model.on_train_epoch_end()

    expected = (local.sum(0) + other_sum) / (len(images) + other_count)
    if center == "vector":
        expected = expected.mean(dim=(1, 2), keepdim=True)
    assert model.model.alm.centres.shape == (16, *grid)
    torch.testing.assert_close(model.model.alm.centres, expected, rtol=1e-4, atol=1e-5)


def test_phase_losses_train_only_their_own_module() -> None:
    torch.manual_seed(0)
    model = tiny_locc(anomaly_probability=1.0)
    images = torch.rand(2, 3, SIZE, SIZE)
    model.model.imm.set_template(images[0])

    model._registration_loss(images).backward()  # noqa: SLF001
    assert all(p.grad is not None for p in model.model.imm.parameters())
    assert all(p.grad is None for p in model.model.alm.parameters())

    model.zero_grad(set_to_none=True)
    model._cache = FeatureCache(copies=2)  # noqa: SLF001
    model._caching_loss(images).backward()  # noqa: SLF001
    assert all(p.grad is None for p in model.model.imm.parameters())
    assert all(p.grad is not None for p in model.model.alm.mapper.parameters())
    assert all(not p.requires_grad for p in model.model.alm.backbone.parameters())


def test_localisation_computes_backbone_features_once_then_trains_on_the_cache() -> None:
    """The first localisation epoch caches ``F_Mixed`` of each image and its defect copies; later epochs train
    ``N_M`` on the cache (no backbone pass), one optimiser step per training batch, as many epochs as the trainer's."""
    torch.manual_seed(0)
    model = tiny_locc(alignment_ratio=0.25, defect_copies=3, held_out_fraction=0.25, anomaly_probability=0.5)
    model.model.imm.set_template(torch.rand(3, SIZE, SIZE))
    model.model.alm.set_centres(torch.randn(16, SIZE // 4, SIZE // 4))
    model.trainer = SimpleNamespace(current_epoch=2, global_step=0, world_size=1, strategy=None)
    model.epochs_planned = 5  # alignment 1, centres 1, localisation 3
    model.log = lambda *args, **kwargs: None
    calls = []
    backbone_pass = model.model.alm.mixed_features
    model.model.alm.mixed_features = lambda images: calls.append(len(images)) or backbone_pass(images)
    batches = [torch.rand(4, 3, SIZE, SIZE) for _ in range(2)]

    for epoch in (2, 3, 4):
        model.trainer.current_epoch = epoch
        model.on_train_epoch_start()
        assert model.current_phase == "localisation"
        for images in batches:
            loss = model.training_step(ImageBatch(image=images, image_path=None))["loss"]
            assert loss.requires_grad and torch.isfinite(loss)
        model.on_train_epoch_end()
        if epoch == 2:
            assert calls == [4] * 2 * (1 + 3)  # each batch: the clean images and 3 defect copies
    assert calls == [4] * 8  # epochs 3 and 4 did not run the backbone
    cache = model._cache  # noqa: SLF001
    assert cache.features.shape[:2] == (4, 8) and cache.masks.shape[:2] == (4, 8)
    assert not cache.masks[0].any() and cache.masks[1:].flatten(1).any(1).all()  # clean, then defect copies
    assert cache.held_out_rows().tolist() == [3, 7]
    assert model._best_mapper is not None  # noqa: SLF001


def test_held_out_defects_choose_the_kept_mapping_network() -> None:
    """At the last epoch ``N_M`` returns to the weights of the epoch that ranked held-out synthetic defects best."""
    torch.manual_seed(0)
    model = tiny_locc(alignment_ratio=0.25, defect_copies=2, held_out_fraction=0.5)
    model.model.imm.set_template(torch.rand(3, SIZE, SIZE))
    model.model.alm.set_centres(torch.randn(16, SIZE // 4, SIZE // 4))
    model.trainer = SimpleNamespace(current_epoch=2, global_step=0, world_size=1, strategy=None)
    model.epochs_planned = 4
    scores = []
    model.log = lambda name, value, **kwargs: scores.append(value) if name == "held_out_defect_auroc" else None
    weights = []
    for epoch, images in ((2, torch.rand(4, 3, SIZE, SIZE)), (3, None)):
        model.trainer.current_epoch = epoch
        model.on_train_epoch_start()
        if images is not None:
            model.training_step(ImageBatch(image=images, image_path=None))
        with torch.no_grad():
            for parameter in model.model.alm.mapper.parameters():
                parameter.normal_()
        weights.append([p.clone() for p in model.model.alm.mapper.parameters()])
        model.on_train_epoch_end()
    assert len(scores) == 2
    best = weights[int(scores[1] > scores[0])]
    for kept, expected in zip(model.model.alm.mapper.parameters(), best, strict=True):
        torch.testing.assert_close(kept, expected)


def test_backbone_stays_in_eval_mode() -> None:
    model = tiny_locc()
    model.train()
    assert model.model.alm.mapper.training
    assert not model.model.alm.backbone.training


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("size", [(48, 80), (8, 8)])
def test_forward_gives_maps_at_input_resolution(align: bool, size: tuple[int, int]) -> None:
    model = LoccModel(align=align, imm_channels=(8, 16), pre_trained=False, feature_dim=16, hidden_dim=32).eval()
    images = torch.rand(3, 3, *size)
    if align:
        model.imm.set_template(images[0])
    output = model(images)
    assert isinstance(output, InferenceBatch)
    assert output.anomaly_map.shape == (3, 1, *size)
    assert output.pred_score.shape == (3,)
    torch.testing.assert_close(output.pred_score, output.anomaly_map.amax(dim=(1, 2, 3)))


def test_non_finite_loss_stops_training() -> None:
    model = tiny_locc()
    model.model.imm.set_template(torch.rand(3, SIZE, SIZE))
    model.trainer = SimpleNamespace(current_epoch=0, global_step=7)
    model.epochs_planned = 3  # set by on_train_start: alignment, centres, localisation
    model.on_train_epoch_start()
    with pytest.raises(NonFiniteLossError, match="registration_loss"):
        model.training_step(ImageBatch(image=torch.full((2, 3, SIZE, SIZE), float("nan"))))


def test_foreign_source_overlapping_the_test_split_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "1.png")
    model = tiny_locc(anomaly_source_path=str(tmp_path))
    samples = pd.DataFrame({"image_path": [str(tmp_path / "test" / "1.png")]})
    test_data = SimpleNamespace(samples=samples)
    model.trainer = SimpleNamespace(max_epochs=3, max_steps=-1, datamodule=SimpleNamespace(test_data=test_data))
    with pytest.raises(ValueError, match="overlaps the test split"):
        model.on_train_start()


def test_engine_trains_all_phases_and_reloads_from_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    root = make_surface_demo(
        tmp_path / "data",
        "brick",
        image_size=SIZE,
        num_train=8,
        num_test_good=2,
        num_test_defect_per_type=1,
    )
    datamodule = SurfaceDemo(root=root, category="brick", train_batch_size=4, eval_batch_size=4, num_workers=0)
    model = tiny_locc()
    engine = Engine(
        accelerator="cpu", devices=1, max_epochs=4, default_root_dir=tmp_path, logger=False, limit_val_batches=1,
    )
    engine.fit(model, datamodule=datamodule)

    assert engine.trainer.current_epoch == 4  # alignment, centres, localisation (caching, then from the cache)
    assert model.current_phase == "localisation"
    assert model.model.alm.centres.shape == (16, SIZE // 4, SIZE // 4)
    assert model.model.alm.centres.abs().sum() > 0
    training_images = torch.stack([datamodule.train_data[i].image for i in range(len(datamodule.train_data))])
    template = model.model.imm.template
    assert template.shape == (1, 3, SIZE, SIZE)
    assert torch.isclose(training_images, template).flatten(1).all(1).any()  # one of the training images

    reloaded = Locc.load_from_checkpoint(engine.trainer.checkpoint_callback.best_model_path)
    assert reloaded.current_phase == "localisation"
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected, actual = model.eval().model(images), reloaded.eval().model(images)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map)
    torch.testing.assert_close(actual.pred_score, expected.pred_score)
