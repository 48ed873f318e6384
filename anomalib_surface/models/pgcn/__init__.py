"""PGCN: pattern generative and contrastive networks (Swin pattern generator + pseudo-Siamese comparator)."""

from .lightning_model import Pgcn

__all__ = ["Pgcn"]
