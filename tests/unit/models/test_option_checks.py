"""Every constructor option of the five models is checked at build (and so when ``load_from_checkpoint`` rebuilds
the model from its hyper-parameters), with a one-line message naming it."""

from __future__ import annotations

import inspect
import math
from importlib.metadata import entry_points

import pytest

from anomalib_surface.components.checks import OptionError

MODELS = {ep.name: ep for ep in entry_points(group="anomalib.models") if ep.value.startswith("anomalib_surface.")}
COMPONENTS = {"pre_processor", "post_processor", "evaluator", "visualizer"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_option_has_a_rule(name: str) -> None:
    """A renamed or new option without a rule would go unchecked."""
    model_class = MODELS[name].load()
    module = inspect.getmodule(model_class)
    options = set(inspect.signature(model_class.__init__).parameters) - {"self"} - COMPONENTS
    assert options == set(module.OPTION_RULES)


BAD = [
    ("Clgan", {"sigma": math.nan}, "sigma must be a finite number"),
    ("Clgan", {"ngf": 10**6}, r"ngf must be an integer in \[1, 8192\], got 1000000"),
    ("Clgan", {"max_epochs": 2.5}, "max_epochs must be an integer"),
    ("Dmp", {"max_epochs": 2.5}, "max_epochs must be an integer"),
    ("Dmp", {"kernel_size": 10**6}, r"kernel_size must be an integer in \[1, 255\]"),
    ("Tocoad", {"seed": "abc"}, "seed must be an integer"),
    ("Tocoad", {"coreset_projection_dim": 2.5}, "coreset_projection_dim must be an integer"),
    ("Pgcn", {"generator_lr": -1}, "generator_lr must be a finite number > 0.0"),
    ("Locc", {"defect_probability": 1.5}, r"defect_probability must be a finite number >= 0.0 and <= 1.0"),
]


@pytest.mark.parametrize(("name", "options", "message"), BAD, ids=[f"{name}-{next(iter(options))}" for name, options, _ in BAD])
def test_bad_option_fails_at_build_in_one_line(name: str, options: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message) as error:
        MODELS[name].load()(**options)
    assert "\n" not in str(error.value)
