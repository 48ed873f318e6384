"""Benchmark suites: which model configurations run side by side, on which data.

Every model with a pretrained backbone, plugin and baseline alike, gets the same one:
``tf_efficientnet_lite0`` (the only ImageNet weights available offline here, see
:mod:`anomalib_surface.utils.offline_weights`); ``--no-pretrained`` repeats a suite with
``pre_trained=False`` everywhere it is an option (anomalib's Stfpm has none: its teacher is always
pretrained). Plugin models run in their CPU presets (small widths, few epochs per phase) so that the
``demo`` suite finishes in about an hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from anomalib.data import AnomalibDataModule

from .runner import Entry

BACKBONE = "tf_efficientnet_lite0"


def _kind(kind: str) -> tuple[str, ...]:
    from anomalib_surface.data.surface_categories import CATEGORIES

    return tuple(name for name, category in CATEGORIES.items() if category.kind == kind)


SURFACE_DEMO_CATEGORIES = _kind("texture")
PATTERN_CATEGORIES = _kind("pattern")
OBJECT_CATEGORIES = _kind("object")
# Photographs shipped with scikit-image that are not SurfaceDemo textures: the anomaly-source folder
# ("DTD substitute") of models that require one, such as anomalib's Draem, which would otherwise download DTD.
ANOMALY_SOURCE_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "coins", "hubble_deep_field",
                         "immunohistochemistry", "moon", "page", "rocket", "text", "clock", "colorwheel", "cell")
ANOMALY_SOURCE = Path("benchmarks/output/anomaly_source")
LOCC_ALIGNMENT_EPOCHS = 8
LOCC_LOCALISATION_EPOCHS = 8
"""Epochs of the two trained phases of the Locc preset (the centres pass takes one more)."""


def anomaly_source_folder(folder: Path = ANOMALY_SOURCE) -> Path:
    """Write :data:`ANOMALY_SOURCE_IMAGES` as PNGs into ``folder`` (once) and return it."""
    from anomalib_surface.components.photo_textures import write_photos

    return write_photos(ANOMALY_SOURCE_IMAGES, folder)


def baselines(pre_trained: bool) -> list[Entry]:
    """anomalib's Patchcore, Padim, Draem and Stfpm on the shared backbone."""
    return [
        Entry("Patchcore", "Patchcore", {"backbone": BACKBONE, "layers": ["blocks.2", "blocks.4"], "pre_trained": pre_trained}),
        Entry(
            "Padim",
            "Padim",
            {"backbone": BACKBONE, "layers": ["blocks.1", "blocks.2", "blocks.4"], "pre_trained": pre_trained, "n_features": 100},
        ),
        Entry("Draem", "Draem", {"dtd_dir": str(anomaly_source_folder())}),
        Entry("Stfpm", "Stfpm", {"backbone": BACKBONE, "layers": ["blocks.1", "blocks.2", "blocks.4"]}),
    ]


def clgan_entries(pre_trained: bool) -> list[Entry]:
    """Clgan, its ablations (no synthetic corruption; plain autoencoder: L1 only, no GAN, no PatchNCE)."""
    del pre_trained  # Clgan has no pretrained backbone
    preset = {"ngf": 32, "n_blocks": 4, "ndf": 32, "nce_layers": [0, 1, 2, 4, 6]}
    return [
        Entry("Clgan", "Clgan", {**preset, "corrupt_inputs": True}),
        Entry("Clgan-clean-inputs", "Clgan", {**preset, "corrupt_inputs": False}),
        Entry("Clgan-AE (L1 only)", "Clgan", {**preset, "corrupt_inputs": True, "lambda_adv": 0.0, "lambda_nce": 0.0, "lambda_ssim": 0.0}),
        Entry("Clgan-AE-clean-inputs", "Clgan", {**preset, "corrupt_inputs": False, "lambda_adv": 0.0, "lambda_nce": 0.0, "lambda_ssim": 0.0}),
    ]


