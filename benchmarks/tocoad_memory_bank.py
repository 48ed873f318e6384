"""Speed of Tocoad's memory-bank components against anomalib's Patchcore, printed as a Markdown table.

On the same random feature bank (default 20,000 x 384, kept to 10% by coreset selection) and the
same queries (default 4,000), this times:

- coreset selection: anomalib's ``KCenterGreedy`` against ``greedy_coreset`` (our default 128-d
  projection), and ``greedy_k_center`` on anomalib's own projected features and start row, which
  must select exactly the same rows;
- nearest-neighbour search of the queries in the coreset: anomalib's
  ``PatchcoreModel.nearest_neighbors`` against ``NearestNeighborSearch`` (exact faiss ``IndexFlatL2``,
  same neighbours expected), and the approximate IVF and HNSW indexes with their recall@1.

Run: ``python benchmarks/tocoad_memory_bank.py [--rows 20000 --dim 384 --ratio 0.1 --queries 4000]``.

``KCenterGreedy`` allocates a fresh ``[N, d]`` tensor (19.5 MB here) and small ones at every step.
With glibc's default dynamic mmap threshold these large blocks come from the heap, which the small
blocks fragment: its resident memory grew past 6-8 GB on 20,000 rows in some of our runs (the
process was killed) and stayed near 1 GB in others. The script therefore fixes glibc's mmap
threshold at 1 MiB (``mallopt(M_MMAP_THRESHOLD, 1 MiB)``, Linux only), so large blocks are mapped
and returned at once: the memory stays near 1 GB, at the price of page faults in the baseline
(``--default-malloc`` keeps glibc's default behaviour).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from collections.abc import Callable
from typing import Any

M_MMAP_THRESHOLD = -3
if sys.platform.startswith("linux") and "--default-malloc" not in sys.argv:
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)  # see the module docstring
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's KCenterGreedy progress bar

import torch  # noqa: E402
from anomalib.models.components import KCenterGreedy  # noqa: E402
from anomalib.models.image.patchcore.torch_model import PatchcoreModel  # noqa: E402

from anomalib_surface.models.tocoad.coreset import greedy_coreset, greedy_k_center  # noqa: E402
from anomalib_surface.models.tocoad.nearest_neighbor import NearestNeighborSearch  # noqa: E402


def timed(function: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Best wall time (seconds) of ``repeats`` calls after one warm-up call when ``repeats > 1``, and the result."""
    result = function() if repeats > 1 else None
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def coverage_radius(embedding: torch.Tensor, indices: torch.Tensor | list[int]) -> float:
    """Largest distance of any row of ``embedding`` to its nearest selected row (the k-center objective)."""
    distances, _ = NearestNeighborSearch()(embedding[indices], embedding)
    return float(distances.max())


def benchmark(rows: int, dim: int, ratio: float, num_queries: int, seed: int, repeats: int) -> list[list[str]]:
    """Run all measurements; returns the Markdown table rows."""
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.randn(rows, dim, generator=generator)
    table = []

    torch.manual_seed(seed)
    sampler = KCenterGreedy(embedding, sampling_ratio=ratio)
    anomalib_seconds, anomalib_indices = timed(sampler.select_coreset_idxs)
    ours_seconds, ours_indices = timed(lambda: greedy_coreset(embedding, ratio, projection_dim=128, seed=seed))
    same_seconds, same_indices = timed(
        lambda: greedy_k_center(sampler.features, len(anomalib_indices), start_index=anomalib_indices[0]),
    )
    same_set = set(same_indices.tolist()) == set(anomalib_indices)
    same_order = next((i for i, (a, b) in enumerate(zip(same_indices.tolist(), anomalib_indices)) if a != b), None)
    anomalib_radius = coverage_radius(embedding, anomalib_indices)
    table += [
        [
            f"coreset {rows}x{dim} -> {len(anomalib_indices)}",
            f"anomalib KCenterGreedy ({sampler.features.shape[1]}-d sparse projection)",
            f"{anomalib_seconds:.2f}",
            "1.0x",
            f"reference (coverage radius {anomalib_radius:.2f})",
        ],
        [
            "",
            "ours, greedy_k_center on anomalib's projection and start row",
            f"{same_seconds:.2f}",
            f"{anomalib_seconds / same_seconds:.1f}x",
            f"same selected set: {'yes' if same_set else 'NO'}; same order "
            + ("throughout" if same_order is None else f"for the first {same_order} picks (then a float32 tie)"),
        ],
        [
            "",
            "ours, greedy_coreset (128-d Gaussian projection, default)",
            f"{ours_seconds:.2f}",
            f"{anomalib_seconds / ours_seconds:.1f}x",
            f"coverage radius {coverage_radius(embedding, ours_indices):.2f}",
        ],
    ]

    bank = embedding[anomalib_indices].contiguous()
    queries = torch.randn(num_queries, dim, generator=generator)
    patchcore = PatchcoreModel(layers=["layer2"], backbone="resnet18", pre_trained=False)
    patchcore.memory_bank = bank
    anomalib_seconds, (reference_distances, reference_indices) = timed(
        lambda: patchcore.nearest_neighbors(queries, n_neighbors=1),
        repeats,
    )
    label = f"1-NN search {num_queries} queries in {bank.shape[0]}x{dim}"
    table.append([label, "anomalib PatchcoreModel.nearest_neighbors", f"{anomalib_seconds:.3f}", "1.0x", "reference"])
    for index_type in ("flat", "ivf", "hnsw"):
        search = NearestNeighborSearch(index_type=index_type)
        search(bank, queries[:1])  # build the index outside the timing (it is built once per bank)
        seconds, (distances, indices) = timed(lambda search=search: search(bank, queries), repeats)
        recall = float((indices[:, 0] == reference_indices).float().mean())
        if index_type == "flat":
            error = float((distances[:, 0] - reference_distances).abs().max())
            note = f"same neighbours: {recall:.2%}, max distance difference {error:.1e}"
            name = "ours, faiss IndexFlatL2 (exact, default)"
        else:
            note = f"recall@1 {recall:.2%}"
            name = f"ours, faiss {'IndexIVFFlat (nprobe 16)' if index_type == 'ivf' else 'IndexHNSWFlat (M 32, efSearch 128)'}"
        table.append(["", name, f"{seconds:.3f}", f"{anomalib_seconds / seconds:.1f}x", note])
    return table


def main() -> None:
    """Parse the arguments, run the benchmark and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the random feature bank")
    parser.add_argument("--dim", type=int, default=384, help="feature dimension (384: resnet18 layer2+layer3)")
    parser.add_argument("--ratio", type=float, default=0.1, help="coreset sampling ratio")
    parser.add_argument("--queries", type=int, default=4_000, help="number of query features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the search timings (best is kept)")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's default mmap threshold")
    args = parser.parse_args()
    table = benchmark(args.rows, args.dim, args.ratio, args.queries, args.seed, args.repeats)
    allocator = "glibc default" if args.default_malloc else "glibc, mmap threshold 1 MiB"
    print(f"CPU threads: {torch.get_num_threads()}, torch {torch.__version__}, malloc: {allocator}\n")
    print("| task | implementation | seconds | speed-up | result |")
    print("|---|---|---:|---:|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
