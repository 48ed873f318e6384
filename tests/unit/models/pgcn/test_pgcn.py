"""Pgcn: patch grids, generator, comparator, bidirectional inference and the two training phases."""

from __future__ import annotations

import inspect
import os
from collections import defaultdict
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from anomalib.data import ImageBatch
from anomalib.engine import Engine
from lightning.pytorch import Callback

from anomalib_surface.components import NonFiniteLossError
from anomalib_surface.components.intersection import intersect_predictions
from anomalib_surface.data import SurfaceDemo
from anomalib_surface.models.pgcn import Pgcn
from anomalib_surface.models.pgcn.anomaly_map import complete_directions, patch_masks_to_map
from anomalib_surface.models.pgcn.comparator import PatternComparator
from anomalib_surface.models.pgcn.generator import PatternGenerator
from anomalib_surface.models.pgcn.loss import ComparatorLoss, match_labels
from anomalib_surface.models.pgcn.patches import directional_triplets, merge_patches, sample_triplets, split_patches
from anomalib_surface.models.pgcn.torch_model import PgcnModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONFIG = Path(__file__).parents[4] / "configs" / "model" / "pgcn.yaml"

TINY = {
    "patch_size": 2,
    "embed_dim": 8,
    "depths": (1, 1, 1, 1),
    "num_heads": (1, 1, 2, 2),
    "window_size": 4,
    "mlp_ratio": 2.0,
}


def _columns_grid(batch: int = 1, grid: int = 5) -> torch.Tensor:
    """A ``[B, N, N, 1, 2, 2]`` grid whose patches hold their column index."""
    return torch.arange(grid, dtype=torch.float32).view(1, 1, grid, 1, 1, 1).expand(batch, grid, grid, 1, 2, 2)


def test_patch_grid_round_trips_exactly() -> None:
    images = torch.rand(2, 3, 48, 64)
    grid = split_patches(images, 4)
    assert grid.shape == (2, 4, 4, 3, 12, 16)
    assert torch.equal(grid[1, 2, 3], images[1, :, 24:36, 48:64])
    assert torch.equal(merge_patches(grid), images)
    with pytest.raises(ValueError, match="not divisible by grid_size N=5"):
        split_patches(images, 5)


def test_directional_triplets_and_completion() -> None:
    far, near, target = directional_triplets(_columns_grid())
    column = (slice(None), 0, 0, slice(None), 0, 0, 0)  # [direction, target position]
    assert target[column].tolist() == [[2, 3, 4], [0, 1, 2]]
    assert near[column].tolist() == [[1, 2, 3], [1, 2, 3]]
    assert far[column].tolist() == [[0, 1, 2], [2, 3, 4]]

    # Results tagged 10 + target column (left to right) and 20 + target column (right to left).
    directional = torch.stack([10 + target[0, :, :, :, 0, 0, 0], 20 + target[1, :, :, :, 0, 0, 0]])
    left, right = complete_directions(directional)
    assert left[0, 0].tolist() == [20, 21, 12, 13, 14]  # first two columns from right to left
    assert right[0, 0].tolist() == [20, 21, 22, 13, 14]  # last two columns from left to right


def test_patch_masks_are_upsampled_within_their_patch() -> None:
    masks = torch.zeros(1, 4, 4, 1, 2, 2)
    masks[0, 1, 2] = 1.0
    anomaly_map = patch_masks_to_map(masks, (8, 8))
    assert anomaly_map.shape == (1, 1, 32, 32)
    assert anomaly_map[0, 0, 8:16, 16:24].eq(1).all()
    assert anomaly_map.sum() == 64


def test_sampled_triplets_are_adjacent_patches_in_both_directions() -> None:
    width = 48
    images = torch.arange(width, dtype=torch.float32).expand(2, 1, 20, width).clone()  # pixel value = x
    strips = sample_triplets(images, (8, 8), count=32)
    assert strips.shape == (64, 3, 1, 8, 8)
    steps = strips[:, 1:, 0, 0, 0] - strips[:, :-1, 0, 0, 0]  # x offsets far -> near -> target
    assert set(steps.flatten().tolist()) == {-8.0, 8.0}
    assert torch.equal(steps[:, 0], steps[:, 1])  # a straight line of three patches
    assert torch.equal(strips[:, :, 0, :, 1:] - strips[:, :, 0, :, :-1], torch.ones(64, 3, 8, 7))  # whole patches
    with pytest.raises(ValueError, match="do not fit"):
        sample_triplets(images, (8, 17), count=1)


