"""Index families on real FAISS: exactness, approximate recall, refinement, memory-mapped loading."""

import re

import numpy as np
import pytest

from kb.index import (AUTO_FLAT_MAX, AUTO_HNSW_MAX, VectorIndex, add_vectors, check_overrides, choose_family,
                      index_params, load_index, new_index, save_index, training_note)
from kb.vectors import VECTORS_NAME, VectorWriter, canonical, open_vectors

DIM = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4,000 unit vectors around 40 centres, stored as the float16 vector file, plus 50 queries."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, DIM))
    x = centres[rng.integers(0, 40, 4000)] + 0.6 * rng.normal(size=(4000, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = centres[rng.integers(0, 40, 50)] + 0.6 * rng.normal(size=(50, DIM))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    path = tmp_path_factory.mktemp("vectors") / VECTORS_NAME
    writer = VectorWriter(path, DIM)
    writer.append(x[:1000])
    writer.append(x[1000:])
    writer.close()
    vectors = open_vectors(path, DIM)
    exact = canonical(vectors) @ q.T
    truth = np.argsort(-exact, axis=0)[:10].T
    return vectors, q, truth


def _build(family, vectors, **overrides):
    params = index_params(family, len(vectors), DIM, overrides)
    index = new_index(family, params, DIM, vectors)
    add_vectors(index, vectors)
    return VectorIndex(index, family, params, vectors if family == "ivfpq" else None)


def _recall(rows, truth):
    return np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth)])


def test_auto_family_follows_size_and_unknown_families_are_refused():
    assert choose_family(AUTO_FLAT_MAX) == "flat"
    assert choose_family(AUTO_FLAT_MAX + 1) == "hnsw"
    assert choose_family(AUTO_HNSW_MAX + 1) == "ivfpq"
    assert choose_family(10, "ivfpq") == "ivfpq"
    with pytest.raises(ValueError, match="unknown index family"):
        choose_family(10, "lsh")


def test_ivfpq_parameters_adapt_to_size_and_dimension():
    big = index_params("ivfpq", 1_000_000, 384)
    assert big["nlist"] == 1024 and big["m"] == 48 and big["nbits"] == 8
    tiny = index_params("ivfpq", 300, 384)
    assert tiny["nlist"] == 7 and tiny["nbits"] == 2  # enough training points per list and per PQ centroid
    assert index_params("ivfpq", 10_000, 100)["m"] == 25  # the largest divisor of the dimension up to 48
    assert index_params("ivfpq", 10_000, 384, {"nlist": 64, "nprobe": 8})["nprobe"] == 8


def test_flat_search_is_exact_cosine_and_rows_follow_insertion_order(data):
    vectors, q, truth = data
    index = _build("flat", vectors)
    scores, rows = index.search(q, 10)
    assert (rows == truth).mean() > 0.99  # float16 ties aside, the exact order
    expected = canonical(vectors[rows[0]]) @ q[0]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5, atol=1e-5)


def test_hnsw_finds_most_true_neighbours(data):
    vectors, q, truth = data
    _, rows = _build("hnsw", vectors, M=16, efSearch=64).search(q, 10)
    assert _recall(rows, truth) >= 0.95


def test_ivfpq_refinement_rescored_exactly_from_float16_vectors(data):
    vectors, q, truth = data
    refined = _build("ivfpq", vectors, nlist=16, nprobe=8, refine_k=100)
    scores, rows = refined.search(q, 10)
    coarse_scores, coarse = _build("ivfpq", vectors, nlist=16, nprobe=8, refine_k=0).search(q, 10)
    assert _recall(rows, truth) >= 0.9 and _recall(rows, truth) > _recall(coarse, truth)
    np.testing.assert_allclose(scores[0], canonical(vectors[rows[0]]) @ q[0], rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)
    assert np.abs(coarse_scores[0] - canonical(vectors[coarse[0]]) @ q[0]).max() < 0.2  # PQ approximations


