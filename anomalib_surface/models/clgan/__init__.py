"""CLGAN: contrastive-learning GAN reconstruction model for unsupervised surface anomaly detection."""

from .lightning_model import Clgan

__all__ = ["Clgan"]
