"""Tests of the Clgan model: networks, losses, anomaly map, training steps and an Engine run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import yaml
from anomalib.data import ImageBatch
from anomalib.engine import Engine
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

from anomalib_surface.components import NonFiniteLossError
from anomalib_surface.data import SurfaceDemo
from anomalib_surface.models.clgan import Clgan
from anomalib_surface.models.clgan.anomaly_map import AnomalyMapGenerator
from anomalib_surface.models.clgan.loss import ClganLoss, PatchNCELoss
from anomalib_surface.models.clgan.torch_model import (
    ClganModel,
    PatchGANDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
)
from anomalib_surface.post_processing import VALIDATION_FACTOR_GRID, DoubleThresholdMorphology

CONFIG = Path(__file__).parents[4] / "configs" / "model" / "clgan.yaml"


def tiny_clgan(**overrides) -> Clgan:
    """Smoke-test Clgan at 32x32 without evaluator/visualizer callbacks."""
    kwargs = {
        **Clgan.smoke_test_init_args(),
        "pre_processor": Clgan.configure_pre_processor(image_size=(32, 32)),
        "evaluator": False,
        "visualizer": False,
        **overrides,
    }
    return Clgan(**kwargs)


def fit_on_batches(model: Clgan, images: torch.Tensor, steps: int) -> None:
    """Run ``steps`` training steps of ``model`` on the same image batch with a bare Lightning trainer."""
    batches = [ImageBatch(image=images.clone()) for _ in range(steps)]
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))


# --- networks ---------------------------------------------------------------------------------------


def test_generator_shapes_range_and_stage_features() -> None:
    generator = ResnetGenerator(ngf=4, n_downsampling=2, n_blocks=2)
    images = torch.rand(2, 3, 32, 32)
    features = generator.encode(images)
    assert [f.shape[1] for f in features] == generator.stage_channels == [4, 8, 16, 16, 16]
    assert [f.shape[-1] for f in features] == [32, 16, 8, 8, 8]
    reconstruction = generator(images)
    assert reconstruction.shape == images.shape
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1


def test_model_rejects_size_not_divisible_by_downsampling() -> None:
    model = ClganModel(ngf=4, n_downsampling=2, n_blocks=0, ndf=4, n_layers_d=2, nce_layers=())
    with pytest.raises(ValueError, match=r"divisible by 4 \(generator n_downsampling=2.*got \(30, 32\)"):
        model(torch.rand(1, 3, 30, 32))


def test_discriminator_outputs_patch_logits() -> None:
    logits = PatchGANDiscriminator(ndf=4, n_layers=2)(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 1, 6, 6)


def test_patch_sample_mlp_projects_shared_locations_to_unit_vectors() -> None:
    heads = PatchSampleMLP([4, 8], out_dim=6)
    features = [torch.rand(2, 4, 8, 8), torch.rand(2, 8, 2, 2)]
    embeddings, ids = heads(features, num_patches=10)
    assert [e.shape for e in embeddings] == [(2, 10, 6), (2, 4, 6)]  # the 2x2 map has only 4 locations
    assert torch.allclose(embeddings[0].norm(dim=-1), torch.ones(2, 10))
    again, same_ids = heads(features, num_patches=10, patch_ids=ids)
    assert all(torch.equal(a, b) for a, b in zip(ids, same_ids, strict=True))
    assert torch.allclose(again[0], embeddings[0])


def test_clgan_model_eval_returns_inference_batch_and_train_returns_reconstruction() -> None:
    model = ClganModel(ngf=4, n_blocks=1, ndf=4, n_layers_d=2, nce_layers=(0, 3), nce_mlp_dim=8, sigma=1.0)
    images = torch.rand(2, 3, 32, 32)
    assert model.train()(images).shape == images.shape
    output = model.eval()(images)
    assert output.anomaly_map.shape == (2, 1, 32, 32)
    assert torch.allclose(output.pred_score, output.anomaly_map.amax(dim=(1, 2, 3)))
    _, residual = model.residual(images)
    assert residual.shape == images.shape


def test_clgan_model_rejects_invalid_nce_layers() -> None:
    with pytest.raises(ValueError, match="nce_layers must be distinct encoder stage indices in \\[0, 3\\]"):
        ClganModel(ngf=4, n_blocks=1, nce_layers=(0, 4))


# --- anomaly map --------------------------------------------------------------------------------------


def test_anomaly_map_channel_reductions_and_smoothing() -> None:
    residual = torch.zeros(1, 3, 16, 16)
    residual[0, 0, 8, 8] = 0.9
    residual[0, 1, 8, 8] = 0.3
    assert AnomalyMapGenerator("max", sigma=0)(residual)[0, 0, 8, 8] == pytest.approx(0.9)
    assert AnomalyMapGenerator("mean", sigma=0)(residual)[0, 0, 8, 8] == pytest.approx(0.4)
    smoothed = AnomalyMapGenerator("max", sigma=1.0)(residual)
    assert smoothed.shape == (1, 1, 16, 16)
    assert smoothed.sum() == pytest.approx(0.9, rel=1e-4)  # normalised kernel keeps the mass
    assert smoothed.argmax() == 8 * 16 + 8
    with pytest.raises(ValueError, match="channel_reduction"):
        AnomalyMapGenerator("median")


# --- losses -------------------------------------------------------------------------------------------


def test_patch_nce_matches_hand_computed_value() -> None:
    patches = torch.eye(2).unsqueeze(0)  # one image, two orthogonal unit embeddings
    loss = PatchNCELoss(temperature=1.0)(patches, patches)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-5)


def test_patch_nce_is_lower_for_matching_than_for_shuffled_patches() -> None:
    torch.manual_seed(0)
    keys = F.normalize(torch.randn(2, 64, 16), dim=-1)
    queries = F.normalize(keys + 0.1 * torch.randn_like(keys), dim=-1)
    loss = PatchNCELoss()
    matching = loss(queries, keys)
    shuffled = loss(queries, keys[:, torch.randperm(64)])
    assert matching < 0.1 < math.log(64) / 2 < shuffled


def test_clgan_loss_terms_weights_and_discriminator() -> None:
    target = torch.rand(2, 3, 16, 16)
    reconstruction = torch.rand(2, 3, 16, 16)
    loss = ClganLoss(lambda_rec=2.0, lambda_ssim=0.0, lambda_adv=0.5, lambda_nce=0.0)
    terms = loss.generator_terms(target, reconstruction, fake_logits=torch.zeros(2, 1, 4, 4))
    assert set(terms) == {"rec", "adv"}
    assert terms["rec"] == pytest.approx((target - reconstruction).abs().mean().item())
    assert terms["adv"] == pytest.approx(1.0)  # (0 - 1)^2
    assert loss.weighted_sum(terms) == pytest.approx(2.0 * terms["rec"].item() + 0.5)
    perfect = ClganLoss.discriminator_loss(torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    fooled = ClganLoss.discriminator_loss(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
    assert perfect == 0 and fooled == pytest.approx(1.0)


def test_clgan_loss_ssim_is_zero_for_identical_images_and_nce_needs_embeddings() -> None:
    images = torch.rand(1, 3, 16, 16)
    loss = ClganLoss(lambda_rec=0.0, lambda_ssim=1.0, lambda_adv=0.0, lambda_nce=1.0)
    embeddings = [F.normalize(torch.randn(1, 8, 4), dim=-1)]
    terms = loss.generator_terms(images, images, nce_queries=embeddings, nce_keys=embeddings)
    assert terms["ssim"] == pytest.approx(0.0, abs=1e-6)
    assert terms["nce"] > 0
    with pytest.raises(ValueError, match="nce_queries and nce_keys"):
        loss.generator_terms(images, images)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"lambda_adv": -1.0}, "Loss weights must be >= 0"),
        ({"lambda_rec": 0, "lambda_ssim": 0, "lambda_adv": 0, "lambda_nce": 0}, "At least one"),
    ],
)
def test_clgan_loss_rejects_bad_weights(weights: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClganLoss(**weights)


# --- lightning module ---------------------------------------------------------------------------------


def test_clgan_defaults_post_processor_evaluator_and_optimizers() -> None:
    model = Clgan(**Clgan.smoke_test_init_args())
    assert isinstance(model.post_processor, DoubleThresholdMorphology)
    assert model.post_processor.threshold_statistics == "normal"
    assert model.post_processor.factor_grid == VALIDATION_FACTOR_GRID
    names = {metric.name for metric in model.evaluator.test_metrics}
    assert {"image_AUROC", "pixel_AUROC", "pixel_F1Score", "pixel_Precision", "pixel_Recall"} <= names
    assert {"pixel_Accuracy", "pixel_IoU"} <= names
    assert "pixel_F1" not in names  # the same figure as anomalib's pixel_F1Score
    assert len(model.configure_optimizers()) == 2
    assert "max_epochs" not in model.trainer_arguments  # the training length is the trainer's


def test_zero_adversarial_and_nce_weights_build_a_plain_autoencoder() -> None:
    model = tiny_clgan(lambda_adv=0.0, lambda_nce=0.0, lambda_ssim=0.0)
    assert model.model.discriminator is None and model.model.patch_heads is None
    assert not any(key.startswith(("discriminator", "patch_heads")) for key in model.model.state_dict())
    (optimizer,) = model.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.model.generator.parameters()
    )
    before = [p.detach().clone() for p in model.model.generator.parameters()]
    fit_on_batches(model, torch.rand(2, 3, 32, 32), steps=2)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.model.generator.parameters(), strict=True))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"norm": "layer"}, "norm must be one of"),
        ({"num_patches": 0}, "num_patches"),
        ({"beta1": 1.0}, "beta1"),
        ({"nce_layers": ()}, r"nce_layers must be a list of 1 to 64 items"),
        ({"anomaly_probability": 2.0}, "anomaly_probability"),
    ],
)
def test_clgan_rejects_invalid_options(option: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Clgan(**{**Clgan.smoke_test_init_args(), **option})


def test_config_lists_every_option_with_its_default() -> None:
    init_args = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]
    model = Clgan.from_config(CONFIG)
    assert isinstance(model, Clgan)
    defaults = {name: list(value) if isinstance(value, tuple) else value for name, value in Clgan().hparams.items()}
    assert defaults == init_args


def test_training_steps_decrease_reconstruction_loss() -> None:
    torch.manual_seed(0)
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    images = torch.stack([cols, rows, (rows + cols) / 2]).expand(2, -1, -1, -1) * 0.6 + 0.2
    model = tiny_clgan(corrupt_inputs=False, learning_rate=1e-3)
    with torch.no_grad():
        before = F.l1_loss(model.model.generator(images), images)
    fit_on_batches(model, images, steps=16)
    with torch.no_grad():
        after = F.l1_loss(model.model.generator(images), images)
    assert after < 0.7 * before
    assert model.model.discriminator.layers[0].weight.grad is not None  # the discriminator was trained


@pytest.mark.parametrize(("lambda_adv", "term"), [(1.0, "discriminator"), (0.0, "rec")])
def test_non_finite_loss_stops_training_with_clear_error(lambda_adv: float, term: str) -> None:
    images = torch.rand(2, 3, 32, 32)  # finite: NaN images are refused before any loss (FiniteInputPreProcessor)
    model = tiny_clgan(corrupt_inputs=False, lambda_adv=lambda_adv)
    with torch.no_grad():
        next(model.model.generator.parameters()).fill_(float("nan"))  # every reconstruction is NaN
    with pytest.raises(NonFiniteLossError, match=f"Non-finite loss at training step 0: {term}=nan"):
        fit_on_batches(model, images, steps=1)


@pytest.fixture(scope="module")
def surface_demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder in which the tiny SurfaceDemo datamodules of this module generate their data once."""
    return tmp_path_factory.mktemp("surface_demo")


