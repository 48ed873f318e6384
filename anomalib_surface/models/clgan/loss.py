"""Losses of CLGAN: multi-layer PatchNCE, least-squares adversarial terms, L1 and SSIM reconstruction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from kornia.losses import SSIMLoss
from torch import nn

__all__ = ["NCE_NEGATIVES", "ClganLoss", "PatchNCELoss"]

NCE_NEGATIVES = ("image", "batch")


class PatchNCELoss(nn.Module):
    """InfoNCE over patch embeddings (CUT): each query must pick its own location among the keys.

    For image ``b`` and location ``i`` the logits are ``q_bi . k_bi / t`` (positive) and ``q_bi . k_bj / t``
    for every other sampled location ``j != i`` of the same image (``negatives="image"``, CUT's default), or
    ``q_bi . k_cj / t`` for every other sampled location of every image ``c`` of the batch
    (``negatives="batch"``, CUT's ``--nce_includes_all_negatives_from_minibatch``); the loss is the
    cross-entropy of choosing the positive, averaged over locations and images. Keys are detached, as in CUT.

    Args:
        temperature (float): ``t``. Defaults to ``0.07``.
        negatives (str): ``"image"`` or ``"batch"``. Defaults to ``"image"``.
    """

    def __init__(self, temperature: float = 0.07, negatives: str = "image") -> None:
        super().__init__()
        if temperature <= 0:
            msg = f"nce_t must be > 0, got {temperature}."
            raise ValueError(msg)
        if negatives not in NCE_NEGATIVES:
            msg = f"nce_negatives must be one of {NCE_NEGATIVES}, got {negatives!r}."
            raise ValueError(msg)
        self.temperature = temperature
        self.negatives = negatives

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Scalar loss for L2-normalised embeddings ``query`` and ``key`` of shape ``[B, P, D]``."""
        if query.shape != key.shape or query.ndim != 3:
            msg = f"query and key must both be [B, P, D], got {tuple(query.shape)} and {tuple(key.shape)}."
            raise ValueError(msg)
        key = key.detach()
        if self.negatives == "batch":  # one image of B * P locations: every other location is a negative
            query, key = query.flatten(0, 1)[None], key.flatten(0, 1)[None]
        logits = torch.bmm(query, key.transpose(1, 2)) / self.temperature  # [B, P, P] or [1, B*P, B*P]
        targets = torch.arange(query.shape[1], device=query.device).expand(query.shape[0], -1)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class ClganLoss(nn.Module):
    """Weighted CLGAN objectives.

    Generator terms (each skipped when its weight is 0):

    - ``rec``: ``mean |x - G(x~)|`` (L1 to the clean image ``x``; ``x~`` is the possibly corrupted input);
    - ``ssim``: kornia's ``SSIMLoss`` ``(1 - SSIM(G(x~), x)) / 2`` with an 11x11 window;
    - ``adv``: least-squares GAN, ``mean (D(G(x~)) - 1)^2``;
    - ``nce``: :class:`PatchNCELoss` averaged over the NCE layers, queries from the reconstruction,
      keys from the clean image;
    - ``kl``: the KL divergence of a variational generator's latent from ``N(0, I)`` (computed by the
      generator, :meth:`ConvAutoencoder.kl_divergence`), only for ``generator="vae"``.

    Total: ``lambda_rec * rec + lambda_ssim * ssim + lambda_adv * adv + lambda_nce * nce (+ lambda_kl * kl)``.
    Discriminator: ``0.5 * (mean (D(x) - 1)^2 + mean D(G(x~))^2)``.

    Args:
        lambda_rec (float): Weight of the L1 term. Defaults to ``10.0``.
        lambda_ssim (float): Weight of the SSIM term. Defaults to ``1.0``.
        lambda_adv (float): Weight of the adversarial term. Defaults to ``1.0``.
        lambda_nce (float): Weight of the PatchNCE term. Defaults to ``0.1``.
        nce_t (float): PatchNCE temperature. Defaults to ``0.07``.
        nce_negatives (str): Where PatchNCE's negatives come from, ``"image"`` or ``"batch"`` (see
            :class:`PatchNCELoss`). Defaults to ``"image"``.
        lambda_kl (float): Weight of the KL term of a variational generator (``0`` when the generator is not
            variational). Defaults to ``0.0``.
    """

    def __init__(
        self,
        lambda_rec: float = 10.0,
        lambda_ssim: float = 1.0,
        lambda_adv: float = 1.0,
        lambda_nce: float = 0.1,
        nce_t: float = 0.07,
        nce_negatives: str = "image",
        lambda_kl: float = 0.0,
    ) -> None:
        super().__init__()
        self.weights = {"rec": lambda_rec, "ssim": lambda_ssim, "adv": lambda_adv, "nce": lambda_nce, "kl": lambda_kl}
        negative = {f"lambda_{name}": weight for name, weight in self.weights.items() if not weight >= 0}
        if negative:
            msg = f"Loss weights must be >= 0, got {negative}."
            raise ValueError(msg)
        if not any(weight for name, weight in self.weights.items() if name != "kl"):
            msg = "At least one of lambda_rec, lambda_ssim, lambda_adv, lambda_nce must be > 0."
            raise ValueError(msg)
        self.patch_nce = PatchNCELoss(nce_t, nce_negatives)
        self.ssim = SSIMLoss(window_size=11)

    @property
    def uses_adversarial(self) -> bool:
        """Whether the adversarial term (and hence a discriminator) is needed."""
        return self.weights["adv"] > 0

    @property
    def uses_nce(self) -> bool:
        """Whether the PatchNCE term (and hence projection heads) is needed."""
        return self.weights["nce"] > 0

    def generator_terms(
        self,
        target: torch.Tensor,
        reconstruction: torch.Tensor,
        fake_logits: torch.Tensor | None = None,
        nce_queries: Sequence[torch.Tensor] = (),
        nce_keys: Sequence[torch.Tensor] = (),
        kl_divergence: torch.Tensor | None = None,
        adversarial: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Unweighted generator terms with a non-zero weight.

        Args:
            target (torch.Tensor): Clean images ``[B, C, H, W]``.
            reconstruction (torch.Tensor): Generator output ``[B, C, H, W]``.
            fake_logits (torch.Tensor | None): ``D(reconstruction)`` ``[B, 1, h, w]``; needed if ``lambda_adv > 0``.
            nce_queries (Sequence[torch.Tensor]): Reconstruction embeddings ``[B, P, D]`` per NCE layer.
            nce_keys (Sequence[torch.Tensor]): Clean-image embeddings at the same locations, same shapes.
            kl_divergence (torch.Tensor | None): Scalar KL term of a variational generator; kept when
                ``lambda_kl > 0``.
            adversarial (bool): Include the adversarial term (when ``lambda_adv > 0``); ``False`` during the
                reconstruction warm-up. Defaults to ``True``.

        Returns:
            dict[str, torch.Tensor]: Scalar terms by name (``rec``, ``ssim``, ``adv``, ``nce``, ``kl``).
        """
        terms = {}
        if self.weights["rec"] > 0:
            terms["rec"] = F.l1_loss(reconstruction, target)
        if self.weights["ssim"] > 0:
            terms["ssim"] = self.ssim(reconstruction, target)
        if self.uses_adversarial and adversarial:
            if fake_logits is None:
                msg = "fake_logits (discriminator output on the reconstruction) is required when lambda_adv > 0."
                raise ValueError(msg)
            terms["adv"] = F.mse_loss(fake_logits, torch.ones_like(fake_logits))
        if self.uses_nce:
            if not nce_queries or len(nce_queries) != len(nce_keys):
                msg = "nce_queries and nce_keys (one [B, P, D] tensor per NCE layer) are required when lambda_nce > 0."
                raise ValueError(msg)
            layer_losses = [self.patch_nce(q, k) for q, k in zip(nce_queries, nce_keys, strict=True)]
            terms["nce"] = torch.stack(layer_losses).mean()
        if self.weights["kl"] > 0 and kl_divergence is not None:
            terms["kl"] = kl_divergence
        return terms

    def weighted_sum(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum(lambda_name * term)`` over the given generator terms."""
        return torch.stack([self.weights[name] * term for name, term in terms.items()]).sum()

    @staticmethod
    def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Least-squares discriminator loss from ``D(x)`` and ``D(G(x~).detach())`` (``[B, 1, h, w]`` each)."""
        real = F.mse_loss(real_logits, torch.ones_like(real_logits))
        fake = F.mse_loss(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)
