"""The Clgan claim-check study: its arms differ by one thing, its metrics and paired differences, one tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import clgan_study, convergence


def test_each_ablation_adds_one_term_and_clean_and_corrupted_arms_differ_only_in_the_inputs() -> None:
    arms = clgan_study.arms()
    weights = ("lambda_ssim", "lambda_adv", "lambda_nce")
    chain = [clgan_study.CLGAN if name == "+GAN+NCE" else f"{name}, clean" for name in clgan_study.TERMS]
    zero_weights = [sum(arms[name].get(weight, 1.0) == 0.0 for weight in weights) for name in chain]
    assert zero_weights == [3, 2, 1, 1, 0]  # L1, +SSIM, +GAN, +NCE, +GAN+NCE
    for name in clgan_study.TERMS:
        clean = arms[clgan_study.CLGAN if name == "+GAN+NCE" else f"{name}, clean"]
        corrupted = arms[f"{name}, corrupted"]
        assert {key: value for key, value in corrupted.items() if clean.get(key) != value} == {"corrupt_inputs": True}
    assert arms["UDCAE (conv AE, L1)"]["generator"] == "conv_ae"
    assert arms["VAE-SSIM"]["generator"] == "vae"


def test_the_chosen_gan_and_nce_weights_reach_every_arm_that_has_the_term() -> None:
    arms = clgan_study.arms(lambda_adv=0.1, lambda_nce=3.0)
    assert (arms[clgan_study.CLGAN]["lambda_adv"], arms[clgan_study.CLGAN]["lambda_nce"]) == (0.1, 3.0)
    for inputs in ("clean", "corrupted"):
        assert (arms[f"+GAN, {inputs}"]["lambda_adv"], arms[f"+GAN, {inputs}"]["lambda_nce"]) == (0.1, 0.0)
        assert (arms[f"+NCE, {inputs}"]["lambda_adv"], arms[f"+NCE, {inputs}"]["lambda_nce"]) == (0.0, 3.0)
        assert arms[f"+SSIM, {inputs}"]["lambda_adv"] == arms[f"+SSIM, {inputs}"]["lambda_nce"] == 0.0
    assert clgan_study.arms() == clgan_study.arms(**clgan_study.DEFAULT_WEIGHTS)  # Clgan's own defaults
    args = clgan_study.parse_args(["--lambda-adv", "0.1", "--lambda-nce", "3"])
    assert (args.lambda_adv, args.lambda_nce) == (0.1, 3.0)


def test_the_weights_with_the_best_mean_validation_ap_are_chosen() -> None:
    def row(adv: float, nce: float, seed: int, ap: float, status: str = "ok") -> dict:
        return {"lambda_adv": adv, "lambda_nce": nce, "category": "brick", "seed": seed, "status": status,
                "validation_pixel_AP": ap}

    rows = [row(0.1, 1.0, 0, 0.50), row(0.1, 1.0, 1, 0.30),  # mean 0.40
            row(1.0, 1.0, 0, 0.45), row(1.0, 1.0, 1, 0.41),  # mean 0.43: the best
            row(10.0, 1.0, 0, 0.90, status="failed")]  # failed runs do not count
    assert clgan_study.chosen_weights(rows) == {"lambda_adv": 1.0, "lambda_nce": 1.0}
    assert clgan_study.chosen_weights([row(1.0, 1.0, 0, 0.4, status="failed")]) is None


def test_segmentation_metrics_pool_pixels() -> None:
    truth = torch.zeros(1, 4, 4, dtype=torch.bool)
    truth[0, :2, :2] = True  # 4 defect pixels
    predicted = torch.zeros_like(truth)
    predicted[0, :2, :3] = True  # 4 hits, 2 false alarms
    metrics = clgan_study.segmentation_metrics(predicted, truth)
    assert metrics == pytest.approx({"Precision": 4 / 6, "Recall": 1.0, "Accuracy": 14 / 16, "F1": 0.8, "IoU": 4 / 6})


def test_claim_table_pairs_runs_by_category_and_seed() -> None:
    rows = [
        {"arm": arm, "category": "brick", "seed": seed, "status": "ok", "pixel_F1": f1, "pixel_IoU": f1 / 2,
         "raw_pixel_AUROC": 0.8, "paper_k3.0_F1": 0.3 + 0.01 * seed, "paper_k2.0_F1": 0.2}
        for seed in range(3)
        for arm, f1 in ((clgan_study.CLGAN, 0.5 + 0.01 * seed), ("L1, clean", 0.4))
    ]
    table = clgan_study.claim_table(rows, [clgan_study.CLGAN, "L1, clean"])
    assert table.splitlines()[2].startswith("| L1, clean | +11.0 [")  # three (category, seed) pairs: an interval
    assert "F1 at k = 3.0 minus k = 2.0 (claim: > 0): +11.0 [" in table


@pytest.mark.slow
def test_one_tiny_arm_runs_end_to_end(tmp_path: Path) -> None:
    args = clgan_study.parse_args(["--categories", "brick", "--seeds", "0", "--epochs", "2", "--image-size", "32",
                                  "--arms", "L1, clean", "--output", str(tmp_path), "--accelerator", "cpu"])
    (row,) = clgan_study.run_study(args)
    assert row["status"] == "ok", row.get("error")
    assert 0 <= row["paper_k2.0_F1"] <= 1 and 0 <= row["raw_pixel_AUROC"] <= 1
    assert [entry["epoch"] for entry in row["history"]] == [1, 2], "a convergence row per epoch"
    assert all(0 <= entry["held_out_pixel_AP"] <= 1 and entry["train_rec_loss"] > 0 for entry in row["history"])
    assert row["held_out_AP_last"] == row["history"][-1]["held_out_pixel_AP"]
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("## Clgan claim check") and "### Convergence: pixel AP of the raw maps" in text


@pytest.mark.slow
def test_weight_selection_scores_validation_images_and_never_touches_the_test_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import anomalib.data

    def no_test_set(self: object) -> None:
        raise AssertionError("the weight selection read the test set")

    monkeypatch.setattr(anomalib.data.SurfaceDemo, "test_dataloader", no_test_set)
    args = clgan_study.parse_args(["--select-weights", "--weight-grid", "0.1", "1", "--categories", "brick", "--seeds", "0",
                                  "--epochs", "1", "--image-size", "32", "--output", str(tmp_path), "--accelerator", "cpu"])
    rows = clgan_study.select_weights(args)
    assert [(row["lambda_adv"], row["lambda_nce"]) for row in rows] == [(0.1, 0.1), (0.1, 1.0), (1.0, 0.1), (1.0, 1.0)]
    assert all(row["status"] == "ok" for row in rows), [row.get("error") for row in rows]
    assert all(0 <= row["validation_pixel_AP"] <= 1 for row in rows)
    text = (tmp_path / "results.md").read_text()
    assert "Chosen (highest mean validation pixel_AP): `--lambda-adv " in text


def test_convergence_curves_leave_out_arms_whose_runs_recorded_no_history() -> None:
    history = [{"held_out_pixel_AP": 0.2, "train_rec_loss": 0.3}, {"held_out_pixel_AP": 0.4, "train_rec_loss": 0.1}]
    rows = [
        {"arm": clgan_study.CLGAN, "status": "ok", "history": history},
        {"arm": clgan_study.CLGAN, "status": "failed"},
        {"arm": "L1, clean", "status": "ok"},  # a run of a study made before the history was recorded
    ]
    assert convergence.histories(rows, "arm", [clgan_study.CLGAN, "L1, clean"]) == {clgan_study.CLGAN: [history]}
