"""Locc: image matching + local one-class classification for defect inspection of misaligned parts.

Lv, Zhang, Shen, Zhang, "Unsupervised Automatic Defect Inspection based on Image Matching and Local
One-class Classification", CVPR 2023 workshops. See README.md in this folder.
"""

from .lightning_model import Locc
from .torch_model import LoccModel

__all__ = ["Locc", "LoccModel"]