@pytest.mark.parametrize("family", ["flat", "hnsw", "ivfpq"])
def test_memory_mapped_loading_gives_the_same_results(data, tmp_path, family):
    vectors, q, _ = data
    built = _build(family, vectors, **({"nlist": 16} if family == "ivfpq" else {}))
    save_index(built.index, tmp_path / "index.faiss")
    expected = built.search(q, 5)
    for mmap in (False, True):
        loaded = VectorIndex(load_index(tmp_path / "index.faiss", mmap), family, built.params,
                             vectors if family == "ivfpq" else None)
        got = loaded.search(q, 5)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)


def test_asking_for_more_than_the_index_holds(data):
    vectors, q, _ = data
    index = _build("flat", vectors[:3])
    scores, rows = index.search(q[:2], 10)
    assert rows.shape == (2, 3) and sorted(rows[0]) == [0, 1, 2]


@pytest.mark.parametrize("family, overrides, message", [
    ("hnsw", {"M": 0}, "M=0 must be an integer of at least 2"),  # faiss aborted the process
    ("hnsw", {"M": 1}, "M=1 must be"),  # faiss crashed (segmentation fault)
    ("hnsw", {"efSearch": 0}, "efSearch=0"),  # built an index that returned fewer hits than asked
    ("ivfpq", {"nprobe": 0}, "nprobe=0"),  # published a KB whose searches failed
    ("ivfpq", {"nbits": 0}, "nbits=0"),
    ("ivfpq", {"nbits": 17}, "at most 16"),
    ("ivfpq", {"m": 0}, "m=0"),
    ("ivfpq", {"train_points": 0}, "train_points=0"),
    ("ivfpq", {"train_points": 100, "nbits": 8}, "fewer than the 256 centroids it must train"),
    ("ivfpq", {"m": 7}, "m=7 must divide the embedding dimension 64 (e.g. m=4 or m=8)"),  # was silently m=4
    ("ivfpq", {"m": 128}, "m=128 must divide the embedding dimension 64"),
    ("flat", {"bogus": 3}, "unknown index parameter 'bogus'"),
])
def test_index_parameters_out_of_range_or_unknown_are_refused(family, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        index_params(family, 20_000, DIM, overrides)


def test_an_ivfpq_index_of_one_fact_is_refused_with_advice():
    with pytest.raises(ValueError, match="at least 2 facts.*--index flat"):
        index_params("ivfpq", 1, DIM)
    assert index_params("hnsw", 100, DIM, {"nprobe": 4}) == index_params("hnsw", 100, DIM)  # another family's: unused


def test_a_family_named_explicitly_takes_only_its_own_parameters_and_auto_takes_any_known_one():
    """`--index hnsw --index-param nprobe=4` built an HNSW index and silently ignored nprobe."""
    with pytest.raises(ValueError,
                       match="'nprobe' does not apply to a hnsw index .it takes: M, efConstruction, efSearch"):
        check_overrides("hnsw", {"nprobe": 4}, DIM)
    with pytest.raises(ValueError, match="'M' does not apply to a flat index .it takes: no parameters"):
        check_overrides("flat", {"M": 16}, DIM)
    with pytest.raises(ValueError, match="'nprobe' does not apply to a hnsw index"):
        index_params("hnsw", 100, DIM, {"nprobe": 4}, strict=True)
    check_overrides("auto", {"nprobe": 4, "M": 16}, DIM)  # the family follows the size: either may be used
    with pytest.raises(ValueError, match="unknown index parameter 'bogus'"):
        check_overrides("hnsw", {"bogus": 1}, DIM)
    with pytest.raises(ValueError, match="m=5 must divide"):
        check_overrides("auto", {"m": 5}, DIM)


def test_training_on_too_few_points_is_one_note_not_a_faiss_warning_per_sub_quantizer(data, capfd):
    vectors, q, _ = data
    params = index_params("ivfpq", 60, DIM)
    assert "fewer than the 39 per centroid" in training_note("ivfpq", params)
    assert training_note("ivfpq", index_params("ivfpq", 4000, DIM)) is None and training_note("flat", {}) is None
    capfd.readouterr()
    index = new_index("ivfpq", params, DIM, vectors[:60])
    add_vectors(index, vectors[:60])
    assert "WARNING clustering" not in capfd.readouterr().err  # faiss printed one line per sub-quantizer
    _, rows = VectorIndex(index, "ivfpq", params, vectors[:60]).search(q[:2], 3)
    assert (rows >= 0).all()
