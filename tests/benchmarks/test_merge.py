"""``--merge`` of the five claim studies: slices run apart (one ``--output`` per seed) make one study's tables.

Each study gets two fake slices (rows shaped as its run writes them, no fit, no dataset); the merged
``results.md`` must hold rows of both, the seeds present in the rows and the options of the stored commands
(not the merge command's defaults), and a row found in two slices must be an error naming both files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from benchmarks import clgan_study, dmp_ablation, locc_study, pgcn_study, report, tocoad_study
from benchmarks.runner import Record


def record(entry: str, category: str, seed: int, **values: Any) -> dict[str, Any]:  # noqa: ANN401
    """A runner record as ``results.json`` stores it."""
    return dataclasses.asdict(Record(entry, entry.split()[0], category, "ok", seed=seed, fit_seconds=1.0, **values))


def dmp_rows(seed: int) -> list[dict[str, Any]]:
    metrics = {"image_AUROC": 0.9, "pixel_AUROC": 0.8, "pixel_AUPRO": 0.7, "pixel_AP": 0.5 + 0.1 * seed}
    return [{"variant": variant, **record("Dmp", "brick", seed, metrics=metrics),
             "history": [{"epoch": 1, "train_loss": 0.5, "held_out_pixel_AP": 0.4}]}
            for variant in ("Dmp", "small kernels (5x5)")]


def clgan_rows(seed: int) -> list[dict[str, Any]]:
    return [{"arm": arm, "category": "brick", "seed": seed, "status": "ok", "pixel_F1": f1, "pixel_IoU": 0.3,
             "raw_pixel_AUROC": 0.8, "paper_k3.0_F1": 0.3, "paper_k2.0_F1": 0.2}
            for arm, f1 in ((clgan_study.CLGAN, 0.5 + 0.1 * seed), ("L1, clean", 0.4))]


def tocoad_rows(seed: int) -> list[dict[str, Any]]:
    raw = {"image_AUROC": 0.9, "pixel_AUROC": 0.8 + 0.1 * seed, "pixel_AUPRO": 0.7}
    return [{"backbone": "pretrained", **record(entry, "brick", seed, raw_metrics=raw),
             "history": [{"epoch": 0, "phase": "stage 1", "held_out_discriminator_AP": 0.6}]}
            for entry in ("Tocoad", tocoad_study.STAGE_2_OFF)]


def locc_rows(seed: int) -> list[dict[str, Any]]:
    raw = {"pixel_AUROC": 0.9, "pixel_AP": 0.4 + 0.1 * seed}
    return [{"data": "SurfaceDemo", **record(entry, "SurfaceDemo/washer", seed, raw_metrics=raw, ms_per_image_batch1=3.0),
             "category": "washer"}
            for entry in ("Locc map", "Locc vector")]


def pgcn_rows(seed: int) -> list[dict[str, Any]]:
    return [record(entry, category, seed, metrics={"seed": seed, "image_AUROC": 0.9, "pixel_AUROC": 0.8})
            for entry in ("Pgcn (intersection)", "Patchcore") for category in ("cloth/woven", "cloth/woven_to_plaid")]


@dataclasses.dataclass(frozen=True)
class Study:
    """A study, the list its results.json holds, its slices' rows and options, and what the merged text must say."""

    module: ModuleType
    field: str
    rows: Callable[[int], list[dict[str, Any]]]
    options: str
    expected: tuple[str, ...]


STUDIES = {
    "dmp_ablation": Study(dmp_ablation, "runs", dmp_rows, "--epochs 2 --image-size 32",
                          ("SurfaceDemo brick, 32 px, 2 epochs at batch 8, seeds 0, 1;", "| Dmp | 2 | 90.0 ± 0.0 |",
                           "| small kernels (5x5) | 2 |")),
    "clgan_study": Study(clgan_study, "rows", clgan_rows, "--categories brick --epochs 2 --image-size 32",
                         ("Categories brick, seeds 0, 1, 32 px, 2 epochs per arm", "| L1, clean | +15.0 [-48.5, +78.5] |")),
    "tocoad_study": Study(tocoad_study, "runs", tocoad_rows, "--categories brick --backbones pretrained --epochs 2",
                          ("SurfaceDemo brick, 128 px, seeds 0, 1; every Tocoad row 2 epochs", "| Tocoad (2 runs) |",
                           f"| {tocoad_study.STAGE_2_OFF} (2 runs) |")),
    "locc_study": Study(locc_study, "runs", locc_rows, "--categories washer --data SurfaceDemo --imm-epochs 2 --alm-epochs 3",
                        ("SurfaceDemo washer (SurfaceDemo), 128 px, batch 32, seeds 0, 1; Locc: 2 alignment + 1 + 3",
                         "| SurfaceDemo | Locc map | 2 |", "| SurfaceDemo | Locc vector | 2 |")),
    "pgcn_study": Study(pgcn_study, "records", pgcn_rows, "--patterns woven plaid --epochs 2 --image-size 32",
                        ("Patterns woven, plaid of material `cloth`, seeds 0, 1, 32 px", "other models 2 epochs",
                         "| Pgcn (intersection) | 90.0 | 90.0 |", "| Patchcore | 90.0 | 90.0 |")),
}


