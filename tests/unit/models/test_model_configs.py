"""configs/model: dotted class paths, a trainer section with the training length, options the models accept."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

import anomalib_surface.models

CONFIGS = Path(__file__).parents[3] / "configs" / "model"
COMPONENTS = {"pre_processor", "post_processor", "evaluator", "visualizer"}


def model_of(path: Path) -> str:
    """The model a config is for: ``dmp_cpu.yaml`` and ``dmp_draem_equivalent.yaml`` are Dmp's."""
    return path.stem.split("_")[0]


def test_every_model_has_a_paper_config_and_a_cpu_preset() -> None:
    names = [name.lower() for name in anomalib_surface.models.__all__]
    expected = {f"{name}{suffix}.yaml" for name in names for suffix in ("", "_cpu")}
    present = {path.name for path in CONFIGS.glob("*.yaml")}
    assert expected <= present
    assert {model_of(path) for path in CONFIGS.glob("*.yaml")} == set(names), "a config for an unknown model"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.stem)
def test_config_sets_the_trainer_length_and_valid_options(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    model_class = getattr(anomalib_surface.models, model_of(path).capitalize())
    assert config["model"]["class_path"] == f"anomalib_surface.models.{model_class.__name__}"
    options = config["model"]["init_args"]
    assert set(options) <= set(inspect.signature(model_class).parameters), "unknown options"
    assert "max_epochs" not in options  # the training length is the trainer's
    max_epochs = config["trainer"]["max_epochs"]
    assert isinstance(max_epochs, int) and max_epochs >= 1
    if model_class.phases:  # the length gives every phase its epochs
        arguments = {key: value for key, value in options.items() if key not in COMPONENTS}
        if "pre_trained" in arguments:  # no weights needed to read the schedule
            arguments["pre_trained"] = False
        model = model_class(**arguments)
        assert max_epochs >= model.phase_schedule.minimum_epochs()
