"""``anomalib predict`` prints nothing about its predictions: no score, no label.

In anomalib 2.x the ``predict`` subcommand calls ``Engine.predict`` and only writes the visualised images under
``results/``. This fix asks ``Engine.predict`` for its predictions (``return_predictions=True``) and prints one line
per image: its path, ``pred_score``, ``pred_label`` (normal/anomalous) and, when the model predicts a mask, the
share of anomalous pixels. Detected by behaviour: ``AnomalibCLI._run_subcommand`` exists and ``Engine.predict``
takes ``return_predictions``.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Iterable
from typing import Any

from anomalib_surface.compat.cli_wrapping import CLI_MODULE


def prediction_lines(batches: Iterable[Any]) -> list[str]:
    """One line per image of ``batches`` (anomalib ``ImageBatch`` es): ``path  score=..  label=..  [mask=..%]``."""
    lines = []
    for batch in batches or ():
        paths = getattr(batch, "image_path", None) or [f"image {len(lines) + index}" for index in range(len(batch))]
        scores, labels, masks = (getattr(batch, name, None) for name in ("pred_score", "pred_label", "pred_mask"))
        for index, path in enumerate(paths):
            line = f"{path}"
            if scores is not None:
                line += f"  score={float(scores[index]):.4f}"
            if labels is not None:
                line += f"  label={'anomalous' if bool(labels[index]) else 'normal'}"
            if masks is not None:
                line += f"  anomalous_pixels={100 * float(masks[index].float().mean()):.2f}%"
            lines.append(line)
    return lines


def applies() -> bool:
    """The CLI runs subcommands through ``_run_subcommand`` and ``Engine.predict`` can return its predictions."""
    from anomalib.engine import Engine

    cli_class = getattr(sys.modules[CLI_MODULE], "AnomalibCLI", None)
    run = getattr(cli_class, "_run_subcommand", None)
    return (
        callable(run)
        and not getattr(run, "_anomalib_surface_fixed", False)
        and "return_predictions" in inspect.signature(Engine.predict).parameters
    )


def install() -> None:
    """Wrap ``_run_subcommand``: for ``predict``, the engine returns its predictions and they are printed."""
    cli_class = sys.modules[CLI_MODULE].AnomalibCLI
    run = cli_class._run_subcommand  # noqa: SLF001 - the subcommand dispatch this fix extends

    @functools.wraps(run)
    def _run_subcommand(self: Any) -> None:  # noqa: ANN401
        if getattr(self, "subcommand", None) == "predict" and getattr(self, "engine", None) is not None:
            predict = self.engine.predict

            def predict_and_print(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
                kwargs["return_predictions"] = True
                predictions = predict(*args, **kwargs)
                print("\n".join(prediction_lines(predictions)))  # noqa: T201 - the subcommand's output
                return predictions

            self.engine.predict = predict_and_print
        run(self)

    _run_subcommand._anomalib_surface_fixed = True  # type: ignore[attr-defined]
    cli_class._run_subcommand = _run_subcommand
