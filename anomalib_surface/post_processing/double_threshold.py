"""Per-image double-threshold (hysteresis) binarisation with morphological cleaning.

Segmentation step of CLGAN (surface-defect detection): every anomaly/residual map is binarised with
adaptive thresholds ``mean + k * std`` computed on the map itself, using a low and a high factor
(the paper explores 2.0-3.0). Low-threshold pixels are kept only where their connected region holds
at least one high-threshold pixel (hysteresis), then the mask is opened/closed with a structuring
element and connected components below a minimum area are removed.

Everything is batched torch on the input's device with a fixed number of propagation steps, so the
same code runs in Lightning callbacks and in exported (torch / ONNX) graphs.

Example:
    >>> from anomalib.models import Patchcore
    >>> from anomalib_surface.post_processing import DoubleThresholdMorphology
    >>> model = Patchcore(post_processor=DoubleThresholdMorphology(low_factor=2.0, high_factor=3.0, min_area=16))
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import Batch, InferenceBatch
from kornia.morphology import closing, opening
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from anomalib_surface.components.checks import OptionError, is_traced, require_choice, require_int, require_number
from anomalib_surface.components.distributed import sum_over_processes
from anomalib_surface.components.phase_schedule import epoch_budget

from .checked import CheckedPostProcessor

__all__ = [
    "VALIDATION_FACTOR_GRID",
    "DoubleThresholdMorphology",
    "component_sum",
    "finite_std_mean",
    "hysteresis_threshold",
    "label_components",
    "remove_small_components",
    "structuring_element",
]

KERNEL_SHAPES = ("square", "disk", "cross")
MORPHOLOGY_OPERATIONS = {"open": opening, "close": closing}
LABEL_MODES = ("mask", "score")
THRESHOLD_STATISTICS = ("image", "normal")
VALIDATION_FACTOR_GRID = tuple(1.0 + 0.5 * step for step in range(31))
"""High factors 1.0, 1.5, ..., 16.0: a ``factor_grid`` wide enough for the maps of every model we benchmarked."""
MAX_FACTOR = 1000.0
"""Largest ``k`` accepted (a threshold 1000 standard deviations above the mean never fires)."""
MAX_KERNEL_SIZE = 255
"""Largest structuring element side (kornia's morphology allocates ``kernel_size**2`` shifted copies of a map)."""
MAX_AREA = 2**24
"""Largest ``min_area``: pixel counts are float32 sums, exact up to ``2**24``."""
MAX_LABEL_ITERATIONS = 100_000
MAX_GRID_SIZE = 1000


def structuring_element(size: int, shape: str, device: torch.device | None = None) -> torch.Tensor:
    """Build a flat ``[size, size]`` structuring element ("square", "disk" or "cross") of 0/1 floats."""
    if shape == "square":
        return torch.ones(size, size, device=device)
    offsets = torch.arange(size, device=device) - size // 2
    rows, cols = offsets[:, None], offsets[None, :]
    if shape == "disk":
        return (rows**2 + cols**2 <= (size // 2) ** 2).float()
    if shape == "cross":
        return ((rows == 0) | (cols == 0)).float()
    msg = f"kernel_shape must be one of {KERNEL_SHAPES}, got {shape!r}."
    raise ValueError(msg)


def label_components(mask: torch.Tensor, num_iterations: int) -> torch.Tensor:
    """Label the 8-connected components of a binary mask.

    Max-label propagation (as :func:`kornia.contrib.connected_components`) plus one pointer jump per
    step (a pixel adopts the label held by the pixel its label points to), which needs fewer steps
    than plain propagation on long components. Eagerly each map stops once its labels no longer change and
    empty maps are skipped (same result as running all steps, at the cost of the slowest map only);
    traced graphs always run ``num_iterations`` steps on every map. Components whose labels have not
    converged after ``num_iterations`` steps come out split into several labels.

    Args:
        mask (torch.Tensor): Binary mask of shape ``[N, 1, H, W]``.
        num_iterations (int): Maximum number of propagation steps.

    Returns:
        torch.Tensor: int64 labels of shape ``[N, H * W]``; 0 is background, a component is labelled
        ``1 + `` the largest raster index of its pixels once converged.
    """
    height, width = mask.shape[-2:]
    foreground = mask.flatten(1).float()
    # float32 holds every pixel id exactly up to 2**24 pixels per map; max_pool2d has no integer kernel.
    labels = torch.arange(1, height * width + 1, device=mask.device, dtype=torch.float32) * foreground
    if is_traced():
        for _ in range(num_iterations):
            labels = _propagate_labels(labels, foreground, height, width)
        return labels.long()
    active = foreground.any(dim=1).nonzero().squeeze(1)
    for _ in range(num_iterations):
        if active.numel() == 0:
            break
        current = labels[active]
        stepped = _propagate_labels(current, foreground[active], height, width)
        labels[active] = stepped
        active = active[(stepped != current).any(dim=1)]
    return labels.long()


def _propagate_labels(labels: torch.Tensor, foreground: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One max-propagation step plus one pointer jump of ``[N, H * W]`` float labels on their foreground."""
    spread = F.max_pool2d(labels.view(-1, 1, height, width), 3, stride=1, padding=1).flatten(1) * foreground
    return spread.gather(1, (spread.long() - 1).clamp(min=0)) * foreground


def component_sum(labels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over each pixel's component: ``[N, P]`` labels and values -> ``[N, P]`` float sums."""
    totals = torch.zeros(labels.shape[0], labels.shape[1] + 1, device=labels.device, dtype=torch.float32)
    return totals.scatter_add(1, labels, values.float()).gather(1, labels)


def finite_std_mean(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std ``[B, C, 1, 1]`` of the finite pixels of each ``[B, C, H, W]`` map.

    Pixels of images with non-finite input are ``+inf`` in the maps of this package's models
    (:mod:`anomalib_surface.components.finite_inputs`); they stay above any threshold without making the
    statistics of the rest of the map infinite. A map without finite pixel gets mean 0 and std 0.
    """
    finite = torch.isfinite(maps)
    count = finite.sum(dim=(-2, -1), keepdim=True).clamp(min=1)
    mean = torch.where(finite, maps, torch.zeros_like(maps)).sum(dim=(-2, -1), keepdim=True) / count
    deviation = torch.where(finite, maps - mean, torch.zeros_like(maps))
    return mean, (deviation.square().sum(dim=(-2, -1), keepdim=True) / count).sqrt()


def hysteresis_threshold(
    maps: torch.Tensor,
    low_factor: float | torch.Tensor,
    high_factor: float | torch.Tensor,
    num_iterations: int,
    statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Binarise each map channel with hysteresis thresholds ``mean + k * std``.

    A pixel above the low threshold is kept if its 8-connected low-threshold region contains a pixel
    above the high threshold.

    Args:
        maps (torch.Tensor): Anomaly/residual maps of shape ``[B, C, H, W]``.
        low_factor (float | torch.Tensor): ``k`` of the low threshold.
        high_factor (float | torch.Tensor): ``k`` of the high threshold (``>= low_factor``).
        num_iterations (int): Label propagation steps (see :func:`label_components`).
        statistics (tuple[torch.Tensor, torch.Tensor] | None): ``(mean, std)`` broadcastable to ``maps``
            (e.g. of defect-free validation maps); ``None`` uses each image's and channel's own mean and
            population std (adaptive, as in CLGAN). NaN statistics (not calibrated yet) fall back to the
            image's own, also in exported graphs.

    Returns:
        torch.Tensor: Boolean mask of shape ``[B, C, H, W]``.
    """
    mean, std = finite_std_mean(maps)
    if statistics is not None:
        given_mean, given_std = statistics
        mean = torch.where(torch.isnan(given_mean), mean, given_mean)
        std = torch.where(torch.isnan(given_std), std, given_std)
    weak = maps > mean + low_factor * std
    strong = maps > mean + high_factor * std
    weak = weak & strong.flatten(-2).any(dim=-1)[..., None, None]  # no seed, no region: skips the labelling
    labels = label_components(weak.flatten(0, 1).unsqueeze(1), num_iterations)
    seeded = component_sum(labels, strong.flatten(0, 1).flatten(1)) > 0
    return weak & seeded.view_as(weak)


def remove_small_components(mask: torch.Tensor, min_area: int, num_iterations: int) -> torch.Tensor:
    """Drop 8-connected components with fewer than ``min_area`` pixels from a ``[B, 1, H, W]`` bool mask."""
    labels = label_components(mask, num_iterations)
    large = component_sum(labels, mask.flatten(1)) >= min_area
    return mask & large.view_as(mask)


def _as_channels(anomaly_map: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` or ``[B, C, H, W]`` maps as ``[B, C, H, W]``; any other shape raises."""
    if anomaly_map.ndim not in {3, 4}:
        msg = f"anomaly_map must have shape [B, H, W] or [B, C, H, W], got {tuple(anomaly_map.shape)}."
        raise ValueError(msg)
    return anomaly_map.unsqueeze(1) if anomaly_map.ndim == 3 else anomaly_map


def _validate_factors(low_factor: float, high_factor: float) -> None:
    if not 0 <= low_factor <= high_factor:
        msg = f"Expected 0 <= low_factor <= high_factor, got low_factor={low_factor}, high_factor={high_factor}."
        raise OptionError(msg)


class DoubleThresholdMorphology(CheckedPostProcessor):
    """Post-processor producing ``pred_mask`` by per-image double thresholding and morphology.

    Scores and anomaly maps are normalised exactly as by :class:`~anomalib.post_processing.PostProcessor`
    (min-max with the thresholds calibrated on validation). ``pred_mask`` instead comes from the RAW
    anomaly map of each image, before normalisation clips it:

    1. hysteresis between ``mean + low_factor * std`` and ``mean + high_factor * std`` (see
       :func:`hysteresis_threshold`), with ``mean``/``std`` of each image and channel
       (``threshold_statistics="image"``, CLGAN's adaptive thresholds) or of the pixels of the defect-free
       validation images (``"normal"``, one pair for all channels); channels of a ``[B, C, H, W]``
       per-channel residual are thresholded separately and OR-ed, ``[B, H, W]`` / ``[B, 1, H, W]`` maps
       are one channel;
    2. the morphological ``operations`` in order ("open", "close") with a ``kernel_shape`` element of
       ``kernel_size`` pixels (:mod:`kornia.morphology`, geodesic borders);
    3. removal of 8-connected components smaller than ``min_area`` pixels.

    ``pred_label`` always agrees with the mask (an image with a non-empty mask is anomalous):

    - ``label_mode="mask"``: ``pred_label`` is True when any pixel remains in the cleaned mask. Since
      the thresholds are relative to each image, normal images can get small masks too; use
      ``min_area`` and the opening to suppress them.
    - ``label_mode="score"``: ``pred_label`` comes from the calibrated image threshold on ``pred_score``
      (parent behaviour) and masks of images labelled normal are emptied.

    Per-image statistics flag the top pixels of every image, defect-free ones included, and a large
    defect inflates its own image's ``std``. ``threshold_statistics="normal"`` with ``factor_grid`` (factor
    chosen by pixel F1 on validation) avoids both; the Clgan README compares the variants.

    ``pred_mask`` and ``pred_label`` always replace those of the model. With ``enable_thresholding=False``
    neither is produced, as in the parent.

    Args:
        low_factor (float): ``k`` of the low threshold ``mean + k * std``. Defaults to ``2.0``.
        high_factor (float): ``k`` of the high (seed) threshold, ``>= low_factor``. Defaults to ``3.0``.
        kernel_size (int): Odd side of the structuring element; 1 disables morphology. Defaults to ``3``.
        kernel_shape (str): "square", "disk" or "cross". Defaults to ``"square"``.
        operations (str | Sequence[str]): Morphological operations applied in order, each "open" or
            "close"; empty for none. Defaults to ``("open", "close")``.
        min_area (int): Components with fewer pixels are removed; 0 or 1 keeps all. Defaults to ``0``.
        label_iterations (int): Label propagation steps for hysteresis and area filtering. Regions whose
            geodesic extent needs more steps are split (weak parts may be dropped, areas under-counted).
            Eager runs stop at convergence; exported graphs unroll all steps. Defaults to ``64``.
        label_mode (str): "mask" or "score", see above. Defaults to ``"mask"``.
        threshold_statistics (str): "image" (per image and channel) or "normal" (mean/std of all pixels
            of validation images with ``gt_label`` 0, collected by the validation callbacks and kept as
            buffers; until a validation run has set them, each image's own statistics are used, with a
            warning). Defaults to ``"image"``.
        factor_grid (Sequence[float]): High factors tried at the end of validation on the validation
            maps and masks (those with ``gt_mask``); the one with the best pixel F1 replaces
            ``high_factor`` (low factor ``k - (high_factor - low_factor)``, at least 0) and is kept as a
            buffer. Empty: ``low_factor``/``high_factor`` as given. The validation maps are kept until the
            end of validation (as anomalib's F1-adaptive threshold keeps them). Under DDP the counts of
            every process are summed, so all processes pick the same factor. Cost: one mask computation
            of the kept maps per factor at each calibration (timings in the Clgan README), see
            ``calibrate_every_n_epochs``. Defaults to ``()``.
        calibrate_every_n_epochs (int): When ``factor_grid`` is searched during a fit: ``0`` only at the
            validation of the last planned epoch (the trainer's ``max_epochs``, or ``max_steps`` in epochs;
            the model's own plan for phased models), ``N`` also after every ``N``-th epoch. A stand-alone
            validation (``Engine.validate``) always calibrates. With early stopping the last epoch is not
            known in advance: give ``N``. Defaults to ``0``.
        **kwargs: Passed to :class:`~anomalib.post_processing.PostProcessor` (``enable_normalization``,
            ``enable_thresholding``, ``enable_threshold_matching``, ``image_sensitivity``,
            ``pixel_sensitivity``).

    Example:
        >>> import torch
        >>> from anomalib.data import InferenceBatch
        >>> post_processor = DoubleThresholdMorphology(min_area=4)
        >>> output = post_processor(InferenceBatch(pred_score=torch.rand(2), anomaly_map=torch.rand(2, 64, 64)))
        >>> output.pred_mask.shape, output.pred_label.shape
        (torch.Size([2, 64, 64]), torch.Size([2]))
    """

    OPTIONS = (
        "low_factor",
        "high_factor",
        "kernel_size",
        "kernel_shape",
        "operations",
        "min_area",
        "label_iterations",
        "label_mode",
        "threshold_statistics",
        "factor_grid",
        "calibrate_every_n_epochs",
    )

    def __init__(
        self,
        low_factor: float = 2.0,
        high_factor: float = 3.0,
        kernel_size: int = 3,
        kernel_shape: str = "square",
        operations: str | Sequence[str] = ("open", "close"),
        min_area: int = 0,
        label_iterations: int = 64,
        label_mode: str = "mask",
        threshold_statistics: str = "image",
        factor_grid: Sequence[float] = (),
        calibrate_every_n_epochs: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.configure(
            low_factor=low_factor,
            high_factor=high_factor,
            kernel_size=kernel_size,
            kernel_shape=kernel_shape,
            operations=operations,
            min_area=min_area,
            label_iterations=label_iterations,
            label_mode=label_mode,
            threshold_statistics=threshold_statistics,
            factor_grid=factor_grid,
            calibrate_every_n_epochs=calibrate_every_n_epochs,
        )
        self._calibrating = True
        self._normal_moments = torch.zeros(3, dtype=torch.float64)  # pixel count, sum, sum of squares
        self._validation_maps: list[torch.Tensor] = []
        self._validation_masks: list[torch.Tensor] = []

    def configure(  # noqa: PLR0913 - one argument per option, as the constructor
        self,
        low_factor: float,
        high_factor: float,
        kernel_size: int,
        kernel_shape: str,
        operations: str | Sequence[str],
        min_area: int,
        label_iterations: int,
        label_mode: str,
        threshold_statistics: str,
        factor_grid: Sequence[float],
        calibrate_every_n_epochs: int = 0,
    ) -> None:
        """Check every option (the constructor's and a checkpoint's) and set it; see the class arguments."""
        low_factor = require_number("low_factor", low_factor, 0.0, strict=False, maximum=MAX_FACTOR)
        high_factor = require_number("high_factor", high_factor, 0.0, strict=False, maximum=MAX_FACTOR)
        _validate_factors(low_factor, high_factor)
        kernel_size = require_int("kernel_size", kernel_size, minimum=1, maximum=MAX_KERNEL_SIZE)
        if kernel_size % 2 == 0:
            msg = f"kernel_size must be odd, got {kernel_size}."
            raise OptionError(msg)
        operations = (operations,) if isinstance(operations, str) else operations
        if not isinstance(operations, Sequence) or any(operation not in MORPHOLOGY_OPERATIONS for operation in operations):
            msg = f"operations must be a list drawn from {tuple(MORPHOLOGY_OPERATIONS)}, got {operations!r}."
            raise OptionError(msg)
        if not isinstance(factor_grid, Sequence) or isinstance(factor_grid, str) or len(factor_grid) > MAX_GRID_SIZE:
            msg = f"factor_grid must be a list of at most {MAX_GRID_SIZE} factors, got {factor_grid!r}."
            raise OptionError(msg)
        self.low_factor, self.high_factor = low_factor, high_factor
        self.kernel_size = kernel_size
        self.kernel_shape = require_choice("kernel_shape", kernel_shape, KERNEL_SHAPES)
        self.operations = tuple(operations)
        self.min_area = require_int("min_area", min_area, minimum=0, maximum=MAX_AREA)
        self.label_iterations = require_int("label_iterations", label_iterations, minimum=1, maximum=MAX_LABEL_ITERATIONS)
        self.label_mode = require_choice("label_mode", label_mode, LABEL_MODES)
        self.threshold_statistics = require_choice("threshold_statistics", threshold_statistics, THRESHOLD_STATISTICS)
        self.factor_grid = tuple(
            require_number("factor_grid", factor, 0.0, strict=False, maximum=MAX_FACTOR) for factor in factor_grid
        )
        self.calibrate_every_n_epochs = require_int(
            "calibrate_every_n_epochs", calibrate_every_n_epochs, minimum=0, maximum=MAX_LABEL_ITERATIONS,
        )
        # Registered only when used, so that default state dicts (and older checkpoints) keep their keys.
        self._keep_buffers(("normal_mean", "normal_std"), keep=threshold_statistics == "normal")
        self._keep_buffers(("calibrated_high_factor",), keep=bool(self.factor_grid))

    def _keep_buffers(self, names: tuple[str, ...], *, keep: bool) -> None:
        """Register NaN scalar buffers ``names`` if ``keep`` and missing; drop them if not ``keep``."""
        for name in names:
            if keep and name not in self._buffers:
                self.register_buffer(name, torch.tensor(float("nan")))
            elif not keep and name in self._buffers:
                delattr(self, name)

    def calibrates(self, trainer: Trainer | None, pl_module: LightningModule | None) -> bool:
        """Whether this validation searches ``factor_grid`` (see ``calibrate_every_n_epochs``).

        Decided from the epoch alone, so every DDP process decides alike.
        """
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return True
        if trainer.sanity_checking:
            return False
        epoch = trainer.current_epoch + 1
        if self.calibrate_every_n_epochs and epoch % self.calibrate_every_n_epochs == 0:
            return True
        planned = getattr(pl_module, "epochs_planned", None)
        try:
            return epoch >= (planned or epoch_budget(trainer))
        except ValueError:  # no finite budget: the last epoch cannot be known, calibrate every time
            return True

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Decide whether this validation searches ``factor_grid`` (the maps are only kept if so)."""
        super().on_validation_epoch_start(trainer, pl_module)
        self._calibrating = bool(self.factor_grid) and self.calibrates(trainer, pl_module)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Batch,
        *args,
        **kwargs,
    ) -> None:
        """Update the parent's metrics, the defect-free pixel moments and the maps kept for ``factor_grid``."""
        super().on_validation_batch_end(trainer, pl_module, outputs, *args, **kwargs)
        if outputs.anomaly_map is None:
            return
        maps = _as_channels(outputs.anomaly_map).detach()
        if self.threshold_statistics == "normal" and outputs.gt_label is not None:
            normal = maps[~outputs.gt_label.reshape(-1).bool()].double()
            moments = torch.stack([normal.new_tensor(normal.numel()), normal.sum(), normal.square().sum()])
            self._normal_moments += moments.cpu()
        if self._calibrating and outputs.gt_mask is not None:
            self._validation_maps.append(maps)
            self._validation_masks.append(outputs.gt_mask.reshape(maps.shape[0], *maps.shape[-2:]).bool())

    def on_validation_epoch_end(self, trainer: Trainer | None, pl_module: LightningModule | None) -> None:
        """Set the parent's thresholds, then ``normal_mean``/``normal_std`` and ``calibrated_high_factor``.

        Pixel moments and per-factor pixel counts are summed over DDP processes first, so every process ends
        with the statistics of the whole validation set (the same as one process would compute).
        """
        super().on_validation_epoch_end(trainer, pl_module)
        if self.threshold_statistics == "normal":
            count, total, squares = sum_over_processes(trainer, self._normal_moments).tolist()
            if count:
                mean = total / count
                self.normal_mean.fill_(mean)
                self.normal_std.fill_(max(squares / count - mean**2, 0.0) ** 0.5)
        if self.factor_grid and self._calibrating:
            counts = sum_over_processes(trainer, self._factor_grid_counts())
            true_positives, predicted, truth = counts.unbind(dim=1)
            if truth.sum() > 0:  # no defect pixels: nothing to calibrate on, keep high_factor
                f1 = 2 * true_positives / (predicted + truth).clamp(min=1)
                self.calibrated_high_factor.fill_(self.factor_grid[int(f1.argmax())])
        self._normal_moments.zero_()
        self._validation_maps, self._validation_masks = [], []

    def _factor_grid_counts(self) -> torch.Tensor:
        """``[len(factor_grid), 3]`` float64 (true positive, predicted, true) pixel counts of the kept maps."""
        counts = torch.zeros(len(self.factor_grid), 3, dtype=torch.float64)
        if self._validation_maps:
            maps, masks = torch.cat(self._validation_maps), torch.cat(self._validation_masks)
            counts[:, 2] = float(masks.sum())
            for index, factor in enumerate(self.factor_grid):
                predicted = self._mask_from_channels(maps, factor)
                counts[index, :2] = torch.stack([(predicted & masks).sum(), predicted.sum()]).double().cpu()
        return counts

    def _factors(self, high_factor: float | None = None) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """``(low, high)`` factors: ``high_factor`` if given, else the calibrated one if any, else the configured."""
        if high_factor is None:
            high_factor = self.high_factor
            if self.factor_grid:  # the calibrated factor once validation has set it (no branch: exportable)
                calibrated = self.calibrated_high_factor
                high_factor = torch.where(torch.isnan(calibrated), calibrated.new_tensor(high_factor), calibrated)
        band = self.high_factor - self.low_factor
        if isinstance(high_factor, torch.Tensor):
            return (high_factor - band).clamp(min=0), high_factor
        return max(high_factor - band, 0.0), high_factor

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mean, std)`` of the defect-free validation pixels (NaN before validation), ``None`` for per-image ones."""
        if self.threshold_statistics == "image":
            return None
        if not is_traced() and torch.isnan(self.normal_mean):
            warnings.warn(
                'DoubleThresholdMorphology(threshold_statistics="normal") has no statistics yet (they come from a '
                "validation run with defect-free images, gt_label 0): using each image's own mean and std until then.",
                stacklevel=2,
            )
        return self.normal_mean, self.normal_std

    def compute_mask(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        """Binarise raw anomaly maps ``[B, H, W]``, ``[B, 1, H, W]`` or ``[B, C, H, W]`` into a ``[B, H, W]`` mask."""
        return self._mask_from_channels(_as_channels(anomaly_map))

    def _mask_from_channels(self, maps: torch.Tensor, high_factor: float | None = None) -> torch.Tensor:
        """``[B, H, W]`` mask of ``[B, C, H, W]`` maps; ``high_factor`` overrides the factors in use (calibration)."""
        low_factor, high_factor = self._factors(high_factor)
        mask = hysteresis_threshold(maps, low_factor, high_factor, self.label_iterations, self._statistics())
        mask = mask.any(dim=1, keepdim=True)
        if self.operations and self.kernel_size > 1:
            kernel = structuring_element(self.kernel_size, self.kernel_shape, device=mask.device)
            cleaned = mask.float()
            for operation in self.operations:
                cleaned = MORPHOLOGY_OPERATIONS[operation](cleaned, kernel)
            mask = cleaned > 0.5
        if self.min_area > 1:
            mask = remove_small_components(mask, self.min_area, self.label_iterations)
        return mask.squeeze(1)

    def _reconcile(
        self,
        pred_mask: torch.Tensor,
        score_label: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(pred_mask [B, H, W], pred_label [B])`` according to ``label_mode``."""
        if self.label_mode == "score" and score_label is not None:
            score_label = score_label.reshape(-1).bool()
            return pred_mask & score_label[:, None, None], score_label
        return pred_mask, pred_mask.flatten(1).any(dim=1)

    def forward(self, predictions: InferenceBatch) -> InferenceBatch:
        """Normalise as the parent does and replace ``pred_mask``/``pred_label`` by the double-threshold result.

        Args:
            predictions (InferenceBatch): Model output with ``pred_score`` and/or ``anomaly_map``.

        Returns:
            InferenceBatch: Normalised scores/maps, ``pred_mask`` ``[B, H, W]`` bool, ``pred_label`` ``[B]`` bool.
        """
        processed = super().forward(predictions)
        if not self.enable_thresholding or predictions.anomaly_map is None:
            return processed
        pred_mask, pred_label = self._reconcile(self.compute_mask(predictions.anomaly_map), processed.pred_label)
        return processed._replace(pred_mask=pred_mask, pred_label=pred_label)

    def post_process_batch(self, batch: Batch) -> None:
        """Compute the mask from the raw map, then normalise/threshold as the parent and apply the mask (in place)."""
        pred_mask = (
            self.compute_mask(batch.anomaly_map)
            if self.enable_thresholding and batch.anomaly_map is not None
            else None
        )
        super().post_process_batch(batch)
        if pred_mask is not None:
            batch.pred_mask, batch.pred_label = self._reconcile(pred_mask, batch.pred_label)
