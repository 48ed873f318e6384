"""Datamodules of anomalib-surface (each registered in the ``anomalib.data`` entry-point group)."""

from .mad_rto import MadRto
from .surface_demo import SurfaceDemo
from .texture_folder import TextureFolder

__all__ = ["MadRto", "SurfaceDemo", "TextureFolder"]
