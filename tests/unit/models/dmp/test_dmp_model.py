"""Dmp: large-kernel re-parameterisation, feature extractors, losses, training and ONNX export."""

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_surface.models.dmp.realistic_anomaly import RealisticAnomalyGenerator
from anomalib_surface.models.dmp import Dmp, DmpModel
from anomalib_surface.models.dmp.anomaly_map import MeanFilteredMax
from anomalib_surface.models.dmp.feature_extractor import EncoderFeatures, PretrainedFeatures, build_feature_extractor
from anomalib_surface.models.dmp.loss import DmpLoss
from anomalib_surface.models.dmp.torch_model import DEFECT_PRIOR, ReconstructionEncoder, ReparamLargeKernelConv

TINY = {"reconstruction_width": 4, "prediction_width": 4, "depth": 2, "score_filter_size": 5}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_batch_norms(module: nn.Module) -> None:
    """Give every batch norm non-trivial statistics and affine parameters, so that fusing them matters."""
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -0.5, 0.5)


@pytest.mark.parametrize(("kernel_size", "small_kernel_size"), [(31, 5), (7, 3), (5, 0)])
@pytest.mark.parametrize("fft_min_kernel_size", [0, 5])
def test_reparameterized_block_equals_two_branch_block(
    kernel_size: int,
    small_kernel_size: int,
    fft_min_kernel_size: int,
) -> None:
    """Direct (``fft_min_kernel_size=0``) and FFT fused kernels give the two-branch output."""
    block = ReparamLargeKernelConv(8, kernel_size, small_kernel_size, fft_min_kernel_size)
    assert block.use_fft == bool(fft_min_kernel_size)
    randomize_batch_norms(block)
    block.eval()
    features = torch.randn(2, 8, 40, 40)
    with torch.no_grad():
        two_branch = block(features)
        block.reparameterize()
        fused = block(features)
    assert block.reparameterized
    assert torch.allclose(fused, two_branch, atol=1e-5)
    block.train()
    assert not block.reparameterized, "training must fall back to the branches"


def test_training_forward_drops_a_fused_kernel_restored_by_attribute() -> None:
    """Lightning restores ``module.training = True`` after validation without calling ``train()``."""
    block = ReparamLargeKernelConv(4, 7, 3).eval()
    block.reparameterize()
    block.training = True
    features = torch.randn(1, 4, 16, 16)
    output = block(features)
    assert not block.reparameterized
    assert output.requires_grad, "training must use the trainable branches"
    block.eval()
    assert torch.allclose(block(features), block.large(features) + block.small(features))


def test_reparameterize_needs_eval_mode() -> None:
    with pytest.raises(RuntimeError, match="eval mode"):
        ReparamLargeKernelConv(4).reparameterize()


def test_reparameterized_model_gives_same_predictions() -> None:
    model = DmpModel(**TINY)
    randomize_batch_norms(model)
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        before = model.eval()(images)
        after = model.reparameterize()(images)
    assert isinstance(after, InferenceBatch)
    assert after.anomaly_map.shape == (2, 1, 48, 48)
    assert after.pred_score.shape == (2,)
    assert torch.allclose(after.anomaly_map, before.anomaly_map, atol=1e-5)
    assert torch.allclose(after.pred_score, before.pred_score, atol=1e-5)


def test_training_forward_returns_reconstruction_and_logits() -> None:
    reconstruction, logits = DmpModel(**TINY).train()(torch.rand(2, 3, 36, 44))  # size not divisible by 4
    assert reconstruction.shape == (2, 3, 36, 44)
    assert logits.shape == (2, 1, 36, 44)


def test_untrained_network_predicts_the_defect_prior() -> None:
    """Regression: a zero head bias started every map at 0.5, and short trainings never got it down."""
    model = DmpModel(**TINY)
    with torch.no_grad():
        eval_map = model.eval()(torch.rand(2, 3, 32, 32)).anomaly_map
        _, logits = model.train()(torch.rand(2, 3, 32, 32))
    for anomaly_map in (eval_map, torch.sigmoid(logits)):
        assert anomaly_map.median() == pytest.approx(DEFECT_PRIOR, rel=0.5)


