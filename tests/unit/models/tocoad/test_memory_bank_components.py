"""Tests of the shared memory-bank components: coreset selection, nearest-neighbour search, feature store."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from anomalib.models.components import KCenterGreedy

from anomalib_surface.components.distributed import all_gather_rows, image_keys
from anomalib_surface.models.tocoad.coreset import coreset_size, greedy_coreset, greedy_k_center
from anomalib_surface.models.tocoad.feature_store import PatchFeatureStore
from anomalib_surface.models.tocoad.nearest_neighbor import NearestNeighborSearch, torch_nearest_neighbors


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_coreset_returns_requested_count_of_distinct_rows(generator: torch.Generator) -> None:
    embedding = torch.randn(1000, 64, generator=generator)
    indices = greedy_coreset(embedding, sampling_ratio=0.05, projection_dim=16, seed=3)
    assert indices.shape == (coreset_size(1000, 0.05),) == (50,)
    assert indices.dtype == torch.long
    assert len(set(indices.tolist())) == 50
    assert torch.equal(indices, greedy_coreset(embedding, 0.05, projection_dim=16, seed=3))  # seeded


def test_coreset_picks_outliers_first(generator: torch.Generator) -> None:
    embedding = torch.randn(500, 32, generator=generator)
    outliers = torch.tensor([17, 250, 499])
    embedding[outliers] += 50 * torch.randn(3, 32, generator=generator)
    indices = greedy_coreset(embedding, sampling_ratio=0.02, projection_dim=None, seed=0)
    # The first pick is random; the three far-away rows must follow right after it.
    assert set(outliers.tolist()) <= set(indices[:4].tolist())


def test_coreset_on_duplicate_rows_never_repeats_a_row() -> None:
    embedding = torch.zeros(20, 4)
    embedding[:2] = 1.0
    assert len(set(greedy_k_center(embedding, count=20).tolist())) == 20


def test_greedy_k_center_selects_the_same_rows_as_anomalib(generator: torch.Generator) -> None:
    embedding = torch.randn(2000, 96, generator=generator)
    sampler = KCenterGreedy(embedding, sampling_ratio=0.05)
    torch.manual_seed(0)
    reference = sampler.select_coreset_idxs()  # projects, then starts at a random row
    ours = greedy_k_center(sampler.features, count=len(reference), start_index=reference[0])
    assert ours.tolist() == reference


@pytest.mark.parametrize(("ratio", "message"), [(0.0, "sampling_ratio"), (1.5, "sampling_ratio")])
def test_coreset_rejects_bad_ratio(ratio: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        greedy_coreset(torch.randn(10, 4), ratio)


@pytest.mark.parametrize("k", [1, 5])
def test_faiss_search_equals_brute_force(generator: torch.Generator, k: int) -> None:
    bank = torch.randn(3000, 48, generator=generator)
    queries = torch.randn(700, 48, generator=generator)
    search = NearestNeighborSearch()
    assert search.uses_faiss(bank)
    distances, indices = search(bank, queries, k=k)
    brute_distances = torch.cdist(queries, bank)
    expected_distances, expected_indices = brute_distances.topk(k, dim=1, largest=False)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(distances, expected_distances, rtol=1e-4, atol=1e-4)
    fallback_distances, fallback_indices = torch_nearest_neighbors(queries, bank, k)
    assert torch.equal(fallback_indices, expected_indices)
    torch.testing.assert_close(fallback_distances, expected_distances, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_approximate_search_has_high_recall_on_clustered_data(generator: torch.Generator, index_type: str) -> None:
    centres = 10 * torch.randn(40, 32, generator=generator)
    bank = centres.repeat(50, 1) + torch.randn(2000, 32, generator=generator)
    queries = centres.repeat(5, 1) + torch.randn(200, 32, generator=generator)
    _, exact = torch_nearest_neighbors(queries, bank)
    _, approximate = NearestNeighborSearch(index_type=index_type)(bank, queries)
    assert (approximate == exact).float().mean() > 0.9


def test_search_index_follows_in_place_bank_updates(generator: torch.Generator) -> None:
    bank = torch.randn(100, 8, generator=generator)
    queries = bank[:5].clone()
    search = NearestNeighborSearch()
    assert torch.equal(search(bank, queries)[1][:, 0], torch.arange(5))
    bank.copy_(bank.flip(0))  # what load_state_dict does to a buffer of the same shape
    assert torch.equal(search(bank, queries)[1][:, 0], 99 - torch.arange(5))
    clone = pickle.loads(pickle.dumps(copy.deepcopy(search)))  # the faiss index is not pickled
    assert torch.equal(clone(bank, queries)[1], search(bank, queries)[1])


def test_search_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="index_type"):
        NearestNeighborSearch(index_type="lsh")
    with pytest.raises(ValueError, match="k must be"):
        NearestNeighborSearch()(torch.randn(3, 4), torch.randn(2, 4), k=4)
    with pytest.raises(ValueError, match="share D"):
        NearestNeighborSearch()(torch.randn(3, 4), torch.randn(2, 5))


def test_feature_store_drops_repeated_images_and_orders_by_key() -> None:
    images = torch.rand(3, 3, 8, 8)
    keys = image_keys(images, ["b.png", "a.png", "c.png"])
    features = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 4)
    store = PatchFeatureStore()
    store.add(features[:2], keys[:2])
    store.add(features[1:], keys[1:])  # image "a.png" again, as DistributedSampler padding does
    assert len(store) == 4
    merged = store.merge()
    order = torch.argsort(keys)
    assert torch.equal(merged, features[order].flatten(0, 1))
    assert len(store) == 0
    assert torch.equal(image_keys(images), image_keys(images.clone()))  # pixel keys without paths
    assert torch.equal(all_gather_rows(merged), merged)  # no process group: identity
