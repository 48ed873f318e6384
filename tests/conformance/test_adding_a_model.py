"""Adding a model: a sixth model, registered at test time the way the package registers its entry points, is
found and run by every harness of the conformance kit (life cycle, export, checkpoint, DDP) with no test edit.

The sixth model is Locc under another name: it declares phases, a phase buffer and training-set state, so
every declaration the harnesses read is exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import anomalib.models
import pytest
from anomalib.models.components import AnomalibModule

from anomalib_surface import registration
from anomalib_surface.models.locc import Locc
from anomalib_surface.testing import (
    ConformanceCase,
    check_ddp,
    check_life_cycle,
    check_registration,
    check_resume,
    make_demo_data,
    plugin_models,
    run_ddp,
)


class Sextant(Locc, AnomalibModule):
    """Locc under another name; ``AnomalibModule`` stays a direct base, as anomalib's ``get_model`` requires."""


@pytest.fixture
def sixth_model() -> Iterator[type[AnomalibModule]]:
    """``Sextant`` published in ``anomalib.models`` as an ``anomalib.models`` entry point would be."""
    entry_point = EntryPoint(name="Sextant", value=f"{__name__}:Sextant", group=registration.MODELS_GROUP)
    assert registration._register(entry_point, registration.MODELS_GROUP) is Sextant  # noqa: SLF001
    yield Sextant
    delattr(anomalib.models, "Sextant")
    if "Sextant" in getattr(anomalib.models, "__all__", []):
        anomalib.models.__all__.remove("Sextant")


def test_a_registered_model_is_run_by_every_harness(sixth_model: type[AnomalibModule], tmp_path: Path) -> None:
    (case,) = [ConformanceCase(model) for model in plugin_models() if model is sixth_model]
    assert (case.spec.phases, case.spec.phase_buffer, case.spec.training_set_state) == (
        Locc.phases, Locc.phase_buffer, Locc.training_set_state,
    )
    data = make_demo_data(tmp_path / "data")
    check_registration(case)
    check_life_cycle(case, data, tmp_path / "life_cycle")
    check_resume(case, data, tmp_path / "resume")
    check_ddp(case, run_ddp([case], data, tmp_path / "ddp"))