def plugin_entries(pre_trained: bool) -> list[Entry]:
    """Every plugin model in its CPU preset (128 px, small widths, phase epochs sized for ~2 minutes)."""
    return [
        clgan_entries(pre_trained)[0],
        Entry(
            "Dmp",
            "Dmp",
            {
                "reconstruction_width": 16,
                "prediction_width": 16,
                "depth": 3,
                "score_filter_size": 11,
                "learning_rate": 1e-3,
                "anomaly_source_path": str(anomaly_source_folder()),  # Draem's source too
            },
        ),
        Entry(
            "Tocoad",
            "Tocoad",
            {
                "backbone": BACKBONE,
                "layers": ["blocks.2", "blocks.4"],
                "pre_trained": pre_trained,
                "discriminator_ratio": 0.5,
                "discriminator_channels": 64,
                "projector_dim": 256,
                "predictor_hidden_dim": 64,
            },
            max_epochs=7,  # 3 stage-1 + 3 stage-2 epochs + the memory-bank pass
        ),
        Entry(
            "Locc",
            "Locc",
            # The residual start at learning_rate 1e-4 (configs/model/locc_cpu.yaml), not the paper's scratch start at
            # 1e-3: on 8 localisation epochs it keeps the frozen features' quality (see the Locc README).
            {"backbone": BACKBONE, "pre_trained": pre_trained, "alignment_ratio": 0.5, "learning_rate": 1e-4,
             "mapping_start": "residual", "imm_channels": [16, 32, 64]},
            max_epochs=LOCC_ALIGNMENT_EPOCHS + 1 + LOCC_LOCALISATION_EPOCHS,
        ),
        Entry(
            "Pgcn",
            "Pgcn",
            {
                "image_size": [128, 128],
                "grid_size": 8,
                "patch_size": 2,
                "window_size": 4,
                "embed_dim": 24,
                "depths": [1, 1, 2, 1],
                "generator_ratio": 8 / 30,
            },
            max_epochs=30,  # 8 generator + 22 comparator epochs
        ),
    ]



def tocoad_entries(pre_trained: bool) -> list[Entry]:
    """Tocoad, its ablations (stage-2 fine-tuning off; stage-1 negative guidance off; longer stage 2) and Patchcore."""
    (tocoad,) = [entry for entry in plugin_entries(pre_trained) if entry.name == "Tocoad"]
    variants = {
        "Tocoad stage 2 off (frozen features)": ({"discriminator_ratio": 1.0}, 4),
        "Tocoad stage 1 off (SimSiam only)": ({"discriminator_ratio": 0.0, "negative_weight": 0.0}, 4),
        "Tocoad stage 2 x3 (9 epochs)": ({"discriminator_ratio": 0.25}, 13),
    }
    ablations = [
        dataclasses.replace(tocoad, name=name, init_args={**tocoad.init_args, **change}, max_epochs=epochs)
        for name, (change, epochs) in variants.items()
    ]
    patchcore = [entry for entry in baselines(pre_trained) if entry.model == "Patchcore"]
    return [tocoad, *ablations, *patchcore]


def locc_entries(pre_trained: bool) -> list[Entry]:
    """Locc with and without its image matching (IMM) and defect generation (DGM) modules, Padim and Patchcore."""
    (locc,) = [entry for entry in plugin_entries(pre_trained) if entry.name == "Locc"]
    variants = {
        "Locc +IMM +DGM": {},
        "Locc +IMM -DGM": {"outlier_exposure": False},
        "Locc -IMM +DGM": {"align": False},
        "Locc -IMM -DGM": {"align": False, "outlier_exposure": False},
    }
    ablations = [
        dataclasses.replace(
            locc,
            name=name,
            init_args={**locc.init_args, **change},
            # Without the IMM the alignment epochs are not trained, as in the runs of benchmarks/RESULTS.md.
            max_epochs=locc.max_epochs if change.get("align", True) else 1 + LOCC_LOCALISATION_EPOCHS,
        )
        for name, change in variants.items()
    ]
    return ablations + [entry for entry in baselines(pre_trained) if entry.model in {"Padim", "Patchcore"}]


