"""Datamodules of anomalib-surface (each registered in the ``anomalib.data`` entry-point group)."""

from .mad_rto import MadRto
from .surface_demo import SurfaceDemo

__all__ = ["MadRto", "SurfaceDemo"]
