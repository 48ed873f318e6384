"""benchmarks.slices: which slices of the protocol are missing, in what order they run, and the deadline."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import pytest

from benchmarks import results, slices
from benchmarks.record_store import RecordStore
from benchmarks.runner import Record

CATEGORIES = results.KINDS["textures"].categories


def stored(tmp_path, runs: list[Record]) -> RecordStore:
    store = RecordStore(tmp_path / "records", {"epochs": 10, "image_size": 128, "batch_size": 8})
    output = tmp_path / "earlier"
    output.mkdir()
    (output / "results.json").write_text(json.dumps({"environment": {}, "records": [dataclasses.asdict(run) for run in runs]}))
    store.add("textures", output / "results.json")
    return store


def run(entry: str, category: str, seed: int, fit_seconds: float) -> Record:
    return Record(entry, entry, category, "ok", raw_metrics={"image_AUROC": 0.5}, seed=seed, fit_seconds=fit_seconds, epochs=10)


def test_missing_slices_leave_out_stored_runs_and_put_unknown_then_long_ones_first(tmp_path) -> None:
    store = stored(tmp_path, [run("Padim", category, 0, 2.0) for category in CATEGORIES] + [run("Stfpm", CATEGORIES[0], 0, 30.0)])
    found = slices.missing_slices(store, ["textures"], ["Padim", "Stfpm", "Draem"], [0, 1])
    assert [(piece.model, piece.seed, piece.runs, piece.cost) for piece in found] == [
        ("Draem", 0, 3, math.inf), ("Draem", 1, 3, math.inf), ("Stfpm", 1, 3, 90.0), ("Stfpm", 0, 2, 60.0), ("Padim", 1, 3, 6.0),
    ]
    command = slices.slice_command(found[2], slices.parse_args(["--no-timing", "--output", "out"]))
    assert command[1:] == ["-m", "benchmarks.results", "--kinds", "textures", "--models", "Stfpm", "--seeds", "1", "--epochs", "10",
                           "--image-size", "128", "--batch-size", "8", "--accelerator", "auto", "--records", "benchmarks/records",
                           "--output", "out/textures__Stfpm__seed1", "--results", "out/textures__Stfpm__seed1/RESULTS.md",
                           "--no-progress", "--no-timing"]


def test_slices_run_in_turn_and_the_deadline_kills_the_running_one_keeping_its_finished_runs(tmp_path, monkeypatch) -> None:
    """Padim (long by its stored fit times) runs first and finishes; Draem's first slice stores one run, then hangs and
    is killed at --stop-after-minutes with that run collected and its checkpoint deleted; Draem's second slice never
    starts. A slice that ends normally has added its runs to the store itself (these fakes do not), so it is not
    collected again: Padim's runs of seeds 0 and 1 stay out of the store."""
    store = stored(tmp_path, [run("Padim", CATEGORIES[0], 2, 100.0), run("Draem", CATEGORIES[0], 2, 1.0)])

    def fake_command(piece, args):
        path = tmp_path / "out" / piece.name / piece.kind / "results.json"
        text = json.dumps({"environment": {}, "records": [dataclasses.asdict(run(piece.model, CATEGORIES[1], piece.seed, 5.0))]})
        hang = 600 if piece.model == "Draem" else 0
        script = ("import pathlib, sys, time; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True); p.write_text(sys.argv[2]);"
                  " (p.parent / 'model.ckpt').write_text('x'); time.sleep(float(sys.argv[3]))")
        return [sys.executable, "-c", script, str(path), text, str(hang)]

    reports = []
    monkeypatch.setattr(slices, "slice_command", fake_command)
    monkeypatch.setattr(results, "main", reports.append)
    lines = slices.main(["--jobs", "1", "--models", "Padim", "Draem", "--seeds", "0", "1", "--kinds", "textures",
                         "--stop-after-minutes", "0.1", "--poll-seconds", "0.05", "--records", str(tmp_path / "records"),
                         "--output", str(tmp_path / "out")])
    assert [line.split(" (")[0] for line in lines] == [
        "textures__Padim__seed0: finished", "textures__Padim__seed1: finished",
        "textures__Draem__seed0: killed at --stop-after-minutes", "textures__Draem__seed1: not started",
    ]
    assert sorted((r.entry, r.seed) for r in store.load("textures")) == [("Draem", 0), ("Draem", 2), ("Padim", 2)]
    assert reports[0][:3] == ["--report-only", "--records", str(tmp_path / "records")]
    assert [path.parent.name for path in (tmp_path / "out").rglob("*.ckpt")] == ["textures"] * 2, "Padim's two are kept"
    assert not list((tmp_path / "out" / "textures__Draem__seed0").rglob("*.ckpt"))


def test_jobs_and_threads_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        slices.parse_args(["--jobs", "0"])
    assert slices.parse_args(["--jobs", "1", "--threads", "3"]).threads == 3
