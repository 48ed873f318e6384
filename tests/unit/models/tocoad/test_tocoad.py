"""Tests of the Tocoad model: anomaly generator, losses, stages, resume, configuration."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.engine import Engine
from lightning.pytorch.callbacks import Callback

from anomalib_surface.data import SurfaceDemo
from anomalib_surface.models.tocoad import Tocoad
from anomalib_surface.models.tocoad.anomaly_generator import RotatedAnomalyGenerator
from anomalib_surface.models.tocoad.loss import NegativeGuidanceLoss, SimSiamLoss
from anomalib_surface.models.tocoad.torch_model import TocoadModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONFIG = Path(__file__).parents[4] / "configs" / "model" / "tocoad.yaml"


def tiny_model(**overrides: object) -> Tocoad:
    arguments = {**Tocoad.smoke_test_init_args(), **overrides}
    return Tocoad(**arguments, pre_processor=Tocoad.configure_pre_processor(image_size=(64, 64)), visualizer=False)


def test_generator_masks_match_the_changed_pixels() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 48, 48)
    rotated, augmented, masks = RotatedAnomalyGenerator(probability=1.0)(images)
    assert masks.shape == (6, 1, 48, 48)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert masks.flatten(1).sum(1).min() > 0
    changed = (augmented - rotated).abs().amax(dim=1, keepdim=True) > 1e-6
    assert not changed[masks == 0].any()  # nothing outside the mask changes
    assert changed[masks == 1].float().mean() > 0.95  # (almost) everything inside does


def test_generator_rotates_by_multiples_of_90_degrees() -> None:
    torch.manual_seed(1)
    images = torch.rand(4, 3, 32, 32)
    rotated = RotatedAnomalyGenerator(rotation_degrees=0.0).rotate(images)
    for image, turned in zip(images, rotated, strict=True):
        errors = [(torch.rot90(image, k, dims=(-2, -1)) - turned).abs().max() for k in range(4)]
        assert min(errors) < 1e-4


def test_simsiam_loss_decreases_and_stops_gradient() -> None:
    torch.manual_seed(0)
    p_a, p_b = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    z_a, z_b = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    SimSiamLoss()(p_a, p_b, z_a, z_b).backward()
    assert p_a.grad.abs().sum() > 0 and p_b.grad.abs().sum() > 0
    assert z_a.grad is None and z_b.grad is None  # the target branch receives no gradient

    model = TocoadModel("resnet18", pre_trained=False, projector_dim=32, predictor_hidden_dim=8).train()
    images = torch.rand(4, 3, 64, 64)
    views = torch.cat([images, images.flip(-1) * 0.9])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        projections, predictions = model.simsiam(model.embed(views))
        loss = SimSiamLoss()(*predictions.chunk(2), *projections.chunk(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


def test_negative_guidance_pushes_only_weighted_patches() -> None:
    anomalous = torch.randn(2, 16, 4, 4, requires_grad=True)
    normal = anomalous.detach() + 0.01 * torch.randn(2, 16, 4, 4)
    weights = torch.zeros(2, 1, 4, 4)
    weights[0, 0, 1, 1] = 1.0
    loss = NegativeGuidanceLoss(margin=0.5)(anomalous, normal.requires_grad_(), weights)
    loss.backward()
    assert loss.item() == pytest.approx(0.5, abs=0.01)  # cosine ~1 minus the margin, on the weighted patch
    assert normal.grad is None
    grad_norms = anomalous.grad.norm(dim=1)
    assert grad_norms[0, 1, 1] > 0 and grad_norms.sum() == grad_norms[0, 1, 1]


class StageRecorder(Callback):
    """Record the stage of every training epoch and the discriminator weights at each epoch end."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.discriminator: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Tocoad, batch: object, batch_idx: int) -> None:
        del trainer, batch
        if batch_idx == 0:  # after Tocoad.on_train_epoch_start has set the stage
            self.stages.append(pl_module.current_phase)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Tocoad) -> None:
        del trainer
        self.discriminator.append(torch.cat([p.detach().flatten() for p in pl_module.model.discriminator.state_dict().values()]))


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> SurfaceDemo:
    return SurfaceDemo(
        root=tmp_path_factory.mktemp("surface_demo"), image_size=64, num_train=8, num_test_good=2,
        num_test_defect_per_type=1, train_batch_size=4, eval_batch_size=8, num_workers=0,
    )


