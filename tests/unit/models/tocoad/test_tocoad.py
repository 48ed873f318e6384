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
from anomalib_surface.components.photo_textures import TEXTURE_PHOTOS
from anomalib_surface.models.tocoad.held_out_check import HeldOutCheck
from anomalib_surface.models.tocoad.torch_model import ANOMALY_PRIOR, TocoadModel
from anomalib_surface.models.tocoad.views import align_features

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONFIG = Path(__file__).parents[4] / "configs" / "model" / "tocoad.yaml"


def tiny_model(**overrides: object) -> Tocoad:
    arguments = {**Tocoad.smoke_test_init_args(), **overrides}
    return Tocoad(**arguments, pre_processor=Tocoad.configure_pre_processor(image_size=(64, 64)), visualizer=False)


def test_generator_masks_match_the_changed_pixels() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 48, 48)
    rotated, augmented, masks, _ = RotatedAnomalyGenerator(probability=1.0)(images)
    assert masks.shape == (6, 1, 48, 48)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert masks.flatten(1).sum(1).min() > 0
    changed = (augmented - rotated).abs().amax(dim=1, keepdim=True) > 1e-6
    assert not changed[masks == 0].any()  # nothing outside the mask changes
    assert changed[masks == 1].float().mean() > 0.95  # (almost) everything inside does


def test_generator_rotates_by_multiples_of_90_degrees() -> None:
    torch.manual_seed(1)
    images = torch.rand(4, 3, 32, 32)
    rotated, matrices = RotatedAnomalyGenerator(rotation_degrees=0.0).rotate(images)
    for image, turned, matrix in zip(images, rotated, matrices, strict=True):
        errors = [(torch.rot90(image, k, dims=(-2, -1)) - turned).abs().max() for k in range(4)]
        assert min(errors) < 1e-4
        # The returned matrix maps each pixel of the image to its place in the rotated image.
        y, x = 3, 7
        u, v, _ = (matrix @ torch.tensor([float(x), float(y), 1.0])).round().long().tolist()
        torch.testing.assert_close(turned[:, v, u], image[:, y, x])