DMP_SUITE_EPOCHS = 25
"""Epoch budget of every entry of the ``dmp`` suite (5 steps each at 40 images, batch 8): about 25 minutes at
64 px on 2 busy cores, most of it Draem's."""


def dmp_entries(pre_trained: bool) -> list[Entry]:
    """Dmp, the paper's ablations (5x5 kernels; no feature consistency; gradient update), Draem and Patchcore."""
    (dmp,) = [entry for entry in plugin_entries(pre_trained) if entry.name == "Dmp"]
    variants = {
        "Dmp": {},
        "Dmp small kernels (5x5)": {"kernel_size": 5},
        "Dmp no feature consistency": {"feature_consistency": False},
        "Dmp gradient update": {"feature_extractor": "gradient"},
    }
    ablations = [dataclasses.replace(dmp, name=name, init_args={**dmp.init_args, **change}) for name, change in variants.items()]
    baseline = [entry for entry in baselines(pre_trained) if entry.model in {"Draem", "Patchcore"}]
    return [dataclasses.replace(entry, max_epochs=DMP_SUITE_EPOCHS) for entry in ablations + baseline]


def main_entries(pre_trained: bool) -> list[Entry]:
    """The five plugin models and anomalib's Patchcore, Padim, Stfpm and Draem."""
    return plugin_entries(pre_trained) + baselines(pre_trained)


def claim_entries(pre_trained: bool) -> list[Entry]:
    """The ablations behind the papers' claims (``benchmarks.results.CLAIMS``), on top of :func:`main_entries`."""
    (clgan_ae,) = [entry for entry in clgan_entries(pre_trained) if entry.name == "Clgan-AE (L1 only)"]
    dmp = [entry for entry in dmp_entries(pre_trained) if entry.name != "Dmp"]
    (dmp_preset,) = [entry for entry in plugin_entries(pre_trained) if entry.name == "Dmp"]
    plain_synthesis = dataclasses.replace(
        dmp_preset,
        name="Dmp plain synthesis",
        init_args={**dmp_preset.init_args, "soft_edge_sigma": 0.0, "match_lighting": 0.0},
    )
    tocoad = [entry for entry in tocoad_entries(pre_trained) if entry.name == "Tocoad stage 2 off (frozen features)"]
    (locc,) = [entry for entry in plugin_entries(pre_trained) if entry.name == "Locc"]
    locc_variants = {"Locc one centre (vector)": {"center": "vector"}, "Locc -IMM": {"align": False},
                     "Locc -DGM": {"outlier_exposure": False}}
    locc_ablations = [dataclasses.replace(locc, name=name, init_args={**locc.init_args, **change}) for name, change in locc_variants.items()]
    # The suite's epoch budget applies to every entry alike, so the Dmp ablations drop the dmp suite's own.
    dmp = [dataclasses.replace(entry, max_epochs=None) for entry in [*dmp, plain_synthesis] if entry.model == "Dmp"]
    return [clgan_ae, *dmp, *tocoad, *locc_ablations]


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named set of entries, the categories they run on and the post-processing studies to add."""

    title: str
    build: Callable[[bool], list[Entry]]
    categories: tuple[str, ...] = SURFACE_DEMO_CATEGORIES
    studies: tuple[str, ...] = ()
    data: str = "SurfaceDemo"
    """``--data`` when the command line gives none."""

    def entries(self, pre_trained: bool) -> list[Entry]:
        return self.build(pre_trained)


SUITES = {
    "demo": Suite("Plugin models and anomalib baselines on SurfaceDemo", main_entries),
    "textures": Suite("Stochastic textures (SurfaceDemo)", main_entries),
    "patterns": Suite("Periodic patterns (SurfaceDemo cloth and leather)", main_entries, categories=PATTERN_CATEGORIES),
    "objects": Suite("Aligned objects (SurfaceDemo)", main_entries, categories=OBJECT_CATEGORIES),
    "objects_rto": Suite("Misaligned objects (MadRto of SurfaceDemo's objects)", main_entries, categories=OBJECT_CATEGORIES, data="MadRto"),
    "claims": Suite("Ablations behind the papers' claims", claim_entries),
    "tocoad": Suite("Tocoad: stage-2 fine-tuning vs frozen features, beside Patchcore on the same backbone", tocoad_entries),
    "locc": Suite("Locc ±IMM ±DGM on misaligned data (RTO variant), beside Padim and Patchcore", locc_entries, data="MadRto"),
    "dmp": Suite(
        "Dmp: large kernels, feature consistency, parameter copying; beside Draem and Patchcore at equal epochs",
        dmp_entries,
        categories=("brick",),
    ),
    "clgan": Suite(
        "Clgan: contrastive and adversarial terms vs a plain autoencoder, and Draem",
        lambda pt: clgan_entries(pt) + [entry for entry in baselines(pt) if entry.model in {"Draem", "Patchcore"}],
        studies=("thresholding", "factor_sweep"),
    ),
}


def surface_demo_collection(image_size: int) -> Path:
    """SurfaceDemo's root with its pattern categories built: a TextureFolder collection (``cloth``, ``leather``)."""
    from anomalib_surface.data.surface_demo import make_surface_demo

    return make_surface_demo(categories=PATTERN_CATEGORIES, image_size=image_size)


