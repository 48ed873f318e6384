"""Backbones through timm, with the real pretrained path and one clear message when it is unreachable.

``pre_trained=True`` (the default, as in anomalib) asks timm for the ImageNet weights, which timm
fetches from the Hugging Face hub or finds in its cache. On a machine without network access this
fails deep inside ``huggingface_hub``, after a minute of download retries; :func:`create_backbone` first checks
in one short connection whether the hub can be reached at all and, if not, asks for the cached copy only (as with
``HF_HUB_OFFLINE=1``), so a missing file fails in seconds. Every failure becomes a
:class:`PretrainedWeightsUnavailableError` that names the ways out.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import timm
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["PretrainedWeightsUnavailableError", "create_backbone"]

HUB_PROBE_TIMEOUT_S = 3.0
"""How long the reachability check of the Hugging Face endpoint may wait for its one TCP connection."""
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class PretrainedWeightsUnavailableError(RuntimeError):
    """Pretrained weights were requested but could not be downloaded or found locally."""


def _ways_out(backbone: str, error: Exception) -> str:
    return (
        f"Could not load ImageNet weights for backbone '{backbone}' ({type(error).__name__}: {error}). "
        "Ways out: (1) pass pre_trained=False to train from scratch; (2) pass weights_path=<local .pth/.safetensors "
        "file> with the backbone's timm state dict; (3) put the weights in the Hugging Face cache (HF_HOME, "
        "default ~/.cache/huggingface) and set HF_HUB_OFFLINE=1 — see README 'Pretrained weights offline'."
    )


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether one TCP connection to the Hugging Face endpoint (``HF_ENDPOINT``) fails within ``timeout`` seconds.

    Behind a proxy (``HTTPS_PROXY`` and the like) a direct connection says nothing, so the hub counts as reachable.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return False
    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return True
    return False


@contextmanager
def _cache_only_when_hub_unreachable() -> Iterator[None]:
    """Inside, huggingface_hub reads its cache only (its ``HF_HUB_OFFLINE`` mode) when the hub cannot be reached."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or not hub_unreachable():
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def create_backbone(
    backbone: str,
    pre_trained: bool = True,
    weights_path: str | Path | None = None,
    **timm_kwargs: Any,  # noqa: ANN401 - forwarded to timm.create_model
) -> nn.Module:
    """Create a timm model, loading pretrained weights from the hub, the cache or a local file.

    Args:
        backbone: timm model name, e.g. ``"resnet18"`` or ``"wide_resnet50_2"``.
        pre_trained: Load ImageNet weights (hub or cache) when no ``weights_path`` is given.
        weights_path: Local weights file; implies pretrained weights without any download.
        **timm_kwargs: Forwarded to :func:`timm.create_model` (``features_only``, ``out_indices``, ...).

    Raises:
        ValueError: If ``backbone`` is not a timm model name.
        FileNotFoundError: If ``weights_path`` does not exist.
        PretrainedWeightsUnavailableError: If the weights cannot be downloaded or read.
    """
    if not timm.is_model(backbone):
        msg = f"backbone '{backbone}' is not a timm model name (see timm.list_models())."
        raise ValueError(msg)
    if weights_path is not None:
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            msg = f"weights_path '{weights_path}' does not exist."
            raise FileNotFoundError(msg)
        timm_kwargs["pretrained_cfg_overlay"] = {"file": str(weights_path)}
    pretrained = pre_trained or weights_path is not None
    try:
        if weights_path is None and pretrained:
            with _cache_only_when_hub_unreachable():
                return timm.create_model(backbone, pretrained=True, **timm_kwargs)
        return timm.create_model(backbone, pretrained=pretrained, **timm_kwargs)
    except (OSError, RuntimeError, ValueError) as error:
        if not pretrained:
            raise
        raise PretrainedWeightsUnavailableError(_ways_out(backbone, error)) from error
