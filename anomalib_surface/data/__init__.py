"""Datamodules of anomalib-surface (each registered in the ``anomalib.data`` entry-point group)."""

from .surface_demo import SurfaceDemo

__all__ = ["SurfaceDemo"]
