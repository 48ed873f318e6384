"""Conformance kit for anomalib models: the whole life cycle of any ``AnomalibModule`` through ``Engine``.

Subclass :class:`ModelConformance` in a test module (see the README, "Conformance kit"), or call the checks
directly: :func:`check_life_cycle`, :func:`check_resume`, :func:`run_ddp` + :func:`check_ddp`. What a check
needs to know about a model (phases, phase buffer, training-set state, a tiny configuration) is read from the
model class (:mod:`anomalib_surface.components.model_spec`).
"""

from .case import ConformanceCase, make_demo_data, plugin_models
from .checkpoints import check_resume
from .ddp import check_ddp, run_ddp
from .life_cycle import check_life_cycle, check_registration
from .suite import ModelConformance

__all__ = [
    "ConformanceCase",
    "ModelConformance",
    "check_ddp",
    "check_life_cycle",
    "check_registration",
    "check_resume",
    "make_demo_data",
    "plugin_models",
    "run_ddp",
]