def test_generator_output_shape_and_loss_decrease() -> None:
    torch.manual_seed(0)
    generator = PatternGenerator((16, 16), **TINY)
    rows = torch.linspace(0, 1, 16).view(1, 1, 16, 1)
    images = (0.5 + 0.4 * torch.sin(torch.arange(64) * 0.8)).view(1, 1, 1, 64) * rows.expand(2, 3, 16, 64)
    strips = sample_triplets(images, (16, 16), count=4)
    prediction = generator(strips[:, 0], strips[:, 1])
    assert prediction.shape == (8, 3, 16, 16)
    assert prediction.min() >= 0
    assert prediction.max() <= 1
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.mse_loss(generator(strips[:, 0], strips[:, 1]), strips[:, 2])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_comparator_shares_only_its_third_block() -> None:
    torch.manual_seed(0)
    comparator = PatternComparator((16, 16), width=4, hidden=8).eval()
    generated_params = dict(comparator.generated_branch.named_parameters())
    real_params = dict(comparator.real_branch.named_parameters())
    assert generated_params.keys() == real_params.keys()
    assert all(generated_params[name] is not real_params[name] for name in generated_params)
    calls = []
    comparator.shared_block.register_forward_hook(lambda *_: calls.append(1))

    generated, real = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        before = comparator.shared_block(comparator.real_branch(real))
        match_logits, mask_logits = comparator(generated, real)
        assert len(calls) == 3  # once above, once per branch in forward
        assert match_logits.shape == (2,)
        assert mask_logits.shape == (2, 1, 4, 4)

        comparator.generated_branch[0][0].weight.add_(1.0)  # an unshared block: the real branch is unaffected
        assert torch.equal(comparator.shared_block(comparator.real_branch(real)), before)
        comparator.shared_block[0].weight.add_(1.0)  # the shared block: both branches change
        assert not torch.equal(comparator.shared_block(comparator.real_branch(real)), before)


def test_comparator_loss_terms() -> None:
    masks = torch.zeros(2, 1, 8, 8)
    masks[1, :, :4, :4] = 1
    assert match_labels(masks).tolist() == [1.0, -1.0]
    perfect = ComparatorLoss()(torch.tensor([20.0, -20.0]), torch.full((2, 1, 2, 2), -20.0), masks)
    assert perfect["hinge"] < 1e-6  # matches predicted as matches
    wrong = ComparatorLoss(mask_weight=2.0)(torch.tensor([20.0, 20.0]), torch.full((2, 1, 2, 2), -20.0), masks)
    assert torch.isclose(wrong["hinge"], torch.tensor(1.0))  # the mismatch costs 1 - (-1)(1) = 2, mean 1
    assert torch.isclose(wrong["loss"], 2 * wrong["mask"] + wrong["hinge"])


def test_bidirectional_forward_is_the_intersection_of_both_directions() -> None:
    torch.manual_seed(0)
    model = PgcnModel((64, 64), grid_size=4, comparator_width=4, comparator_hidden=8, **TINY).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        left, right = model.forward_directional(images)
        both = model(images)
        model.bidirectional = False
        single = model(images)
    assert left.pred_score.shape == (2, 4, 4)
    assert left.anomaly_map.shape == (2, 1, 64, 64)
    assert torch.equal(left.pred_score[:, :, :2], right.pred_score[:, :, :2])  # first columns: right to left only
    expected = intersect_predictions(left, right)
    assert torch.equal(both.anomaly_map, expected.anomaly_map)
    assert torch.equal(both.pred_score, expected.pred_score)
    assert torch.equal(both.pred_score, torch.minimum(left.pred_score, right.pred_score).amax(dim=(1, 2)))
    assert torch.equal(single.anomaly_map, left.anomaly_map)
    assert torch.equal(single.pred_score, left.pred_score.amax(dim=(1, 2)))
    with pytest.raises(ValueError, match=r"built for \(64, 64\) images, got \(32, 32\)"):
        model(torch.rand(1, 3, 32, 32))


def test_image_size_validation_names_image_size_and_grid() -> None:
    with pytest.raises(ValueError, match=r"image_size \(256, 256\) with grid_size N=4 .* \[224, 448\]"):
        Pgcn(image_size=256)
    with pytest.raises(ValueError, match="grid_size must be at least 3"):
        Pgcn(**{**Pgcn.smoke_test_init_args(), "grid_size": 2})
    with pytest.raises(ValueError, match="depths and num_heads need one entry per stage"):
        Pgcn(**{**Pgcn.smoke_test_init_args(), "num_heads": (1, 1)})
    with pytest.raises(ValueError, match="differs from the pre-processor's output size"):
        Pgcn(**Pgcn.smoke_test_init_args(), pre_processor=Pgcn.configure_pre_processor((96, 96)))
    with pytest.raises(ValueError, match="comparator_epochs must be an integer >= 1"):
        Pgcn(**{**Pgcn.smoke_test_init_args(), "comparator_epochs": 0})


def test_image_size_comes_from_the_pre_processor() -> None:
    args = {**Pgcn.smoke_test_init_args(), "image_size": None}
    model = Pgcn(**args, pre_processor=Pgcn.configure_pre_processor((64, 128)))
    assert model.model.image_size == (64, 128)
    assert model.hparams["image_size"] == (64, 128)  # so load_from_checkpoint rebuilds the same model
    assert model.trainer_arguments == {"max_epochs": 2, "num_sanity_val_steps": 0}