def texture_folder_datamodule(args: argparse.Namespace, category: str, seed: int, **loaders: int) -> AnomalibDataModule:
    """TextureFolder for ``material/pattern`` (train and test on one pattern) or ``material/pattern_to_test_pattern``.

    Without ``--root`` the collection is SurfaceDemo's patterns (:func:`surface_demo_collection`). Validation is
    anomalib's synthetic split of the training pattern (no test image).
    """
    from anomalib_surface.data import TextureFolder

    material, _, patterns = category.partition("/")
    pattern, _, test_pattern = patterns.partition("_to_")
    if not material or not pattern:
        msg = f"--data TextureFolder category {category!r}: expected 'material/pattern' or 'material/pattern_to_test_pattern'."
        raise SystemExit(msg)
    return TextureFolder(
        root=args.root or surface_demo_collection(args.image_size),
        material=material,
        pattern=pattern,
        split_mode="cross_pattern" if test_pattern else "pattern",
        test_pattern=test_pattern or None,
        image_size=args.image_size,
        seed=seed,
        **loaders,
    )


def build_datamodule(args: argparse.Namespace, category: str, seed: int | None = None) -> AnomalibDataModule:
    """The datamodule named by ``--data`` for one category (``--root`` for all but SurfaceDemo, MadRto, TextureFolder).

    ``--data MadRto`` without ``--root`` is the RTO variant (rotation + translation) of a SurfaceDemo category;
    ``--data TextureFolder`` categories are ``material/pattern[_to_test_pattern]`` (:func:`texture_folder_datamodule`).
    ``seed`` (default: the first of ``--seeds``) seeds the datamodule's random splits.
    """
    import anomalib.data

    from anomalib_surface.data.surface_demo import make_surface_demo

    loaders = {"train_batch_size": args.batch_size, "eval_batch_size": args.batch_size, "num_workers": 0}
    seed = args.seeds[0] if seed is None else seed
    if args.data == "TextureFolder":
        return texture_folder_datamodule(args, category, seed, **loaders)
    common = {"category": category, "seed": seed, **loaders}
    counts = dict(zip(("num_train", "num_test_good", "num_test_defect_per_type"), getattr(args, "demo_counts", None) or (), strict=False))
    if args.data == "SurfaceDemo":
        return anomalib.data.SurfaceDemo(image_size=args.image_size, **counts, **common)
    if args.data == "MadRto" and args.root is None:
        source = make_surface_demo(categories=category, image_size=args.image_size, **counts)
        return anomalib.data.MadRto(root=source, **common)
    if args.root is None:
        msg = f"--data {args.data} needs --root <dataset folder>."
        raise SystemExit(msg)
    datamodule_class = getattr(anomalib.data, args.data, None)
    if datamodule_class is None:
        msg = f"--data {args.data}: no such anomalib datamodule."
        raise SystemExit(msg)
    return datamodule_class(root=args.root, **common)