def test_score_is_max_of_mean_filtered_map() -> None:
    anomaly_map = torch.zeros(2, 1, 16, 16)
    anomaly_map[0, 0, 8, 8] = 1.0  # a single hot pixel is averaged away ...
    anomaly_map[1, 0, 4:7, 4:7] = 1.0  # ... a 3 x 3 region is not
    assert torch.allclose(MeanFilteredMax(3)(anomaly_map), torch.tensor([1 / 9, 1.0]))


def train_one_step(encoder: ReconstructionEncoder) -> None:
    """One Adam step in training mode: changes the encoder's weights and its batch-norm running statistics."""
    optimizer = torch.optim.Adam(encoder.parameters(), lr=0.1)
    encoder.train()
    loss = sum(feature.square().mean() for feature in encoder(torch.rand(2, 3, 16, 16) * 3))
    loss.backward()
    optimizer.step()


def test_parameter_copy_is_a_hard_copy_without_gradients() -> None:
    encoder = ReconstructionEncoder(3, 4, 2)
    extractor = EncoderFeatures(encoder, update="copy", momentum=0.75)
    assert not extractor.training, "the parameter copy starts in eval mode (Lightning keeps modes at fit start)"
    train_one_step(encoder)
    extractor.update(encoder)
    copied, source = extractor.encoder.state_dict(), encoder.state_dict()
    assert copied.keys() == source.keys()
    for name, value in copied.items():
        assert torch.equal(value, source[name]), f"{name}: after a hard copy the extractor equals the encoder"
    assert not any(parameter.requires_grad for parameter in extractor.parameters())
    assert not extractor.train().training, "the parameter copy stays in eval mode"
    assert len(extractor(torch.rand(1, 3, 16, 16))) == 2, "features of stages 1..depth"


def test_ema_copy_averages_parameters_and_batch_norm_statistics_alike() -> None:
    encoder = ReconstructionEncoder(3, 4, 2)
    extractor = EncoderFeatures(encoder, update="ema", momentum=0.75)
    old = {name: value.clone() for name, value in extractor.encoder.state_dict().items()}
    train_one_step(encoder)
    extractor.update(encoder)
    source = encoder.state_dict()
    averaged = 0
    for name, value in extractor.encoder.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.75 * old[name] + 0.25 * source[name]), name
            averaged += "running_" in name and not torch.equal(old[name], source[name])
        else:
            assert torch.equal(value, source[name]), f"{name} (integer buffer) is copied"
    assert averaged > 0, "the encoder's running statistics changed and were averaged, not copied"
    assert not any(parameter.requires_grad for parameter in extractor.parameters())


def test_gradient_and_pretrained_extractors() -> None:
    encoder = ReconstructionEncoder(3, 4, 2)
    trained = build_feature_extractor("gradient", encoder)
    assert all(parameter.requires_grad for parameter in trained.parameters())
    with pytest.raises(RuntimeError, match="'copy' and 'ema'"):
        trained.update(encoder)
    pretrained = build_feature_extractor("pretrained", encoder, backbone="resnet18", pre_trained=False)
    assert isinstance(pretrained, PretrainedFeatures)
    assert not any(parameter.requires_grad for parameter in pretrained.parameters())
    assert [feature.shape[-1] for feature in pretrained(torch.rand(1, 3, 64, 64))] == [16, 8, 4]
    with pytest.raises(ValueError, match="feature_extractor"):
        build_feature_extractor("momentum", encoder)


def test_loss_terms() -> None:
    images = torch.rand(2, 3, 32, 32)
    masks = (torch.rand(2, 1, 32, 32) > 0.9).float()
    logits = torch.randn(2, 1, 32, 32)
    extractor = EncoderFeatures(ReconstructionEncoder(3, 4, 2))
    with_features = DmpLoss(extractor)(images, images.clone(), masks, logits)
    assert with_features["l2"] == 0
    assert with_features["ssim"].abs() < 1e-4
    assert with_features["feature"].abs() < 1e-5, "identical images have identical features"
    assert torch.allclose(with_features["loss"], with_features["focal"] + with_features["smooth_l1"], atol=1e-4)
    without = DmpLoss(None)(images, torch.rand_like(images), masks, logits)
    assert "feature" not in without
    assert without["l2"] > 0


