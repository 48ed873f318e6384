"""What each SurfaceDemo category tests, measured on its training images.

- ``periodicity``: the normalised autocorrelation of the grey image at a horizontal lag of one period
  (patterns), and the highest autocorrelation at any horizontal lag from 8 px to half the side (all
  categories). Periodic patterns repeat (close to 1); stochastic textures do not (close to 0).
- ``alignment``: the per-position feature centres (mean over the training images of the backbone
  feature at each position) compared with their mean: the mean cosine similarity is close to 1 when
  every position looks alike (no layout; a per-position model degenerates to one centre), lower when
  parts sit at fixed positions (aligned objects).
"""

from __future__ import annotations

import numpy as np
import torch

MIN_LAG = 8


def autocorrelation(gray: np.ndarray) -> np.ndarray:
    """Mean circular autocorrelation ``(H, W)`` of ``(N, H, W)`` grey images, 1 at lag 0."""
    centred = gray - gray.mean(axis=(1, 2), keepdims=True)
    spectrum = np.fft.rfft2(centred)
    correlation = np.fft.irfft2(np.abs(spectrum) ** 2, s=gray.shape[1:])
    return (correlation / correlation[:, :1, :1]).mean(axis=0)


def periodicity(gray: np.ndarray, period: float | None) -> dict[str, float]:
    """Autocorrelation at ``period`` px along x (``nan`` without a period) and the highest at lags >= 8 px."""
    row = autocorrelation(gray)[0]
    half = gray.shape[2] // 2
    at_period = float("nan")
    if period is not None:
        low = int(np.floor(period))
        weight = period - low
        at_period = float((1 - weight) * row[low] + weight * row[low + 1])
    return {"autocorrelation_at_period": at_period, "max_autocorrelation": float(row[MIN_LAG : half + 1].max())}


def centre_similarity(features: torch.Tensor) -> float:
    """Mean cosine similarity of the per-position centres of ``(N, C, h, w)`` features to their mean."""
    centres = features.mean(dim=0).flatten(1).T  # (h * w, C)
    mean = centres.mean(dim=0, keepdim=True)
    return float(torch.nn.functional.cosine_similarity(centres, mean, dim=1).mean())


def backbone_features(images: np.ndarray, backbone: str = "tf_efficientnet_lite0", stage: int = 2) -> torch.Tensor:
    """``(N, C, h, w)`` ImageNet-pretrained features of ``(N, H, W, 3)`` uint8 images (stride 8 at ``stage=2``)."""
    import timm

    model = timm.create_model(backbone, pretrained=True, features_only=True, out_indices=(stage,)).eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    batch = (torch.from_numpy(images).float() / 255 - mean) / std
    with torch.no_grad():
        return model(batch.permute(0, 3, 1, 2))[0]


def measure(image_size: int = 128, num_images: int = 60) -> list[dict[str, object]]:
    """One row per SurfaceDemo category: kind, periodicity and alignment of its training images."""
    from anomalib_surface.data.surface_categories import CATEGORIES
    from anomalib_surface.data.surface_demo import SurfaceDemoSettings, generate_surface_samples

    settings = SurfaceDemoSettings(image_size=image_size, num_train=num_images, num_test_good=1, num_test_defect_per_type=1)
    rows = []
    for name, category in CATEGORIES.items():
        images = np.stack([sample.image for sample in generate_surface_samples(name, settings) if sample.split == "train"])
        gray = images.astype(np.float64).mean(axis=-1)
        period = category.period * image_size if category.period is not None else None
        rows.append({
            "category": name,
            "kind": category.kind,
            "period_px": period,
            **periodicity(gray, period),
            "centre_cosine": centre_similarity(backbone_features(images)),
        })
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    """The rows as a Markdown table."""

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "–"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    columns = ("category", "kind", "period_px", "autocorrelation_at_period", "max_autocorrelation", "centre_cosine")
    lines = ["| " + " | ".join(columns) + " |", "|---|---|" + "---:|" * (len(columns) - 2)]
    lines += ["| " + " | ".join(cell(row[key]) for key in columns) + " |" for row in rows]
    return "\n".join(lines)