def tiny_surface_demo(root: Path) -> SurfaceDemo:
    """SurfaceDemo brick at 64x64: 8 train images, 7 test images."""
    return SurfaceDemo(
        root=root,
        category="brick",
        image_size=64,
        num_train=8,
        num_test_good=2,
        num_test_defect_per_type=1,
        train_batch_size=4,
        eval_batch_size=4,
        num_workers=0,
    )


def tiny_engine(root: Path) -> Engine:
    return Engine(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, default_root_dir=root, logger=False, enable_progress_bar=False,
    )


def test_engine_fit_test_and_checkpoint_reload(surface_demo_root: Path, tmp_path: Path) -> None:
    model = Clgan(**Clgan.smoke_test_init_args(), pre_processor=Clgan.configure_pre_processor(image_size=(64, 64)))
    engine = tiny_engine(tmp_path)
    datamodule = tiny_surface_demo(surface_demo_root)
    engine.fit(model, datamodule=datamodule)
    assert model.corruptor is not None  # corrupt_inputs defaults to True
    (results,) = engine.test(model, datamodule=datamodule)
    assert {"image_AUROC", "pixel_AUROC", "pixel_F1Score", "pixel_IoU"} <= set(results)
    reloaded = Clgan.load_from_checkpoint(engine.trainer.checkpoint_callback.best_model_path).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, actual = model.eval()(images), reloaded(images)
    assert isinstance(reloaded.post_processor, DoubleThresholdMorphology)
    # the default post-processor was calibrated on validation and the calibration is in the checkpoint
    names = ("normal_mean", "normal_std", "calibrated_high_factor")
    calibrated = {name: getattr(model.post_processor, name) for name in names}
    assert all(torch.isfinite(value) for value in calibrated.values())
    assert calibrated["calibrated_high_factor"].item() in VALIDATION_FACTOR_GRID
    for name, value in calibrated.items():
        assert torch.equal(getattr(reloaded.post_processor, name), value), name
    assert torch.allclose(expected.pred_score, actual.pred_score)
    assert torch.equal(expected.pred_mask, actual.pred_mask)


