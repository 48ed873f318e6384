"""``ModelConformance``: the kit as a pytest test class, to subclass in a plugin's own tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from anomalib.models.components import AnomalibModule

from .case import ConformanceCase, make_demo_data
from .checkpoints import check_resume
from .ddp import check_ddp, run_ddp
from .life_cycle import check_life_cycle, check_registration


class ModelConformance:
    """Conformance tests for one anomalib model class; subclass it as ``Test<Something>`` and set ``model_class``.

    Set ``init_args`` for a model without ``smoke_test_init_args()`` (or to override them). To cover several
    models in one class, override the ``case`` fixture with ``params`` and ``ddp_cases`` with all of them (the
    DDP check then trains them in one pair of processes).
    """

    model_class: ClassVar[type[AnomalibModule]]
    init_args: ClassVar[dict[str, Any] | None] = None

    @pytest.fixture
    def case(self) -> ConformanceCase:
        """The model under test."""
        return ConformanceCase(self.model_class, self.init_args)

    @pytest.fixture(scope="class")
    def ddp_cases(self) -> list[ConformanceCase]:
        """The models the DDP check trains together."""
        return [ConformanceCase(self.model_class, self.init_args)]

    @pytest.fixture(scope="class")
    def conformance_data(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The tiny SurfaceDemo dataset every check trains and tests on."""
        return make_demo_data(tmp_path_factory.mktemp("surface_demo"))

    @pytest.fixture(scope="class")
    def ddp_runs(self, ddp_cases: list[ConformanceCase], conformance_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """Output folder of the DDP runs of ``ddp_cases`` (those that support more than one device)."""
        cases = [case for case in ddp_cases if not case.single_device_only()]
        return run_ddp(cases, conformance_data, tmp_path_factory.mktemp("ddp"))

    def test_registered_with_anomalib(self, case: ConformanceCase) -> None:
        """``get_model`` finds the class by name."""
        check_registration(case)

    def test_life_cycle(self, case: ConformanceCase, conformance_data: Path, tmp_path: Path) -> None:
        """Fit, validate, test, predict, export (torch, ONNX) with post-processing parity, reload, train."""
        check_life_cycle(case, conformance_data, tmp_path)

    def test_resume_from_checkpoint(self, case: ConformanceCase, conformance_data: Path, tmp_path: Path) -> None:
        """Resuming after the first epoch ends where the uninterrupted run ends; checkpoints are plain data."""
        check_resume(case, conformance_data, tmp_path)

    @pytest.mark.ddp
    def test_ddp(self, case: ConformanceCase, ddp_runs: Path) -> None:
        """Two processes end equal, and equal to one process on the training-set state."""
        if case.single_device_only():
            pytest.skip(f"{case.name} pins its trainer to one device (trainer_arguments['devices'] == 1): no DDP")
        check_ddp(case, ddp_runs)
