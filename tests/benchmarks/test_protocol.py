"""Protocol maths: raw-map metrics, mean ± std, paired differences with Student-t intervals, verdicts, data properties."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from benchmarks import data_properties, results
from benchmarks.protocol import paired_difference, raw_map_metrics, summarise, verdict
from benchmarks.runner import Record


def test_paired_difference_matches_the_t_interval_by_hand() -> None:
    model = {("a", 0): 0.90, ("a", 1): 0.90, ("b", 0): 0.70, ("b", 1): 0.80, ("c", 0): 0.5}
    reference = {("a", 0): 0.80, ("a", 1): 0.84, ("b", 0): 0.60, ("b", 1): 0.75}  # ("c", 0) is not paired
    differences = np.array([0.10, 0.06, 0.10, 0.05])
    half_width = stats.t.ppf(0.975, 3) * differences.std(ddof=1) / 2
    result = paired_difference(model, reference)
    assert result.n == 4
    assert result.mean == pytest.approx(differences.mean())
    assert (result.low, result.high) == pytest.approx((differences.mean() - half_width, differences.mean() + half_width))
    assert result.significant and verdict(result) == "reproduced"
    assert verdict(result, claimed_sign=-1) == "not reproduced (opposite)"


def test_pairing_removes_category_variance_that_an_unpaired_comparison_keeps() -> None:
    """A constant +1 point gain over very different categories is significant when paired."""
    reference = {(category, seed): base for seed in range(3) for category, base in (("x", 0.5), ("y", 0.9))}
    model = {unit: value + 0.01 + 0.001 * unit[1] for unit, value in reference.items()}
    result = paired_difference(model, reference)
    assert result.low > 0
    assert summarise(list(model.values())).std > 0.2  # unpaired spread dwarfs the gain


def test_undecidable_cases() -> None:
    assert paired_difference({}, {}).n == 0
    single = paired_difference({("a", 0): 0.9}, {("a", 0): 0.8})
    assert single.n == 1 and math.isnan(single.low)
    assert verdict(single).startswith("not testable")
    noisy = paired_difference({("a", s): v for s, v in enumerate((0.9, 0.7, 0.8))}, {("a", s): 0.8 for s in range(3)})
    assert verdict(noisy) == "not reproduced (no significant difference)"
    assert str(summarise([0.5, 0.7])) == "60.0 ± 14.1" and str(summarise([float("nan")])) == "–"


def test_raw_map_metrics_of_perfect_and_inverted_maps() -> None:
    masks = np.zeros((4, 8, 8), dtype=bool)
    masks[2:, 2:5, 2:5] = True
    labels = masks.any(axis=(1, 2))
    maps = masks.astype(float) + 0.01 * np.random.default_rng(0).random(masks.shape)
    perfect = raw_map_metrics(labels.astype(float), labels, maps, masks)
    assert perfect == pytest.approx(dict.fromkeys(perfect, 1.0), abs=1e-3)
    # Raw distances far outside [0, 1] are ranked, not squashed by a sigmoid into ties.
    distances = raw_map_metrics(50 + labels + 0.1 * np.arange(4), labels, 40 + 20 * maps, masks)
    assert distances == pytest.approx(perfect, abs=1e-3)
    inverted = raw_map_metrics(-labels.astype(float), labels, -maps, masks)
    assert inverted["image_AUROC"] == pytest.approx(0.0) and inverted["pixel_AUROC"] < 0.01


def test_claims_and_kind_tables_from_records() -> None:
    """The claims table pools (kind, category, seed) units; missing ablations read 'not testable here'."""

    def record(entry: str, category: str, seed: int, auroc: float) -> Record:
        return Record(entry, entry, category, "ok", raw_metrics={"image_AUROC": auroc, "pixel_AUPRO": auroc},
                      metrics={"pixel_F1": auroc}, seed=seed, fit_seconds=1.0, epochs=1)

    records = [record(entry, "brick", seed, base + 0.01 * seed) for seed in range(3)
               for entry, base in (("Patchcore", 0.8), ("Tocoad", 0.9), ("Tocoad stage 2 off (frozen features)", 0.85))]
    table = results.claims_table({"textures": records})
    row = next(line for line in table.splitlines() if "stage-2" in line)
    assert row.endswith("| reproduced |") and "+5.0" in row
    assert "| Locc | image matching helps on RTO |" in table and "not testable here (not run)" in table
    partly = results.claims_table({"textures": [record(e, "brick", 0, 0.5) for e in ("Dmp", "Draem")]})
    assert "| Dmp beats Draem | textures (not yet: patterns, objects) |" in partly
    kind = results.kind_table(records)
    assert "| Tocoad | 91.0 ± 1.0 |" in kind and "ref." in kind and "+10.0 [+10.0, +10.0]" in kind


def test_cross_pattern_claims_separate_a_smaller_drop_from_a_better_score_on_the_other_pattern() -> None:
    """Pgcn drops less than Patchcore from the training pattern to another because it starts lower: the drop claim
    reads reproduced, the claim of a better score on the other pattern does not."""

    def record(entry: str, category: str, seed: int, auroc: float) -> Record:
        return Record(entry, entry, category, "ok", raw_metrics={"image_AUROC": auroc}, seed=seed, fit_seconds=1.0, epochs=1)

    wobble = (0.02, -0.02, 0.01)
    records = [record(entry, category, seed, auroc)
               for seed in range(3)
               for entry, category, auroc in (("Patchcore", "cloth/a", 0.9), ("Patchcore", "cloth/a_to_b", 0.6),
                                              ("Pgcn", "cloth/a", 0.7), ("Pgcn", "cloth/a_to_b", 0.6 + wobble[seed]))]
    table, drop, on_other = results.cross_pattern_table(records)
    assert "| Patchcore | 90.0 ± 0.0 | 60.0 ± 0.0 | 30.0 ± 0.0 |" in table and "| Pgcn | 70.0 ± 0.0 | 60.3 ± 2.1 | 9.7 ± 2.1 |" in table
    assert (drop.n, on_other.n) == (3, 3) and drop.mean == pytest.approx(-0.2033, abs=1e-4)
    claims = results.claims_table({"cross_pattern": records})
    assert "| Pgcn | loses less than Patchcore across patterns | cross_pattern | raw_image_AUROC drop | Pgcn drop − Patchcore drop: -20.3" in claims
    beats = next(line for line in claims.splitlines() if "beats Patchcore on another pattern" in line)
    assert "+0.3 [" in beats and beats.endswith("| not reproduced (no significant difference) |")


def test_data_properties_tell_patterns_from_textures() -> None:
    """A periodic pattern autocorrelates at its period, a stochastic texture does not; layouts lower centre cosine."""
    from anomalib_surface.data.surface_categories import CATEGORIES
    from anomalib_surface.data.surface_demo import SurfaceDemoSettings, generate_surface_samples

    settings = SurfaceDemoSettings(image_size=64, num_train=6, num_test_good=1, num_test_defect_per_type=1)

    def gray(category: str) -> np.ndarray:
        images = [s.image for s in generate_surface_samples(category, settings) if s.split == "train"]
        return np.stack(images).astype(float).mean(axis=-1)

    plaid = data_properties.periodicity(gray("cloth/plaid"), CATEGORIES["cloth/plaid"].period * 64)
    grass = data_properties.periodicity(gray("grass"), None)
    assert plaid["autocorrelation_at_period"] > 0.5 > grass["max_autocorrelation"]
    uniform = torch.ones(5, 4, 3, 3)
    laid_out = torch.zeros(5, 4, 3, 3)
    laid_out[:, 0, 0, 0] = laid_out[:, 1, 2, 2] = 1.0
    laid_out += 0.01
    assert data_properties.centre_similarity(uniform) == pytest.approx(1.0)
    assert data_properties.centre_similarity(laid_out) < 0.9


def test_collect_writes_results_and_keeps_the_hand_maintained_sections(tmp_path, monkeypatch) -> None:
    """``--collect`` stores the finished runs of an --output and tables them, labels a subset, keeps what follows the
    marker; ``--report-only`` then writes the same tables from the store alone."""
    import dataclasses
    import json

    records = [Record(entry, entry, "brick", "ok", raw_metrics=dict.fromkeys(("image_AUROC", "pixel_AUPRO"), base + 0.01 * seed),
                      seed=seed, fit_seconds=2.0, epochs=1)
               for seed in range(2) for entry, base in (("Patchcore", 0.8), ("Padim", 0.7))]
    (tmp_path / "runs" / "textures").mkdir(parents=True)
    (tmp_path / "runs" / "textures" / "results.json").write_text(json.dumps({"records": [dataclasses.asdict(r) for r in records]}))
    target = tmp_path / "RESULTS.md"
    target.write_text(f"old tables\n{results.KEEP_MARKER}\n## Earlier studies\n")
    monkeypatch.setattr(data_properties, "measure", lambda image_size: [])
    monkeypatch.setattr(results, "use_offline_weights", lambda pretrained: None)
    store = ["--records", str(tmp_path / "records"), "--results", str(target), "--kinds", "textures"]
    results.main(["--collect", str(tmp_path / "runs"), *store])
    text = target.read_text()
    assert (tmp_path / "records" / "textures.json").is_file()
    results.main(["--report-only", *store])
    assert target.read_text().replace("--report-only", "--collect " + str(tmp_path / "runs")) == text
    assert "old tables" not in text and text.endswith(f"{results.KEEP_MARKER}\n## Earlier studies\n")
    assert "SUBSET" in text and "| Padim | 70.5 ± 0.7 |" in text and "-10.0 [" in text
    # 3 categories x 3 seeds per entry, 2 runs of Padim and Patchcore in: the header names what is not in yet
    assert "**Incomplete: 4 of " in text and "textures: Clgan 9, Dmp 9," in text and "Padim 7" in text
    assert "Tocoad 7, Locc 17, Pgcn 30" in text and "| 2.0 | 1 | 2/9 |" in text


def stored_run(entry: str, seed: int, auroc: float, machine: str | None = None, status: str = "ok") -> Record:
    return Record(entry, entry, "brick", status, raw_metrics={"image_AUROC": auroc}, seed=seed, fit_seconds=float(seed + 1),
                  epochs=1, machine=machine)


def write_output(path, records: list[Record], gpu: str | None = None):
    import dataclasses
    import json

    path.mkdir(parents=True)
    environment = {"gpu": gpu, "torch_threads": 1, "cpu_count": 2}
    (path / "results.json").write_text(json.dumps({"environment": environment, "records": [dataclasses.asdict(r) for r in records]}))
    return path / "results.json"


def test_record_store_adds_runs_once_and_refuses_conflicts_and_other_protocols(tmp_path) -> None:
    """Finished runs are stored with their machine (from the environment when the record has none), failed runs are
    left out, adding the same runs again changes nothing, other figures for a stored run and another protocol are errors."""
    from benchmarks.record_store import RecordStore
    from benchmarks.report import machine

    store = RecordStore(tmp_path / "records", {"epochs": 10, "image_size": 128, "batch_size": 8})
    runs = [stored_run("Padim", 0, 0.7), stored_run("Padim", 1, 0.8, machine="elsewhere"), stored_run("Stfpm", 0, 0.5, status="failed")]
    first = write_output(tmp_path / "a", runs, gpu="NVIDIA H200")
    assert store.load("textures") == []
    assert store.add("textures", first) == (2, 1)
    assert [(r.seed, r.machine) for r in store.load("textures")] == [(0, "NVIDIA H200"), (1, "elsewhere")]
    assert store.add("textures", first) == (0, 1)
    on_cpu = write_output(tmp_path / "b", [stored_run("Padim", 2, 0.9)])
    assert store.add("textures", on_cpu) == (1, 0)
    assert store.load("textures")[-1].machine == "CPU, 1 thread(s) of 2 cores"
    assert machine({"gpu": None, "cpu": "AMD EPYC", "torch_threads": 2, "cpu_count": 2}) == "AMD EPYC, 2 thread(s) of 2 cores"
    conflicting = write_output(tmp_path / "c", [stored_run("Padim", 0, 0.1, machine="NVIDIA H200")])
    with pytest.raises(ValueError, match=r"run \('Padim', 'brick', 0\) is already in .*textures.json with other figures"):
        store.add("textures", conflicting)
    other = RecordStore(tmp_path / "records", {"epochs": 20, "image_size": 128, "batch_size": 8})
    with pytest.raises(ValueError, match="holds runs of the protocol .* give another --records folder"):
        other.load("textures")


def test_stored_runs_are_not_run_again_and_unknown_collect_folders_are_refused(tmp_path, monkeypatch) -> None:
    """A protocol run skips the runs in the store and adds its own; --collect of a folder without results is an error."""
    from benchmarks import run
    from benchmarks.record_store import RecordStore

    store = RecordStore(tmp_path / "records", {"epochs": 10, "image_size": 128, "batch_size": 8})
    store.add("textures", write_output(tmp_path / "earlier", [stored_run("Padim", 0, 0.7)]))
    skipped = {}

    def fake_run_suite(args, suite, skip):
        skipped.update(dict.fromkeys(skip))
        write_output(Path(args.output), [stored_run("Padim", 1, 0.8)])

    monkeypatch.setattr(run, "run_suite", fake_run_suite)
    monkeypatch.setattr(data_properties, "measure", lambda image_size: [])
    monkeypatch.setattr(results, "use_offline_weights", lambda pretrained: None)
    common = ["--records", str(tmp_path / "records"), "--results", str(tmp_path / "R.md"), "--kinds", "textures", "--models", "Padim"]
    results.main(["--output", str(tmp_path / "out"), *common])
    assert list(skipped) == [("Padim", "brick", 0)]
    assert [r.seed for r in store.load("textures")] == [0, 1]
    with pytest.raises(SystemExit, match="--collect .*nothing: no <kind>/results.json in it for --kinds textures"):
        results.main(["--collect", str(tmp_path / "nothing"), *common])


def test_fit_seconds_are_compared_within_one_machine_only() -> None:
    """The fit s cell splits by machine where an entry ran on several; fit-time pairs need the same machine."""
    runs = [stored_run("Locc", seed, 0.9, machine="CPU") for seed in range(2)] + [stored_run("Locc", 2, 0.9, machine="GPU")]
    runs += [stored_run("Padim", seed, 0.9, machine="CPU" if seed == 0 else "GPU") for seed in range(3)]
    assert results.fit_seconds_cell([r for r in runs if r.entry == "Locc"]) == "1.5 (CPU); 3.0 (GPU)"
    assert results.fit_seconds_cell(runs[:2]) == "1.5"
    locc, padim = results.by_unit(runs, "Locc", "fit_seconds"), results.by_unit(runs, "Padim", "fit_seconds")
    assert sorted(locc.keys() & padim.keys()) == [("brick", 0, "CPU"), ("brick", 2, "GPU")]
    assert results.machines_line(runs) == "CPU (3 runs); GPU (3 runs)"
