"""The model under test, the tiny dataset and the CPU engine shared by every check of the kit."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import lightning as L
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from lightning.pytorch.callbacks import Callback

from anomalib_surface.components.model_spec import ModelSpec, model_spec
from anomalib_surface.data import SurfaceDemo
from anomalib_surface.data.surface_demo import make_surface_demo

IMAGE_SIZE = 64
CATEGORY = "brick"
# 7 training images: under DDP the sampler pads rank 1's shard with a repeated image. 3 good + 5 defective
# test (= validation) images: an even number, so that no validation image is counted twice under DDP.
DEMO_SETTINGS = {"image_size": IMAGE_SIZE, "num_train": 7, "num_test_good": 3, "num_test_defect_per_type": 1}
TRAIN_BATCH_SIZE = 4
EVAL_BATCH_SIZE = 8


@dataclass(frozen=True)
class ConformanceCase:
    """One model class under test and how to build it.

    Args:
        model_class: The ``AnomalibModule`` subclass.
        init_args: Constructor arguments; ``None`` uses the class's ``smoke_test_init_args()`` (see
            :mod:`anomalib_surface.components.model_spec`). Give them for models without smoke arguments,
            e.g. ``{"pre_trained": False}`` for anomalib's Padim on a machine without network access.
        max_epochs: The trainer's epoch budget; ``None`` uses the class's ``smoke_test_max_epochs``.
    """

    model_class: type[AnomalibModule]
    init_args: dict[str, Any] | None = None
    max_epochs: int | None = None
    spec: ModelSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (inspect.isclass(self.model_class) and issubclass(self.model_class, AnomalibModule)):
            msg = f"ConformanceCase.model_class must be an AnomalibModule subclass, got {self.model_class!r}."
            raise TypeError(msg)
        object.__setattr__(self, "spec", model_spec(self.model_class))

    @property
    def name(self) -> str:
        """The class name (test ids, output folders)."""
        return self.model_class.__name__

    @property
    def epochs(self) -> int:
        """The epoch budget given to ``Engine(max_epochs=...)``."""
        return self.max_epochs or self.spec.smoke_test_max_epochs

    @property
    def init_kwargs(self) -> dict[str, Any]:
        """The constructor arguments: :attr:`init_args`, or the class's smoke-test arguments."""
        return self.spec.smoke_test_init_args if self.init_args is None else self.init_args

    def single_device_only(self) -> bool:
        """Whether the model pins its trainer to one device (anomalib's Padim: ``trainer_arguments["devices"] == 1``).

        anomalib's Engine applies such a pin to every process, so a second DDP rank finds no device of its own:
        the model does not support DDP, by its own declaration. Asked once per case (the model is built once).
        """
        return self._pins_one_device

    @cached_property
    def _pins_one_device(self) -> bool:
        return self.build_model().trainer_arguments.get("devices") == 1

    def build_model(self, seed: int = 0, **overrides: Any) -> AnomalibModule:  # noqa: ANN401
        """The model, initialised from ``seed``, pre-processing images to :data:`IMAGE_SIZE`."""
        L.seed_everything(seed, verbose=False)
        pre_processor = self.model_class.configure_pre_processor(image_size=(IMAGE_SIZE, IMAGE_SIZE))
        return self.model_class(pre_processor=pre_processor, **{**self.init_kwargs, **overrides})


def make_demo_data(root: Path) -> Path:
    """Write the tiny SurfaceDemo dataset (:data:`DEMO_SETTINGS`, one category) under ``root``."""
    return make_surface_demo(root, categories=CATEGORY, **DEMO_SETTINGS)


def demo_datamodule(root: Path, datamodule_class: type[SurfaceDemo] = SurfaceDemo) -> SurfaceDemo:
    """The datamodule over :func:`make_demo_data`'s dataset in ``root``, loading in the main process."""
    return datamodule_class(
        root=root, category=CATEGORY, train_batch_size=TRAIN_BATCH_SIZE, eval_batch_size=EVAL_BATCH_SIZE,
        num_workers=0, **DEMO_SETTINGS,
    )


def cpu_engine(
    case: ConformanceCase, root: Path, callbacks: list[Callback] | None = None, devices: int = 1, **options: Any,  # noqa: ANN401
) -> Engine:
    """An anomalib ``Engine`` on the CPU with the case's epoch budget (DDP with gloo when ``devices > 1``)."""
    strategy = {"strategy": "ddp"} if devices > 1 else {}
    return Engine(
        accelerator="cpu", devices=devices, max_epochs=case.epochs, default_root_dir=root, logger=False,
        enable_progress_bar=False, callbacks=callbacks or [], **strategy, **options,
    )


def plugin_models() -> list[type[AnomalibModule]]:
    """Model classes that plugins published in ``anomalib.models`` (anomalib's own excluded), by name.

    A model registered there, by an entry point or at run time, is covered by the kit with no test edit. The
    names looked up are the ``anomalib.models`` entry points and the imported direct subclasses of
    ``AnomalibModule`` (what ``get_model`` searches); reading a name on ``anomalib.models`` also loads a plugin
    whose registration is lazy or deferred.
    """
    import anomalib.models

    names = {entry_point.name for entry_point in entry_points(group="anomalib.models")}
    names |= {model.__name__ for model in AnomalibModule.__subclasses__()}
    published = {getattr(anomalib.models, name, None) for name in names}
    return sorted(
        (
            model for model in published
            if inspect.isclass(model) and AnomalibModule in model.__bases__ and not model.__module__.startswith("anomalib.")
        ),
        key=lambda model_class: model_class.__name__,
    )