def write_slice(directory: Path, study: Study, seed: int, device: str, options: str | None = None) -> str:
    """A run's ``results.json`` in ``directory``: the rows of ``seed``, the command and an environment on ``device``."""
    command = f"python -m {study.module.__name__} --seeds {seed} {options or study.options} --output {directory}"
    environment = {"torch": "2.14.1", "device": device, "seeds": [seed]}
    report.write_json(directory, command, environment, study.field, study.rows(seed))
    return str(directory)


@pytest.mark.parametrize("name", STUDIES)
def test_merge_writes_one_study_from_slices_and_rejects_a_row_found_twice(tmp_path: Path, name: str) -> None:
    study = STUDIES[name]
    slices = [write_slice(tmp_path / f"seed{seed}", study, seed, device) for seed, device in ((0, "cpu"), (1, "cuda"))]
    output = tmp_path / "merged"

    rows = study.module.main(["--merge", *slices, "--output", str(output)])

    assert len(rows) == 2 * len(study.rows(0))
    text = (output / "results.md").read_text()
    assert "(merged from 2 runs)" in text
    assert f"Command: `python -m {study.module.__name__} --merge {slices[0]} {slices[1]} --output {output}`" in text
    for seed, directory in enumerate(slices):
        assert f"- `{directory}`: `python -m {study.module.__name__} --seeds {seed} " in text
    assert "Environment (of the first run): torch 2.14.1, device cpu, seeds [0, 1]" in text
    assert "The runs' environments differ: device cpu / cuda" in text
    for expected in study.expected:
        assert expected in text
    saved = json.loads((output / "results.json").read_text())
    assert len(saved[study.field]) == len(rows)
    assert [source["directory"] for source in saved["sources"]] == slices

    again = write_slice(tmp_path / "seed0 again", study, 0, "cpu")
    with pytest.raises(ValueError, match=r"in both .*seed0/results\.json and .*seed0 again/results\.json"):
        study.module.main(["--merge", *slices, again, "--output", str(tmp_path / "twice")])


def test_merge_rejects_runs_of_different_settings_and_merged_runs(tmp_path: Path) -> None:
    study = STUDIES["dmp_ablation"]
    first = write_slice(tmp_path / "a", study, 0, "cpu")
    longer = write_slice(tmp_path / "b", study, 1, "cpu", options="--epochs 3 --image-size 32")
    with pytest.raises(ValueError, match=r"differ in --epochs: 2 in .*a, 3 in .*b"):
        dmp_ablation.main(["--merge", first, longer, "--output", str(tmp_path / "merged")])

    clgan_slices = []
    for seed, (nce, arm) in enumerate(((1.0, clgan_study.CLGAN), (0.1, clgan_study.CLGAN), (0.1, "L1, clean"))):
        rows = [{**clgan_rows(seed)[0], "arm": arm, "lambda_adv": 1.0, "lambda_nce": nce}]
        if arm == "L1, clean":  # an arm without the terms stores weights 0
            rows[0] |= {"lambda_adv": 0.0, "lambda_nce": 0.0}
        report.write_json(tmp_path / f"clgan{seed}", f"python -m benchmarks.clgan_study --seeds {seed}", {}, "rows", rows)
        clgan_slices.append(str(tmp_path / f"clgan{seed}"))
    with pytest.raises(ValueError, match=r"differ in --lambda-nce: \[0.1, 1.0\]"):
        clgan_study.main(["--merge", *clgan_slices, "--output", str(tmp_path / "merged")])
    clgan_study.main(["--merge", *clgan_slices[1:], "--output", str(tmp_path / "merged")])  # L1 merges with any weights
    assert "GAN and NCE weights 1 and 0.1 wherever an arm has the term" in (tmp_path / "merged" / "results.md").read_text()

    dmp_ablation.main(["--merge", first, "--output", str(tmp_path / "merged")])
    with pytest.raises(ValueError, match="is itself a merge"):
        dmp_ablation.main(["--merge", str(tmp_path / "merged"), "--output", str(tmp_path / "again")])
    with pytest.raises(FileNotFoundError, match="missing/results.json does not exist"):
        dmp_ablation.main(["--merge", str(tmp_path / "missing"), "--output", str(tmp_path / "again")])


def test_merge_reads_the_options_a_run_stored_not_the_current_defaults(tmp_path: Path) -> None:
    args = dmp_ablation.parse_args(["--seeds", "0", "--image-size", "32", "--output", str(tmp_path / "a")])
    dmp_ablation.write_results(dmp_rows(0), args, args.command, {"seeds": [0]})
    stored = json.loads((tmp_path / "a" / "results.json").read_text())["options"]
    assert stored["epochs"] == 150 and stored["image_size"] == 32, "defaults are stored too"

    data = json.loads((tmp_path / "a" / "results.json").read_text())
    data["options"]["epochs"] = 7  # as if the run had used another default than today's
    (tmp_path / "a" / "results.json").write_text(json.dumps(data))
    old = write_slice(tmp_path / "b", STUDIES["dmp_ablation"], 1, "cpu", options="--epochs 7 --image-size 32")
    dmp_ablation.main(["--merge", str(tmp_path / "a"), old, "--output", str(tmp_path / "merged")])
    assert "SurfaceDemo brick, 32 px, 7 epochs at batch 8, seeds 0, 1;" in (tmp_path / "merged" / "results.md").read_text()

    assert report.stored_options(argparse.Namespace(epochs=3, path=Path("x"), seeds=[0])) == {"epochs": 3, "seeds": [0]}
