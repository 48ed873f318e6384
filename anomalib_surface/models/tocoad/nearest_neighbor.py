"""k-nearest-neighbour search of query features against a memory bank, on faiss with a torch fallback.

:class:`NearestNeighborSearch` builds a faiss index of the bank once and reuses it until the bank
tensor changes (new tensor, in-place update such as ``load_state_dict``, or a move to another
device). The index follows the bank's device: a faiss GPU index for CUDA banks when faiss was built
with GPU support (``faiss-gpu``), a CPU index for CPU banks. ``"flat"`` (default) is exact search
(``IndexFlatL2``); ``"ivf"`` (``IndexIVFFlat``) and ``"hnsw"`` (``IndexHNSWFlat``) are approximate
indexes for large banks. HNSW has no faiss GPU implementation, so CUDA banks with ``"hnsw"`` are
searched on a CPU copy.

The torch fallback :func:`torch_nearest_neighbors` (exact, brute force on the tensors' device) is
used when faiss is not installed, for CUDA banks without faiss GPU support, and always while the
model is traced or exported (ONNX, ``torch.export``, TorchScript tracing), so exported graphs hold
the bank as a constant and run without faiss.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from anomalib_surface.components.checks import is_traced

try:
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401 - lets faiss indexes take torch tensors (CPU and CUDA)
except ImportError:  # pragma: no cover - faiss-cpu is a dependency, faiss-gpu may replace it
    faiss = None

__all__ = ["INDEX_TYPES", "NearestNeighborSearch", "euclidean_distances", "torch_nearest_neighbors"]

INDEX_TYPES = ("flat", "ivf", "hnsw")


def euclidean_distances(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances ``[N, M]`` of ``[N, D]`` queries to ``[M, D]`` bank rows.

    Uses ``|q|^2 - 2 q.b + |b|^2`` (matrix products only), which exports to ONNX/OpenVINO.
    """
    squared = queries.pow(2).sum(-1, keepdim=True) - 2 * queries @ bank.transpose(-2, -1)
    squared = squared + bank.pow(2).sum(-1).unsqueeze(-2)
    return squared.clamp_min(0).sqrt()


def torch_nearest_neighbors(queries: torch.Tensor, bank: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k-NN by brute force: ``([N, k]`` Euclidean distances ascending, ``[N, k]`` int64 bank indices)."""
    distances = euclidean_distances(queries, bank)
    if k == 1:
        distances, indices = distances.min(dim=1, keepdim=True)
        return distances, indices
    return distances.topk(k, dim=1, largest=False)


def _faiss_gpu_available() -> bool:
    return faiss is not None and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


class NearestNeighborSearch:
    """k-NN search against a memory bank with a cached faiss index (see the module docstring).

    Args:
        index_type: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate).
        ivf_nlist: Number of IVF cells; ``None`` picks ``4 * sqrt(M)``, capped so that each cell has
            at least 39 training rows (faiss' minimum) for a bank of ``M`` rows.
        ivf_nprobe: IVF cells visited per query (more: slower, higher recall).
        hnsw_m: Neighbours per node of the HNSW graph.
        hnsw_ef_search: Size of the HNSW candidate list at search time (more: slower, higher recall).
        use_faiss: ``False`` forces the torch fallback.

    Example:
        >>> search = NearestNeighborSearch()
        >>> bank, queries = torch.randn(100, 8), torch.randn(5, 8)
        >>> distances, indices = search(bank, queries, k=3)
        >>> distances.shape, indices.shape
        (torch.Size([5, 3]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        index_type: str = "flat",
        ivf_nlist: int | None = None,
        ivf_nprobe: int = 16,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
        use_faiss: bool = True,
    ) -> None:
        if index_type not in INDEX_TYPES:
            msg = f"index_type must be one of {INDEX_TYPES}, got '{index_type}'."
            raise ValueError(msg)
        for name, value in {"ivf_nprobe": ivf_nprobe, "hnsw_m": hnsw_m, "hnsw_ef_search": hnsw_ef_search}.items():
            if value < 1:
                msg = f"{name} must be a positive integer, got {value}."
                raise ValueError(msg)
        if ivf_nlist is not None and ivf_nlist < 1:
            msg = f"ivf_nlist must be a positive integer or None, got {ivf_nlist}."
            raise ValueError(msg)
        self.index_type = index_type
        self.ivf_nlist = ivf_nlist
        self.ivf_nprobe = ivf_nprobe
        self.hnsw_m = hnsw_m
        self.hnsw_ef_search = hnsw_ef_search
        self.use_faiss = use_faiss
        self._cache: tuple[tuple, Any] | None = None
        self._gpu_resources: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the faiss index (rebuilt on first use), e.g. for ``torch.save`` exports."""
        state = self.__dict__.copy()
        state["_cache"] = None
        state["_gpu_resources"] = None
        return state

    def uses_faiss(self, bank: torch.Tensor) -> bool:
        """Whether a search of ``bank`` would run on faiss (``False``: torch fallback)."""
        if not self.use_faiss or faiss is None or is_traced():
            return False
        return bank.device.type == "cpu" or (bank.device.type == "cuda" and _faiss_gpu_available())

    def __call__(self, bank: torch.Tensor, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Find the ``k`` nearest bank rows of each query.

        Args:
            bank: ``[M, D]`` memory bank.
            queries: ``[N, D]`` query features on the bank's device.
            k: Number of neighbours, ``1 <= k <= M``.

        Returns:
            ``[N, k]`` Euclidean distances (ascending) and ``[N, k]`` int64 indices into ``bank``.
        """
        if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
            msg = f"bank [M, D] and queries [N, D] must share D, got {tuple(bank.shape)} and {tuple(queries.shape)}."
            raise ValueError(msg)
        if not 1 <= k <= bank.shape[0]:
            msg = f"k must be in [1, {bank.shape[0]}] (the bank size), got {k}."
            raise ValueError(msg)
        if not self.uses_faiss(bank):
            return torch_nearest_neighbors(queries, bank, k)
        index, index_device = self._index(bank)
        squared, indices = index.search(queries.detach().float().to(index_device).contiguous(), k)
        distances = squared.clamp_min(0).sqrt().to(device=queries.device, dtype=queries.dtype)
        return distances, indices.to(queries.device)

    def _index(self, bank: torch.Tensor) -> tuple[Any, torch.device]:
        """The faiss index of ``bank`` (cached until the bank changes) and the device it searches on."""
        key = (bank.data_ptr(), bank._version, tuple(bank.shape), bank.device, bank.dtype)  # noqa: SLF001
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._build(bank))
        index = self._cache[1]
        on_gpu = bank.device.type == "cuda" and self.index_type != "hnsw"
        return index, bank.device if on_gpu else torch.device("cpu")

    def _build(self, bank: torch.Tensor) -> Any:  # noqa: ANN401 - a faiss index
        num_rows, dim = bank.shape
        if self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m)
            index.hnsw.efSearch = self.hnsw_ef_search
            index.add(bank.detach().float().cpu().contiguous())
            return index
        if self.index_type == "ivf":
            nlist = self.ivf_nlist or max(1, min(round(4 * math.sqrt(num_rows)), num_rows // 39))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, min(nlist, num_rows))
            index.nprobe = self.ivf_nprobe
        else:
            index = faiss.IndexFlatL2(dim)
        if bank.device.type == "cuda":
            self._gpu_resources = self._gpu_resources or faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, bank.device.index or 0, index)
        rows = bank.detach().float().contiguous()
        if not index.is_trained:
            index.train(rows)
        index.add(rows)
        return index
