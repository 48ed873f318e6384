"""Fitting the training batch to the memory: the decision, and the probe leaving the model untouched."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer

from anomalib_surface.components import memory_budget
from anomalib_surface.components.memory_budget import (
    GIB,
    MemoryBudgetError,
    bytes_saved_for_backward,
    fit_train_batch_to_memory,
    fitting_batch_size,
)
from anomalib_surface.models.clgan import Clgan
from anomalib_surface.models.pgcn import Pgcn
from anomalib_surface.models.tocoad import Tocoad

OPTIONS = ("--model.ngf",)


def test_a_batch_that_fits_is_kept() -> None:
    assert fitting_batch_size(32, sample_bytes=GIB // 8, budget_bytes=10 * GIB, model_name="M", image_size=(256, 256), options=OPTIONS) == 32


def test_a_batch_that_does_not_fit_is_lowered_to_what_fits() -> None:
    assert fitting_batch_size(32, sample_bytes=GIB // 2, budget_bytes=10.5 * GIB, model_name="M", image_size=(256, 256), options=OPTIONS) == 10


def test_one_image_that_does_not_fit_stops_naming_the_options() -> None:
    with pytest.raises(MemoryBudgetError, match=r"M needs about 3.0 GiB to train on one 512x512 image, but only 2.0 GiB .*--data.train_batch_size or --model.ngf"):
        fitting_batch_size(32, sample_bytes=3 * GIB // 2, budget_bytes=2 * GIB, model_name="M", image_size=(512, 512), options=OPTIONS)


def test_saved_activations_are_counted_once_per_storage() -> None:
    layer = torch.nn.Linear(10, 10)
    inputs = torch.rand(4, 10)
    # Linear saves its input, ReLU its output: two [4, 10] float tensors.
    assert bytes_saved_for_backward(lambda: layer(inputs).relu().sum()) == 2 * 4 * 10 * 4


PROBES = {Clgan: ["_generator_activations"], Tocoad: ["_discriminator_losses", "_fine_tuning_losses"]}


@pytest.mark.parametrize("model_class", [Clgan, Tocoad])
def test_the_model_lowers_its_batch_without_changing_its_state(model_class: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """At fit start a plugin model (64 px) measures one image; the batch shrinks to the memory, or training stops
    before it starts; the model's buffers and the random state are as before."""
    model = model_class(pre_processor=model_class.configure_pre_processor(image_size=(64, 64)), **model_class.smoke_test_init_args())
    probes = [getattr(model, name) for name in PROBES[model_class]]
    with torch.random.fork_rng():
        sample_bytes = max(bytes_saved_for_backward(lambda probe=probe: probe(torch.rand(1, 3, 64, 64))) for probe in probes)
    datamodule = SimpleNamespace(train_batch_size=32)
    model._trainer = SimpleNamespace(datamodule=datamodule, num_devices=1)  # noqa: SLF001 - what the hook reads of a trainer
    state = {key: value.clone() for key, value in model.state_dict().items()}
    random_state = torch.get_rng_state()

    monkeypatch.setattr(memory_budget, "available_memory_bytes", lambda device: sample_bytes)  # budget: half an image
    with pytest.raises(MemoryBudgetError, match=f"{model_class.__name__} needs about"):
        fit_train_batch_to_memory(model, probes, OPTIONS)
    monkeypatch.setattr(memory_budget, "available_memory_bytes", lambda device: 14 * sample_bytes)  # budget 7 saved images: 3.5 training steps of one image
    fit_train_batch_to_memory(model, probes, OPTIONS)
    assert datamodule.train_batch_size == 3

    assert torch.equal(torch.get_rng_state(), random_state)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, equal_nan=True, msg=key)


@pytest.mark.parametrize(
    ("model_class", "probes"), [(Clgan, ["_generator_activations"]), (Pgcn, ["generator_step", "comparator_step"])],
)
def test_the_model_fits_its_batch_when_fitting_starts(model_class: type, probes: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    model = model_class(**model_class.smoke_test_init_args())
    model.trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    calls = []
    monkeypatch.setattr(
        f"{model_class.__module__}.fit_train_batch_to_memory",
        lambda module, probes, options: calls.append((module, probes, options)),
    )
    model.on_fit_start()
    ((module, called_probes, options),) = calls
    assert module is model
    assert called_probes == [getattr(model, name) for name in probes]
    assert options and all(option.startswith("--model.") for option in options)
    assert model.trainer.num_sanity_val_steps == 0  # the shared base's on_fit_start ran too
