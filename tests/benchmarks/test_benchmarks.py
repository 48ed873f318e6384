"""The benchmark runner on a tiny dataset, failure reporting, resume, and the anomalib benchmark sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import run, suites
from benchmarks.runner import Entry

SWEEPS = Path(__file__).resolve().parents[2] / "benchmarks" / "sweeps"


@pytest.fixture
def tiny_suite(monkeypatch: pytest.MonkeyPatch) -> str:
    """Two cheap models, one of which cannot be built, on one SurfaceDemo category."""
    suite = suites.Suite(
        "tiny",
        lambda pre_trained: [
            Entry("Padim-r18", "Padim", {"backbone": "resnet18", "layers": ["layer1", "layer2"], "pre_trained": pre_trained}),
            Entry("Broken", "Padim", {"backbone": "not_a_backbone", "pre_trained": pre_trained}),
        ],
        categories=("gravel",),
        studies=("thresholding", "factor_sweep"),
    )
    monkeypatch.setitem(suites.SUITES, "tiny", suite)
    monkeypatch.setattr(run, "SUITES", suites.SUITES)
    return "tiny"


def test_runner_writes_tables_figures_and_reports_failures(tiny_suite: str, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    args = ["--suite", tiny_suite, "--image-size", "64", "--no-pretrained", "--output", str(tmp_path), "--no-progress"]
    records = run.main(args)
    assert {(record.entry, record.status) for record in records} == {("Padim-r18", "ok"), ("Broken", "failed")}
    broken = next(record for record in records if record.entry == "Broken")
    assert "not_a_backbone" in broken.error
    ok = next(record for record in records if record.entry == "Padim-r18")
    assert 0.0 <= ok.metrics["image_AUROC"] <= 1.0
    assert ok.metrics["pixel_IoU"] is not None
    assert ok.fit_seconds > 0 and ok.ms_per_image_batch1 > 0 and ok.parameters > 0 and ok.peak_rss_mb > 0

    markdown = (tmp_path / "results.md").read_text()
    assert "| Padim-r18 |" in markdown and "Broken / gravel: " in markdown
    assert "DoubleThresholdMorphology" in markdown and "| Padim-r18 | 3.0 |" in markdown
    assert (tmp_path / "results.csv").read_text().count("\n") == 3
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["environment"]["seed"] == 0 and saved["environment"]["torch"]
    assert (tmp_path / "figures" / "Padim-r18__gravel.png").stat().st_size > 0
    assert (tmp_path / "figures" / "roc__gravel.png").stat().st_size > 0
    assert "| Padim-r18 |" in capsys.readouterr().out

    # Resume: the finished entry is skipped, the failed one is tried again.
    attempted = []
    original = run.run_entry
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(run, "run_entry", lambda entry, *a, **k: attempted.append(entry.name) or original(entry, *a, **k))
    try:
        resumed = run.main([*args, "--resume"])
    finally:
        monkeypatch.undo()
    assert attempted == ["Broken"]
    assert {record.entry for record in resumed} == {"Padim-r18", "Broken"}


@pytest.mark.parametrize("sweep", sorted(SWEEPS.glob("*.yaml")), ids=lambda path: path.stem)
def test_sweep_configs_parse_with_anomalib_benchmark(sweep: Path) -> None:
    from anomalib.pipelines.benchmark.generator import BenchmarkJobGenerator
    from anomalib.pipelines.benchmark.pipeline import Benchmark
    from anomalib.pipelines.components.utils import get_iterator_from_grid_dict

    config = yaml.safe_load(sweep.read_text())
    Benchmark._setup_runners({"accelerator": "cpu"})  # the accelerator key is what the pipeline reads first
    grid = list(get_iterator_from_grid_dict(config["benchmark"]))
    assert len(grid) >= 3
    if config["accelerator"] == "cpu":
        jobs = list(BenchmarkJobGenerator("cpu").generate_jobs(config["benchmark"], None))
        assert {type(job.model).__name__ for job in jobs} >= {"Padim", "Dfm", "Clgan"}
        assert {type(job.datamodule).__name__ for job in jobs} == {"SurfaceDemo"}
