"""The Dmp ablation's variants, held-out history and summary table (no training: the script's run is end to end)."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmarks import dmp_ablation
from benchmarks.convergence import HELD_OUT_AP


def test_each_variant_changes_one_option_and_the_draem_equivalent_matches_its_config() -> None:
    entries = {entry.name: entry for entry in dmp_ablation.variant_entries(pre_trained=False)}
    dmp = entries["Dmp"].init_args
    assert dmp["depth"] == 3, "large kernels on 32x32 and 16x16 maps at 128 px"
    for name, entry in entries.items():
        changed = {key for key, value in entry.init_args.items() if dmp.get(key, object()) != value}
        expected = set(dmp_ablation.VARIANTS[name])
        assert changed == expected, name
        assert len(changed) == (3 if name == "DRAEM-equivalent" else 0 if name == "Dmp" else 1), name
    config = yaml.safe_load(Path("configs/model/dmp_draem_equivalent.yaml").read_text())["model"]["init_args"]
    assert all(config[key] == value for key, value in dmp_ablation.DRAEM_EQUIVALENT.items())


def test_summary_table_means_confidence_intervals_and_paired_differences() -> None:
    def row(variant: str, seed: int, ap: float) -> dict:
        metrics = {"image_AUROC": 0.9, "pixel_AUROC": 0.8, "pixel_AUPRO": 0.7, "pixel_AP": ap}
        history = [{"held_out_pixel_AP": 0.4}, {"held_out_pixel_AP": 0.5}, {"held_out_pixel_AP": 0.5}]
        return {"variant": variant, "seed": seed, "status": "ok", "metrics": metrics, "history": history, "fit_seconds": 10.0}

    rows = [row("Dmp", 0, 0.5), row("Dmp", 1, 0.7), row("small kernels (5x5)", 0, 0.4), row("small kernels (5x5)", 1, 0.6)]
    table = dmp_ablation.summary_table(rows)
    dmp_line, small_line = table.splitlines()[2:]
    assert dmp_line.startswith("| Dmp | 2 | 90.0 ± 0.0 |") and "60.0 ± 127.1" in dmp_line
    assert small_line.startswith("| small kernels (5x5) | 2 |") and "50.0 ± 127.1" in small_line
    assert dmp_ablation.mean_ci([0.5]) == (0.5, None)


def test_claims_table_pairs_dmp_with_each_variant_by_seed_and_gives_a_verdict() -> None:
    def row(variant: str, seed: int, ap: float, auroc: float) -> dict:
        metrics = {"image_AUROC": auroc, "pixel_AUROC": 0.8, "pixel_AUPRO": 0.7, "pixel_AP": ap}
        history = [{"epoch": 1, HELD_OUT_AP: 0.1}, {"epoch": 2, HELD_OUT_AP: ap - 0.1}]  # the last epoch's counts
        return {"variant": variant, "seed": seed, "status": "ok", "metrics": metrics, "history": history}

    rows = [row("Dmp", 0, 0.50, 0.9), row("Dmp", 1, 0.70, 0.8), row("Dmp", 2, 0.60, 0.7),
            row("small kernels (5x5)", 0, 0.40, 0.9), row("small kernels (5x5)", 1, 0.61, 0.9),
            row("small kernels (5x5)", 2, 0.50, 0.6),
            row("DRAEM-equivalent", 0, 0.55, 0.9)]
    lines = {line.split(" | ")[0]: line for line in dmp_ablation.claims_table(rows).splitlines()[2:]}
    kernels = lines["| large kernels help (small kernels (5x5))"]
    assert kernels.count("+9.7 [") == 2, "mean of the per-seed differences 10, 9, 10 points: test and held-out AP"
    assert kernels.endswith("| reproduced | not reproduced (no significant difference) |")
    draem = lines["| Dmp beats DRAEM (the DRAEM-equivalent) (DRAEM-equivalent)"]
    assert "-5.0 (n=1)" in draem and "not testable here" in draem
    assert len(lines) == len(dmp_ablation.CLAIMS)