@pytest.mark.parametrize("feature_extractor", ["copy", "ema", "gradient"])
def test_loss_decreases_on_a_tiny_set(feature_extractor: str) -> None:
    module = Dmp(**Dmp.smoke_test_init_args(), feature_extractor=feature_extractor)
    generator = RealisticAnomalyGenerator(probability=1.0, perlin_threshold=0.3)
    images = torch.rand(4, 3, 32, 32)
    augmented, masks = generator(images)
    parameters = [parameter for parameter in module.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    module.train()
    losses = []
    for _ in range(8):
        reconstruction, logits = module.model(augmented)
        loss = module.loss(images, reconstruction, masks, logits)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if feature_extractor != "gradient":
            module.loss.feature_consistency.extractor.update(module.model.reconstruction.encoder)
        losses.append(loss.item())
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2]), losses


def test_onnx_export_uses_the_reparameterized_network(tmp_path: Path) -> None:
    module = Dmp(**Dmp.smoke_test_init_args(), pre_processor=False, post_processor=False)
    randomize_batch_norms(module.model)
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        reference = module.model.eval()(images)
    onnx_path = module.to_onnx(tmp_path, input_size=(32, 32))
    blocks = [block for block in module.model.modules() if isinstance(block, ReparamLargeKernelConv)]
    assert blocks and all(block.reparameterized for block in blocks)
    graph = onnx.load(str(onnx_path)).graph
    kernels = {
        tuple(attribute.ints)
        for node in graph.node
        if node.op_type == "Conv"
        for attribute in node.attribute
        if attribute.name == "kernel_shape"
    }
    assert (31, 31) in kernels
    assert (5, 5) not in kernels, "the small branches must be fused away"
    session = ort.InferenceSession(str(onnx_path))
    outputs = dict(zip([output.name for output in session.get_outputs()], session.run(None, {"input": images.numpy()})))
    assert torch.allclose(torch.from_numpy(outputs["anomaly_map"]), reference.anomaly_map, atol=1e-4)
    assert torch.allclose(torch.from_numpy(outputs["pred_score"]), reference.pred_score, atol=1e-4)


def test_training_starts_with_unfused_networks_in_training_mode() -> None:
    module = Dmp(**Dmp.smoke_test_init_args())
    module.reparameterize()  # e.g. after an export
    module.on_train_start()
    assert module.model.training
    assert not any(block.reparameterized for block in module.model.modules() if isinstance(block, ReparamLargeKernelConv))
    assert not module.loss.feature_consistency.extractor.training


def test_trainer_arguments_and_lr_schedule() -> None:
    module = Dmp(**{**Dmp.smoke_test_init_args(), "max_epochs": 7})
    assert module.trainer_arguments["max_epochs"] == 7
    module.trainer = type("Trainer", (), {"max_epochs": 700})()
    _, (scheduler,) = module.configure_optimizers()
    assert sorted(scheduler.milestones) == [400, 600]
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"feature_extractor": "momentum"}, "feature_extractor"),
        ({"kernel_size": 30}, "kernel_size"),
        ({"small_kernel_size": 4}, "small_kernel_size"),
        ({"score_filter_size": 4}, "score_filter_size"),
        ({"lr_milestones": (0.5, 1.5)}, "lr_milestones"),
        ({"feature_extractor": "ema", "ema_momentum": 1.0}, "ema_momentum"),
        ({"anomaly_synthesis": "cutpaste"}, "anomaly_synthesis"),
        ({"depth": 0}, "depth"),
        ({"ssim_weight": -1.0}, "ssim_weight"),
    ],
)
def test_invalid_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Dmp(**{**Dmp.smoke_test_init_args(), **kwargs})


def test_default_evaluator_has_pixel_ap_on_validation_and_test() -> None:
    evaluator = Dmp(**Dmp.smoke_test_init_args()).evaluator
    assert [metric.name for metric in evaluator.val_metrics] == ["pixel_AUPR"]
    test_names = [metric.name for metric in evaluator.test_metrics]
    assert test_names == ["image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score", "pixel_AUPR"]
