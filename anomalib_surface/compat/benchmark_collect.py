"""anomalib's ``BenchmarkJob.collect`` fails on a grid of models whose options differ.

``collect`` takes the table's columns from the first job only and raises ``KeyError`` when a later job has another
one, e.g. ``model.init_args.layer`` in a grid mixing Padim and Clgan (seen in anomalib 2.4 to 2.7). The fix makes
it one row per job over the union of all jobs' columns (a job without a column gets NaN). Detected by behaviour:
the fix applies when ``collect`` fails on two jobs with different columns.
"""

from __future__ import annotations

import sys
from typing import Any

JOB_MODULE = "anomalib.pipelines.benchmark.job"
_PROBE = [{"seed": 0, "model.init_args.a": 1}, {"seed": 0, "model.init_args.b": 2}]


def collect_benchmark_results(results: list[dict[str, Any]]) -> Any:  # noqa: ANN401 - pandas.DataFrame
    """One row per benchmark job, the union of all jobs' columns (a job without a column gets NaN)."""
    import pandas as pd

    return pd.DataFrame.from_records(results)


def applies() -> bool:
    """``BenchmarkJob.collect`` raises, or drops a column, on two jobs with different columns."""
    collect = sys.modules[JOB_MODULE].BenchmarkJob.collect
    try:
        frame = collect([dict(job) for job in _PROBE])
    except Exception:  # noqa: BLE001 - any failure is the behaviour this fix handles
        return True
    return not {"model.init_args.a", "model.init_args.b"} <= set(getattr(frame, "columns", ()))


def install() -> None:
    """Replace ``BenchmarkJob.collect`` by :func:`collect_benchmark_results`."""
    sys.modules[JOB_MODULE].BenchmarkJob.collect = staticmethod(collect_benchmark_results)