def test_simsiam_loss_decreases_and_stops_gradient() -> None:
    torch.manual_seed(0)
    p_a, p_b = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    z_a, z_b = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    SimSiamLoss()(p_a, p_b, z_a, z_b).backward()
    assert p_a.grad.abs().sum() > 0 and p_b.grad.abs().sum() > 0
    assert z_a.grad is None and z_b.grad is None  # the target branch receives no gradient

    model = TocoadModel("resnet18", pre_trained=False, projector_dim=32, predictor_hidden_dim=8).train()
    images = torch.rand(4, 3, 64, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        z_a, p_a = model.simsiam(model.embed(images), per_patch=False)  # one head pass per view
        z_b, p_b = model.simsiam(model.embed(images * 0.9), per_patch=False)
        loss = SimSiamLoss()(p_a, p_b, z_a, z_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05


def test_negative_guidance_is_averaged_over_the_marked_patches_only() -> None:
    torch.manual_seed(0)
    normal = torch.randn(2, 16, 4, 4)
    anomalous = normal.clone()
    anomalous[0, :, 1, 1] += 0.3 * torch.randn(16)  # one changed patch, cosine still ~0.95
    anomalous.requires_grad_()
    selected = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    selected[0, 0, 1, 1] = True
    loss = NegativeGuidanceLoss(margin=0.5)(anomalous, normal.requires_grad_(), selected)
    loss.backward()
    expected = torch.nn.functional.cosine_similarity(anomalous[0, :, 1, 1], normal[0, :, 1, 1], dim=0) - 0.5
    # The mean over the one marked patch, not diluted by the 31 unchanged ones.
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5) and loss.item() > 0.3
    assert normal.grad is None
    grad_norms = anomalous.grad.norm(dim=1)
    assert grad_norms[0, 1, 1] > 0 and grad_norms.sum() == grad_norms[0, 1, 1]
    nothing = NegativeGuidanceLoss()(anomalous, normal, torch.zeros_like(selected))
    assert nothing.item() == 0.0 and nothing.requires_grad  # no marked patch: 0, and backward still works


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
    engine = Engine(accelerator="cpu", max_epochs=4, default_root_dir=tmp_path, logger=False, callbacks=[checkpoints])
    engine.fit(first, datamodule=datamodule)
    stage1_checkpoint = tmp_path / "ckpt" / "epoch=0.ckpt"
    state = torch.load(stage1_checkpoint, weights_only=False)["state_dict"]
    assert Tocoad.phases[int(state[Tocoad.phase_buffer])] == "discriminator"
    assert state["model.memory_bank"].numel() == 0

    recorder = StageRecorder()
    resumed = tiny_model()
    engine = Engine(accelerator="cpu", max_epochs=4, default_root_dir=tmp_path / "resumed", logger=False, callbacks=[recorder])
    engine.fit(resumed, datamodule=datamodule, ckpt_path=stage1_checkpoint)
    assert recorder.stages == ["warm_up", "fine_tune", "memory_bank"]  # stage 1 is not repeated
    assert resumed.current_phase == "memory_bank"
    # D stays frozen in stages 2 and 3; only the stages of F that form the patch features are fine-tuned.
    discriminator_at_checkpoint = torch.cat([state[f"model.discriminator.{k}"].flatten() for k in resumed.model.discriminator.state_dict()])
    for discriminator in recorder.discriminator:
        assert torch.equal(discriminator, discriminator_at_checkpoint)
    tuned, frozen = "model.feature_extractor.layer3.0.conv1.weight", "model.feature_extractor.conv1.weight"
    assert not torch.equal(resumed.state_dict()[tuned], state[tuned])
    assert torch.equal(resumed.state_dict()[frozen], state[frozen])
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
    assert model.phase_schedule.epochs(6) == {"discriminator": 2, "warm_up": 1, "fine_tune": 2, "memory_bank": 1}
    assert [model.phase_schedule.phase_of_epoch(epoch, 6) for epoch in range(6)] == [0, 0, 1, 2, 2, 3]
    frozen_features = tiny_model(discriminator_ratio=1.0).phase_schedule.epochs(4)  # the stage-2-off ablation
    assert frozen_features == {"discriminator": 3, "warm_up": 0, "fine_tune": 0, "memory_bank": 1}


def test_a_step_budget_ends_with_the_memory_bank(tmp_path: Path, datamodule: SurfaceDemo) -> None:
    """``max_steps`` is converted to epochs; the memory-bank pass takes no optimiser step and ends the run."""
    model = tiny_model()
    engine = Engine(accelerator="cpu", max_steps=7, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)  # 2 steps per epoch: ceil(7 / 2) = 4 epochs, one per phase
    assert (engine.trainer.current_epoch, engine.trainer.global_step) == (4, 6)
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
        ("negative_guidance", "weights"),
        ("simsiam_level", "pixel"),
        ("anomaly_source", "test_images"),
        ("warm_up_ratio", 1.5),
        ("discriminator_patience", 0),
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


def test_views_are_aligned_patch_by_patch() -> None:
    """Features of a horizontally flipped view, warped back with the flip's matrix, match the original's."""
    ramp = torch.arange(8.0).repeat(8, 1)[None, None]  # [1, 1, 8, 8]: the x index of each patch
    flip = torch.tensor([[[-1.0, 0.0, 63.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # x -> 63 - x on a 64 px image
    warped, valid = align_features(ramp.flip(-1), flip, (64, 64))
    torch.testing.assert_close(warped, ramp, atol=1e-4, rtol=0)
    assert valid.all()
    shift = torch.tensor([[[1.0, 0.0, 16.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # two patches to the right
    shifted, valid = align_features(ramp, shift, (64, 64))
    torch.testing.assert_close(shifted[..., 2:], ramp[..., :-2], atol=1e-4, rtol=0)
    assert not valid[..., :2].any() and valid[..., 2:].all()  # the uncovered columns are left out of the loss


def test_discriminator_starts_at_the_prior_and_only_the_bank_stages_train() -> None:
    model = TocoadModel("resnet18", pre_trained=False, discriminator_channels=8).eval()
    probabilities = torch.sigmoid(model.discriminate(model.embed(torch.rand(2, 3, 64, 64))))
    torch.testing.assert_close(probabilities, torch.full_like(probabilities, ANOMALY_PRIOR), atol=0.01, rtol=0)
    trained = {name.split(".")[0] for name, p in model.feature_extractor.named_parameters() if p.requires_grad}
    assert trained == {"layer2", "layer3"}
    assert sum(p.numel() for p in model.fine_tuned_parameters()) < sum(p.numel() for p in model.feature_extractor.parameters())


def test_default_anomaly_source_is_texture_photos_outside_surface_demo() -> None:
    model = tiny_model()
    source = model.generator.paste.anomaly_source_path
    names = {path.stem.rsplit("_", 1)[0] for path in source.iterdir()}
    assert names == set(TEXTURE_PHOTOS) and len(list(source.iterdir())) == 4 * len(TEXTURE_PHOTOS)
    # Neither a photograph SurfaceDemo renders its categories from, nor one it keeps for independent checks.
    surface_demo = {"brick", "grass", "gravel", "camera", "astronaut", "text", "page"}
    assert not names & (surface_demo | {"coins", "moon", "immunohistochemistry"})
    assert tiny_model(anomaly_source="training_images").generator.paste.anomaly_source_path is None


def test_held_out_check_measures_d_and_the_bank() -> None:
    torch.manual_seed(0)
    model = TocoadModel("resnet18", pre_trained=False, discriminator_channels=8).eval()
    normal = torch.rand(4, 3, 64, 64)
    masks = torch.zeros(4, 1, 64, 64)
    masks[:, :, 16:48, 16:48] = 1
    anomalous = normal * (1 - masks) + masks * torch.rand(4, 3, 1, 1)  # flat colour blocks
    check = HeldOutCheck(normal, anomalous, masks)
    ap = check.discriminator_ap(model, lambda x: x)
    assert 0.0 < ap <= 1.0
    assert check.nearest_neighbour_gap(model, lambda x: x) > 0  # anomalous patches lie farther from the bank
    assert HeldOutCheck(normal[:1], anomalous[:1], masks[:1]).nearest_neighbour_gap(model, lambda x: x) is None


class LoggedChecks(Callback):
    """Every value logged by each training epoch, read when the next epoch (or training) starts: Lightning runs
    the callbacks' ``on_train_epoch_end`` before the model's, where Tocoad logs its checks."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Tocoad) -> None:
        del pl_module
        if trainer.current_epoch > 0:
            self.rows.append({key: float(value) for key, value in trainer.callback_metrics.items()})

    def on_train_end(self, trainer: L.Trainer, pl_module: Tocoad) -> None:
        self.on_train_epoch_start(trainer, pl_module)


def test_stage_1_stops_when_held_out_ap_stops_rising_and_the_negative_term_reaches_f(
    tmp_path: Path, datamodule: SurfaceDemo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    aps = iter([0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    monkeypatch.setattr(HeldOutCheck, "discriminator_ap", lambda self, model, normalize: next(aps))
    L.seed_everything(0)
    recorder, checks = StageRecorder(), LoggedChecks()
    # 6 epochs: 3 of stage 1, one warm-up, one fine-tuning epoch, the memory-bank pass.
    model = tiny_model(discriminator_ratio=0.6, discriminator_patience=1, negative_guidance="mask", anomaly_probability=1.0)
    engine = Engine(accelerator="cpu", max_epochs=6, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                    callbacks=[recorder, checks])
    engine.fit(model, datamodule=datamodule)
    assert recorder.stages == ["discriminator"] * 3 + ["warm_up", "fine_tune", "memory_bank"]
    assert not torch.equal(recorder.discriminator[0], recorder.discriminator[1])  # D trains while its AP rises
    # No rise in epoch 1: D goes back to its best (epoch 0) weights, and neither epoch 2 nor stage 2 changes them.
    for discriminator in recorder.discriminator[2:]:
        assert torch.equal(discriminator, recorder.discriminator[0])
    assert checks.rows[0]["held_out_discriminator_AP"] == pytest.approx(0.4)
    assert "held_out_nn_distance_gap" in checks.rows[0]
    fine_tune = checks.rows[4]
    assert fine_tune["train_negative_grad_norm_F"] > 0 and fine_tune["train_simsiam_grad_norm_F"] > 0
