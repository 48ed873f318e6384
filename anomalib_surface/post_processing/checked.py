"""One validation path for a post-processor's settings: at build and when restored from a checkpoint.

anomalib restores a post-processor's settings from a checkpoint with ``load_checkpoint_config``, which sets
attributes without the constructor's checks (an even ``kernel_size``, ``low_factor > high_factor`` or a
negative ``min_area`` would load and fail, or allocate gigabytes, at the first forward).
:class:`CheckedPostProcessor` routes both paths through :meth:`CheckedPostProcessor.configure`.
"""

from __future__ import annotations

from typing import Any

from anomalib.post_processing import PostProcessor

from anomalib_surface.components.checks import require_bool, require_number

__all__ = ["PARENT_OPTIONS", "CheckedPostProcessor", "check_parent_options"]

PARENT_OPTIONS = ("enable_normalization", "enable_thresholding", "enable_threshold_matching", "image_sensitivity", "pixel_sensitivity")
"""Settings of anomalib's ``PostProcessor`` (its constructor arguments and checkpoint keys)."""


def check_parent_options(options: dict[str, Any]) -> dict[str, Any]:
    """Check the ``PostProcessor`` options present in ``options`` (booleans; sensitivities in ``[0, 1]``)."""
    for name in ("enable_normalization", "enable_thresholding", "enable_threshold_matching"):
        if name in options:
            require_bool(name, options[name])
    for name in ("image_sensitivity", "pixel_sensitivity"):
        if name in options:
            require_number(name, options[name], 0.0, strict=False, maximum=1.0)
    return options


class CheckedPostProcessor(PostProcessor):
    """A ``PostProcessor`` whose own settings are validated by :meth:`configure` at build and restore.

    Subclasses list their settings in ``OPTIONS`` (names of constructor arguments, also the checkpoint
    keys) and implement :meth:`configure`, which checks all of them and sets them.
    """

    OPTIONS: tuple[str, ...] = ()

    def __init__(
        self,
        enable_normalization: bool = True,
        enable_thresholding: bool = True,
        enable_threshold_matching: bool = True,
        image_sensitivity: float = 0.5,
        pixel_sensitivity: float = 0.5,
    ) -> None:
        options = {
            "enable_normalization": enable_normalization,
            "enable_thresholding": enable_thresholding,
            "enable_threshold_matching": enable_threshold_matching,
            "image_sensitivity": image_sensitivity,
            "pixel_sensitivity": pixel_sensitivity,
        }
        super().__init__(**check_parent_options(options))

    def configure(self, **settings: Any) -> None:  # noqa: ANN401
        """Check every setting in ``OPTIONS`` and set it (raises ``OptionError`` naming a bad one)."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The current values of ``OPTIONS``."""
        return {name: getattr(self, name) for name in self.OPTIONS}

    @property
    def _checkpoint_config_keys(self) -> tuple[str, ...]:
        """Parent keys plus ``OPTIONS``, restored by :meth:`load_checkpoint_config`."""
        return (*super()._checkpoint_config_keys, *self.OPTIONS)

    def load_checkpoint_config(self, config: dict[str, Any]) -> None:
        """Restore settings from a checkpoint through the same checks as the constructor."""
        super().load_checkpoint_config(check_parent_options({key: config[key] for key in PARENT_OPTIONS if key in config}))
        self.configure(**{**self.settings(), **{key: config[key] for key in self.OPTIONS if key in config}})