def test_resume_from_a_mid_training_checkpoint_continues_in_the_right_stage(tmp_path: Path, datamodule: SurfaceDemo) -> None:
    L.seed_everything(0)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True)
    first = tiny_model()
    engine = Engine(accelerator="cpu", max_epochs=3, default_root_dir=tmp_path, logger=False, callbacks=[checkpoints])
    engine.fit(first, datamodule=datamodule)
    stage1_checkpoint = tmp_path / "ckpt" / "epoch=0.ckpt"
    state = torch.load(stage1_checkpoint, weights_only=False)["state_dict"]
    assert Tocoad.phases[int(state[Tocoad.phase_buffer])] == "discriminator"
    assert state["model.memory_bank"].numel() == 0

    recorder = StageRecorder()
    resumed = tiny_model()
    engine = Engine(accelerator="cpu", max_epochs=3, default_root_dir=tmp_path / "resumed", logger=False, callbacks=[recorder])
    engine.fit(resumed, datamodule=datamodule, ckpt_path=stage1_checkpoint)
    assert recorder.stages == ["fine_tune", "memory_bank"]  # stage 1 is not repeated
    assert resumed.current_phase == "memory_bank"
    # D stays frozen in stages 2 and 3, F is fine-tuned in stage 2.
    discriminator_at_checkpoint = torch.cat([state[f"model.discriminator.{k}"].flatten() for k in resumed.model.discriminator.state_dict()])
    assert torch.equal(recorder.discriminator[0], discriminator_at_checkpoint)
    assert torch.equal(recorder.discriminator[1], discriminator_at_checkpoint)
    weight = "model.feature_extractor.conv1.weight"
    assert not torch.equal(resumed.state_dict()[weight], state[weight])
    assert resumed.model.memory_bank.shape == (51, 384)  # 10% of 8 images x 8x8 patches

    reloaded = Tocoad.load_from_checkpoint(engine.trainer.checkpoint_callback.best_model_path)
    assert reloaded.model.memory_bank.shape == resumed.model.memory_bank.shape  # bank size restored on load
    images = resumed.pre_processor(torch.rand(2, 3, 64, 64))
    expected, actual = resumed.eval().model(images), reloaded.eval().model(images)
    torch.testing.assert_close(actual.pred_score, expected.pred_score)
    torch.testing.assert_close(actual.anomaly_map, expected.anomaly_map)


def test_eval_before_stage_3_explains_the_empty_bank() -> None:
    model = tiny_model().model.eval()
    with pytest.raises(ValueError, match="memory bank is empty"):
        model(torch.rand(1, 3, 64, 64))


def test_stages_split_the_trainer_budget() -> None:
    model = tiny_model(discriminator_ratio=0.4)
    assert "max_epochs" not in model.trainer_arguments  # the training length is the trainer's
    assert model.phase_schedule.epochs(6) == {"discriminator": 2, "fine_tune": 3, "memory_bank": 1}
    assert [model.phase_schedule.phase_of_epoch(epoch, 6) for epoch in range(6)] == [0, 0, 1, 1, 1, 2]
    frozen_features = tiny_model(discriminator_ratio=1.0).phase_schedule.epochs(4)  # the stage-2-off ablation
    assert frozen_features == {"discriminator": 3, "fine_tune": 0, "memory_bank": 1}


def test_a_step_budget_ends_with_the_memory_bank(tmp_path: Path, datamodule: SurfaceDemo) -> None:
    """``max_steps`` is converted to epochs; the memory-bank pass takes no optimiser step and ends the run."""
    model = tiny_model()
    engine = Engine(accelerator="cpu", max_steps=5, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)  # 2 steps per epoch: ceil(5 / 2) = 3 epochs, one per stage
    assert (engine.trainer.current_epoch, engine.trainer.global_step) == (3, 4)
    assert model.current_phase == "memory_bank" and model.model.memory_bank.numel() > 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("discriminator_ratio", -0.1),
        ("coreset_sampling_ratio", 0.0),
        ("nn_index", "lsh"),
        ("focal_alpha", 1.5),
        ("layers", ("layer9",)),
        ("backbone", "no_such_net"),
        ("negative_margin", 2.0),
        ("learning_rate", 0.0),
    ],
)
def test_bad_options_raise_clear_errors(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option if option not in {"layers", "backbone"} else option.rstrip("s")):
        tiny_model(**{option: value})


def test_config_lists_every_option_with_its_default() -> None:
    config = yaml.safe_load(CONFIG.read_text())["model"]
    assert config["class_path"] == "anomalib_surface.models.Tocoad"
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(Tocoad.__init__).parameters.items()
        if name not in {"self", "pre_processor", "post_processor", "evaluator", "visualizer"}
    }
    init_args = config["init_args"]
    assert set(init_args) == set(defaults)
    for name, default in defaults.items():
        assert init_args[name] == (list(default) if isinstance(default, tuple) else default), name