def test_anomaly_source_overlapping_the_test_split_is_refused(surface_demo_root: Path, tmp_path: Path) -> None:
    model = Clgan(**Clgan.smoke_test_init_args(), anomaly_source_path=str(surface_demo_root / "brick" / "test"))
    with pytest.raises(ValueError, match="overlaps the test split"):
        tiny_engine(tmp_path).fit(model, datamodule=tiny_surface_demo(surface_demo_root))


# --- training schedule, PatchNCE negatives, baselines -----------------------------------------------


class RecordEpochs(Callback):
    """Phase and learning rates of every training epoch (at its first batch, after the model's epoch start)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, list[float]]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: Clgan, *args: object) -> None:
        del trainer, args
        rates = [optimizer.param_groups[0]["lr"] for optimizer in pl_module._optimizers() if optimizer is not None]
        self.rows.append((pl_module.current_phase, rates))


def test_phases_and_linear_learning_rate_decay_follow_the_trainers_epochs() -> None:
    model = tiny_clgan(corrupt_inputs=False, learning_rate=1e-3, discriminator_learning_rate=4e-4,
                       warmup_ratio=0.2, decay_ratio=0.4)
    recorder = RecordEpochs()
    trainer = Trainer(accelerator="cpu", max_epochs=10, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    batches = [ImageBatch(image=torch.rand(2, 3, 32, 32))]
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    phases = [phase for phase, _ in recorder.rows]
    assert phases == ["warmup"] * 2 + ["full"] * 4 + ["decay"] * 4
    factors = [1.0] * 6 + [1 - (i + 1) / 5 for i in range(4)]  # CUT: 1 - (i + 1) / (n + 1) in decay epoch i
    for (_, rates), factor in zip(recorder.rows, factors, strict=True):
        assert rates == pytest.approx([1e-3 * factor, 4e-4 * factor])


def test_warmup_trains_discriminator_and_heads_but_only_reconstruction_reaches_the_generator() -> None:
    model = tiny_clgan(corrupt_inputs=False)
    images = torch.rand(2, 3, 32, 32)
    features = model.model.generator.encode(images)
    reconstruction = model.model.generator.decode(features[-1])
    terms = model._generator_terms(images, reconstruction, features, lambda: features, warmup=True)
    assert set(terms) == {"rec", "ssim", "nce"}  # no adversarial term in the warm-up
    terms["nce"].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.model.generator.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.model.patch_heads.parameters())
    full = model._generator_terms(images, model.model.generator(images), features, lambda: features)
    assert set(full) == {"rec", "ssim", "adv", "nce"}


def test_warmup_and_decay_ratios_must_leave_room() -> None:
    with pytest.raises(ValueError, match=r"warmup_ratio \+ decay_ratio must be <= 1"):
        Clgan(warmup_ratio=0.6, decay_ratio=0.5)


def test_patch_nce_negatives_from_the_batch() -> None:
    torch.manual_seed(0)
    query = F.normalize(torch.rand(2, 3, 4), dim=-1)
    key = F.normalize(torch.rand(2, 3, 4), dim=-1)
    batch_loss = PatchNCELoss(temperature=0.5, negatives="batch")(query, key)
    flat_q, flat_k = query.flatten(0, 1), key.flatten(0, 1)
    expected = F.cross_entropy(flat_q @ flat_k.T / 0.5, torch.arange(6))
    assert torch.allclose(batch_loss, expected)
    one_image = PatchNCELoss(0.5, "batch")(query[:1], key[:1])  # one image: the same negatives as "image"
    assert torch.allclose(one_image, PatchNCELoss(0.5, "image")(query[:1], key[:1]))
    with pytest.raises(ValueError, match="nce_negatives must be one of"):
        PatchNCELoss(0.5, "dataset")


@pytest.mark.parametrize("generator", ["conv_ae", "vae"])
def test_baseline_generators_train_in_the_same_code(generator: str) -> None:
    model = tiny_clgan(generator=generator, n_downsampling=3, latent_channels=4, nce_layers=(0, 2, 4),
                       corrupt_inputs=False, warmup_ratio=0.0, lambda_rec=0.0, lambda_ssim=1.0)
    images = torch.rand(2, 3, 32, 32)
    features = model.model.generator.encode(images)
    assert [f.shape[1] for f in features] == model.model.generator.stage_channels
    terms = model._generator_terms(images, model.model.generator.decode(features[-1]), features, lambda: features)
    assert set(terms) == ({"ssim", "adv", "nce", "kl"} if generator == "vae" else {"ssim", "adv", "nce"})
    assert all(torch.isfinite(term) for term in terms.values())
    model.eval()
    with torch.no_grad():  # eval: the VAE decodes its mean, so inference is deterministic
        assert torch.equal(model.model(images).anomaly_map, model.model(images).anomaly_map)
    fit_on_batches(tiny_clgan(generator=generator, n_downsampling=3, corrupt_inputs=False), images, steps=2)
