"""Dmp: realistic synthetic anomalies, feature-consistent reconstruction, large-kernel defect-map prediction."""

from .lightning_model import Dmp
from .torch_model import DmpModel

__all__ = ["Dmp", "DmpModel"]
