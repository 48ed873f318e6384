"""The benchmark runner on a tiny dataset, failure reporting, resume, and the anomalib benchmark sweeps."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
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
    args = ["--suite", tiny_suite, "--image-size", "64", "--no-pretrained", "--output", str(tmp_path), "--no-progress",
            "--demo-counts", "8", "4", "2"]
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
    assert saved["environment"]["seeds"] == [0] and saved["environment"]["torch"]
    assert (tmp_path / "figures" / "Padim-r18__gravel__seed0.png").stat().st_size > 0
    assert saved["records"][0]["raw_metrics"].keys() >= {"image_AUROC", "pixel_AUPRO"}
    assert (tmp_path / "figures" / "roc__gravel.png").stat().st_size > 0
    assert "| Padim-r18 |" in capsys.readouterr().out
    assert list((tmp_path / "runs" / "Padim-r18").rglob("*.ckpt"))  # kept by default

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


def test_no_checkpoints_deletes_each_runs_checkpoint_and_keeps_its_size(tiny_suite: str, tmp_path: Path) -> None:
    (record,) = run.main(["--suite", tiny_suite, "--models", "Padim-r18", "--image-size", "64", "--no-pretrained",
                          "--output", str(tmp_path), "--no-progress", "--no-timing", "--no-figures", "--no-checkpoints",
                          "--demo-counts", "8", "4", "2"])
    assert record.status == "ok" and record.checkpoint_mb > 0
    assert record.epochs == 1  # anomalib's Padim fixes its single pass, whatever --epochs says
    assert (tmp_path / "runs" / "Padim-r18").is_dir()
    assert not list(tmp_path.rglob("*.ckpt"))


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


def test_pgcn_study_builds_its_entries_datamodules_and_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from anomalib_surface.post_processing import BidirectionalIntersection
    from benchmarks import pgcn_study
    from benchmarks.runner import Record, build_model

    args = pgcn_study.parse_args(["--patterns", "woven", "plaid", "--image-size", "64", "--no-pretrained"])
    assert (args.data, args.material, args.seeds) == ("TextureFolder", "cloth", [0, 1, 2])
    assert pgcn_study.parse_args([]).patterns == ["woven", "plaid", "motif"]
    with pytest.raises(SystemExit):
        pgcn_study.parse_args(["--patterns", "woven", "woven"])
    assert pgcn_study.parse_args([]).train_patterns is None  # every pattern is a training pattern
    assert pgcn_study.parse_args(["--train-patterns", "plaid"]).train_patterns == ["plaid"]
    with pytest.raises(SystemExit):
        pgcn_study.parse_args(["--patterns", "woven", "plaid", "--train-patterns", "motif"])

    pgcn, patchcore = pgcn_study.study_entries(pre_trained=False)
    assert (pgcn.model, patchcore.model) == ("Pgcn", "Patchcore")
    assert [variant.direction for variant in pgcn_study.VARIANTS["Pgcn"]] == ["both", "left_to_right", "right_to_left"]
    assert build_model(pgcn, image_size=128).model.direction == "both"
    (pretrained_pgcn, _) = pgcn_study.study_entries(pre_trained=False, generator_weights="generator.pt")
    assert pretrained_pgcn.init_args["generator_weights_path"] == "generator.pt"
    longer = pgcn_study.parse_args(["--pgcn-epochs", "24", "66"]).pgcn_epochs
    (longer_pgcn, _) = pgcn_study.study_entries(pre_trained=False, pgcn_epochs=longer)
    assert longer_pgcn.init_args == {**pgcn.init_args, "generator_ratio": 24 / 90}
    assert longer_pgcn.max_epochs == 90
    model = build_model(longer_pgcn, image_size=128)
    assert model.phase_schedule.epochs(longer_pgcn.max_epochs) == {"generator": 24, "comparator": 66}
    assert isinstance(pgcn_study.instantiate_post_processor(pgcn_study.INTERSECTION), BidirectionalIntersection)

    # Without --root the collection is SurfaceDemo's root: its pattern categories are material/pattern folders.
    same, cross = (pgcn_study.pattern_category("cloth", "woven", test) for test in ("woven", "plaid"))
    assert (same, cross) == ("cloth/woven", "cloth/woven_to_plaid")
    for category, test_pattern in ((same, "woven"), (cross, "plaid")):
        datamodule = suites.build_datamodule(args, category)
        datamodule.setup()
        assert datamodule.category == category
        assert set(datamodule.train_data.samples.pattern) == {"woven"}
        assert set(datamodule.test_data.samples.pattern) == {test_pattern}
        assert datamodule.test_data.samples.mask_path.notna().any()
    with pytest.raises(SystemExit, match="material/pattern"):
        suites.build_datamodule(args, "brick")

    def record(entry: str, category: str, auroc: float) -> Record:
        return Record(entry, "Pgcn", category, "ok", metrics={"image_AUROC": auroc})

    records = [record("Pgcn", cross, 0.25), record("Pgcn", same, 0.5), record("Pgcn", cross, 0.75)]
    assert pgcn_study.pair_table(records, "image_AUROC").splitlines()[::2] == [
        "| model | woven | woven → plaid |",
        "| Pgcn | 50.0 | 50.0 |",
    ]
    markdown = pgcn_study.markdown(records, args, "python -m benchmarks.pgcn_study", {"seed": 0})
    same_table, cross_table = markdown.split("### Cross pattern")[0], markdown.split("### Cross pattern")[1]
    assert "| Pgcn | 50.0 |" in same_table and "| Pgcn | 50.0 |" in cross_table
    assert "each model: Pgcn 1)" in same_table and "each model: Pgcn 2)" in markdown.split("### Cross pattern")[1]


def test_pgcn_study_pairs_differences_by_seed_and_pattern() -> None:
    from benchmarks import pgcn_study
    from benchmarks.runner import Record

    def record(entry: str, train: str, test: str, seed: int, auroc: float) -> Record:
        category = pgcn_study.pattern_category("cloth", train, test)
        return Record(entry, entry.split()[0], category, "ok", metrics={"seed": seed, "image_AUROC": auroc})

    records = []
    for seed, (train, test) in itertools.product((0, 1), (("a", "b"), ("b", "a"))):
        records += [
            record("Pgcn (intersection)", train, train, seed, 0.9),
            record("Pgcn (intersection)", train, test, seed, 0.8 + 0.01 * seed),
            record("Pgcn left to right", train, train, seed, 0.85),
            record("Pgcn left to right", train, test, seed, 0.8),
            record("Patchcore", train, train, seed, 0.95), record("Patchcore", train, test, seed, 0.5),
        ]
    drops = pgcn_study.cross_pattern_drops(records, "Patchcore", "image_AUROC")
    assert sorted(drops) == [(seed, train, f"cloth/{train}_to_{test}") for seed in (0, 1) for train, test in ("ab", "ba")]
    assert all(abs(drop + 0.45) < 1e-9 for drop in drops.values())
    table = pgcn_study.claim_table(records)
    assert "| Pgcn drop - Patchcore drop, image_AUROC (claim: > 0) | 4 | +35.5 [+34.6, +36.4] |" in table
    assert "| Pgcn intersection - left to right, image_AUROC | 8 |" in table


def test_pgcn_study_ranks_unnormalised_outputs_without_saturation() -> None:
    """Scores far outside [0, 1] (a sigmoid would tie them all) still rank; normalisation is restored afterwards."""
    from types import SimpleNamespace

    from benchmarks import pgcn_study

    labels = torch.tensor([0, 1, 0, 1])
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[1, :2] = masks[3, :2] = True
    maps = masks.float() * 0.5 + 1e4  # raw, far above 1: a sigmoid would make every pixel 1.0
    scores = labels.float() + 1e4
    test_batch = SimpleNamespace(image=torch.zeros(4, 3, 8, 8), gt_mask=masks, gt_label=labels)
    datamodule = SimpleNamespace(test_dataloader=lambda: [test_batch])
    post_processor = SimpleNamespace(enable_normalization=True)
    seen = []

    def predict(model: object, datamodule: object, return_predictions: bool) -> list:  # noqa: ARG001
        seen.append(model.post_processor.enable_normalization)
        return [SimpleNamespace(pred_score=scores[:2], anomaly_map=maps[:2]), SimpleNamespace(pred_score=scores[2:], anomaly_map=maps[2:])]

    metrics = pgcn_study.ranking_metrics(
        SimpleNamespace(predict=predict), SimpleNamespace(post_processor=post_processor), datamodule,
    )
    assert seen == [False] and post_processor.enable_normalization
    assert metrics["image_AUROC"] == pytest.approx(1.0)
    assert metrics["pixel_AUROC"] == pytest.approx(1.0)
    post_processor.enable_normalization = False  # a variant that predicts unnormalised stays so
    pgcn_study.ranking_metrics(SimpleNamespace(predict=predict), SimpleNamespace(post_processor=post_processor), datamodule)
    assert seen == [False, False] and post_processor.enable_normalization is False