def test_config_lists_every_option_with_its_default() -> None:
    config = yaml.safe_load(CONFIG.read_text())["model"]
    assert config["class_path"] == "Pgcn"
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(Pgcn.__init__).parameters.items()
        if name not in {"self", "pre_processor", "post_processor", "evaluator", "visualizer"}
    }
    expected = {name: list(value) if isinstance(value, tuple) else value for name, value in defaults.items()}
    assert config["init_args"] == expected


def test_non_finite_loss_stops_training() -> None:
    model = Pgcn(**Pgcn.smoke_test_init_args())
    images = torch.full((2, 3, 64, 64), float("nan"))
    with pytest.raises(NonFiniteLossError, match="generator_mse"):
        model.training_step(ImageBatch(image=images), 0)


class GeneratorSnapshot(Callback):
    """Copies of the generator and comparator weights at the end of the first (generator) epoch."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if trainer.current_epoch == 0:
            self.generator = {k: v.clone() for k, v in pl_module.model.generator.state_dict().items()}
            self.comparator = {k: v.clone() for k, v in pl_module.model.comparator.state_dict().items()}


def _fit(model: Pgcn, tmp_path: Path, callback: Callback, train_batch_size: int = 4) -> Engine:
    """Fit ``model`` on four 64x64 demo images, without validation."""
    datamodule = SurfaceDemo(
        root=tmp_path / "demo",
        category="brick",
        image_size=64,
        num_train=4,
        num_test_good=1,
        num_test_defect_per_type=1,
        train_batch_size=train_batch_size,
        eval_batch_size=4,
        num_workers=0,
    )
    engine = Engine(
        accelerator="cpu",
        devices=1,
        default_root_dir=tmp_path,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        callbacks=[callback],
    )
    engine.fit(model, datamodule=datamodule)
    return engine


def test_two_phases_in_one_fit_and_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Pgcn(**Pgcn.smoke_test_init_args(), evaluator=False, visualizer=False)
    snapshot = GeneratorSnapshot()
    engine = _fit(model, tmp_path, snapshot)
    assert engine.trainer.current_epoch == 2
    assert model.phase == 2
    generator, comparator = model.model.generator.state_dict(), model.model.comparator.state_dict()
    assert all(torch.equal(generator[name], value) for name, value in snapshot.generator.items())  # frozen in phase 2
    assert not all(torch.equal(comparator[name], value) for name, value in snapshot.comparator.items())  # trained

    checkpoint = tmp_path / "pgcn.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    reloaded = Pgcn.load_from_checkpoint(checkpoint, map_location="cpu")
    assert reloaded.phase == 2
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, actual = model.eval().model(images), reloaded.eval().model(images)
    assert torch.allclose(actual.anomaly_map, expected.anomaly_map)
    assert torch.allclose(actual.pred_score, expected.pred_score)


class BatchNormInputs(Callback):
    """Batch mean and unbiased variance ``[C]`` of each comparator BatchNorm input, per train-mode call of an epoch."""

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        for name, norm in pl_module.model.comparator.named_modules():
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.register_forward_pre_hook(partial(self._record, name))

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.epoch: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)

    def _record(self, name: str, norm: torch.nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        if norm.training:
            self.epoch[name].append((inputs[0].mean(dim=(0, 2, 3)), inputs[0].var(dim=(0, 2, 3))))


@pytest.mark.parametrize("recalibrate", [True, False])
def test_comparator_batch_norm_statistics_are_those_of_the_last_epoch(tmp_path: Path, recalibrate: bool) -> None:
    """Regression: the moving average left eval-mode comparator logits unrelated to train mode (chance AUROC)."""
    torch.manual_seed(0)
    args = {**Pgcn.smoke_test_init_args(), "comparator_epochs": 2, "recalibrate_batch_norm": recalibrate}
    model = Pgcn(**args, evaluator=False, visualizer=False)
    inputs = BatchNormInputs()
    _fit(model, tmp_path, inputs, train_batch_size=2)  # two steps per epoch
    modules = model.model.comparator.named_modules()
    norms = {name: module for name, module in modules if isinstance(module, torch.nn.BatchNorm2d)}
    assert inputs.epoch.keys() == norms.keys()
    for name, norm in norms.items():
        calls = inputs.epoch[name]
        means, variances = (torch.stack(stats).mean(dim=0) for stats in zip(*calls, strict=True))
        assert norm.momentum == 0.1  # restored after training
        last_epoch_average = torch.allclose(norm.running_mean, means, atol=1e-5) and torch.allclose(
            norm.running_var, variances, rtol=1e-4
        )
        assert last_epoch_average == recalibrate, name
        # recalibrated: counted since the last epoch began; moving average: over both comparator epochs
        assert norm.num_batches_tracked == len(calls) * (1 if recalibrate else 2), name
