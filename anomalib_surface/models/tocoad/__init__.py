"""ToCoAD: two-stage contrastive fine-tuning with a coreset memory bank (Liang et al., 2024)."""

from .lightning_model import Tocoad

__all__ = ["Tocoad"]
