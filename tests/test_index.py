"""CascadeIndex on synthetic vectors with exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from esrag.encoder.views import View
from esrag.index import CascadeConfig, CascadeIndex, SearchMode, Transform

N, DIM = 1200, 32
INDEX_TYPES = ["Flat", "HNSW32", "IVF8,Flat", "IVF8,PQ16x4"]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Clustered fine vectors; the coarse source is a noisy copy (a 'shallow layer')."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, DIM))
    fine = _unit(centers[rng.integers(0, 20, N)] + 0.5 * rng.standard_normal((N, DIM)))
    source = _unit(fine + 0.05 * rng.standard_normal((N, DIM)))
    q_fine = _unit(fine[rng.integers(0, N, 25)] + 0.3 * rng.standard_normal((25, DIM)))
    q_source = _unit(q_fine + 0.05 * rng.standard_normal((25, DIM)))
    return {"fine": fine, "source": source, "q_fine": q_fine, "q_source": q_source}


def _ids(n: int = N) -> list[str]:
    return [f"doc{i}" for i in range(n)]


def _meta(n: int = N) -> list[dict[str, object]]:
    return [{"group": i % 10, "parity": "even" if i % 2 == 0 else "odd"} for i in range(n)]


def _build(data: dict[str, np.ndarray], **config: object) -> CascadeIndex:
    cfg = CascadeConfig(**{"coarse_dim": 16, **config})  # type: ignore[arg-type]
    return CascadeIndex.build_from_embeddings(
        data["source"], data["fine"], ids=_ids(), metadatas=_meta(), config=cfg
    )


def _exact(data: dict[str, np.ndarray], k: int, rows: np.ndarray | None = None) -> list[list[str]]:
    rows = np.arange(N) if rows is None else rows
    scores = data["q_fine"] @ data["fine"][rows].T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[f"doc{rows[j]}" for j in row] for row in order]


@pytest.fixture(scope="module", params=INDEX_TYPES)
def built(request: pytest.FixtureRequest, data: dict[str, np.ndarray]) -> CascadeIndex:
    dim = 32 if "PQ16x4" in request.param else 16
    return _build(data, index_type=request.param, coarse_dim=dim)


def test_fine_mode_is_exact(built: CascadeIndex, data: dict[str, np.ndarray]) -> None:
    result = built.search_embeddings(data["q_source"], data["q_fine"], k=10, mode="fine")
    assert result.ids == _exact(data, 10)
    expected = np.sort(data["q_fine"] @ data["fine"].T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(result.scores, expected, rtol=1e-5, atol=1e-5)


def test_cascade_equals_exact_when_shortlist_holds_them(
    built: CascadeIndex, data: dict[str, np.ndarray]
) -> None:
    k, shortlist = 10, 60
    shortlisted = built.search_embeddings(
        data["q_source"], data["q_fine"], k=shortlist, shortlist=shortlist, mode="coarse"
    ).ids
    cascade = built.search_embeddings(data["q_source"], data["q_fine"], k=k, shortlist=shortlist)
    exact = _exact(data, k)
    held = 0
    for short, got, want in zip(shortlisted, cascade.ids, exact, strict=True):
        if set(want) <= set(short):
            held += 1
            assert got == want
        else:
            assert set(got) <= set(short)
    assert held >= 15  # the shortlist holds the true top-10 for most queries


def test_shortlist_n_equals_exact(built: CascadeIndex, data: dict[str, np.ndarray]) -> None:
    result = built.search_embeddings(data["q_source"], data["q_fine"], k=10, shortlist=N)
    assert result.ids == _exact(data, 10)


def test_coarse_mode_scores_coarse_vectors(data: dict[str, np.ndarray]) -> None:
    index = _build(data, transform="prefix", coarse_dim=8)
    result = index.search_embeddings(data["q_source"], data["q_fine"], k=5, mode=SearchMode.COARSE)
    coarse_docs = _unit(data["source"][:, :8])
    coarse_q = _unit(data["q_source"][:, :8])
    expected = np.sort(coarse_q @ coarse_docs.T, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(result.scores, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index_type", INDEX_TYPES)
@pytest.mark.parametrize("threshold", [0, 20_000])
def test_filters_return_k_matches(data: dict[str, np.ndarray], index_type: str, threshold: int) -> None:
    dim = 32 if "PQ16x4" in index_type else 16
    index = _build(data, index_type=index_type, coarse_dim=dim, exact_filter_threshold=threshold)
    rows = np.arange(N)
    cases = [
        ({"group": 3}, rows[rows % 10 == 3]),
        ({"group": {"$in": [1, 2]}, "parity": "odd"}, rows[(rows % 10 == 1)]),
        ({"group": [4]}, rows[rows % 10 == 4]),
        ({"group": {"$eq": 7}}, rows[rows % 10 == 7]),
    ]
    for flt, match in cases:
        got = index.search_embeddings(data["q_source"], data["q_fine"], k=10, shortlist=40, filter=flt)
        for ids in got.ids:
            assert len(ids) == 10
            assert {int(i[3:]) for i in ids} <= set(match.tolist())
        if threshold:  # small match sets are scored exactly
            assert got.ids == _exact(data, 10, match)


def test_selective_filter_with_few_matches(data: dict[str, np.ndarray]) -> None:
    metas = [{"tag": "rare" if i in (5, 500, 900) else "common"} for i in range(N)]
    for index_type in ("HNSW32", "IVF8,Flat"):
        index = CascadeIndex.build_from_embeddings(
            data["source"],
            data["fine"],
            ids=_ids(),
            metadatas=metas,
            config=CascadeConfig(coarse_dim=16, index_type=index_type, exact_filter_threshold=0),
        )
        got = index.search_embeddings(data["q_source"], data["q_fine"], k=5, filter={"tag": "rare"})
        assert all(sorted(ids) == ["doc5", "doc500", "doc900"] for ids in got.ids)
        none = index.search_embeddings(data["q_source"], data["q_fine"], k=5, filter={"tag": "x"})
        assert none.ids == [[] for _ in range(25)]


def test_filter_errors(data: dict[str, np.ndarray]) -> None:
    index = _build(data)
    q = (data["q_source"], data["q_fine"])
    with pytest.raises(ValueError, match=r"unknown filter field 'colour'.*known fields: 'group'"):
        index.search_embeddings(*q, filter={"colour": "red"})
    with pytest.raises(ValueError, match=r"supported operators are \$eq, \$in"):
        index.search_embeddings(*q, filter={"group": {"$gt": 3}})
    with pytest.raises(ValueError, match=r"\['\$in'\] must be a list"):
        index.search_embeddings(*q, filter={"group": {"$in": 3}})
    with pytest.raises(TypeError, match="filter must be a dict"):
        index.search_embeddings(*q, filter=["group"])  # type: ignore[arg-type]


@pytest.mark.parametrize("index_type", ["Flat", "HNSW32", "IVF8,Flat"])
def test_upsert_and_delete(data: dict[str, np.ndarray], index_type: str) -> None:
    index = _build(data, index_type=index_type)
    q_source, q_fine = data["q_source"][:1], data["q_fine"][:1]
    top = index.search_embeddings(q_source, q_fine, k=3).ids[0]
    # upsert: doc7 moves onto the query and changes metadata
    index.add_embeddings(q_source, q_fine, ids=["doc7"], texts=["new"], metadatas=[{"group": 99}])
    assert len(index) == N
    got = index.search_embeddings(q_source, q_fine, k=3)
    assert got.ids[0][0] == "doc7" and got.scores[0][0] == pytest.approx(1.0, abs=1e-5)
    assert index.get_by_ids(["doc7"])[0].text == "new"
    assert index.search_embeddings(q_source, q_fine, k=1, filter={"group": 99}).ids == [["doc7"]]
    assert "doc7" not in index.search_embeddings(q_source, q_fine, k=N, filter={"group": 7}).ids[0]
    # delete: missing ids ignored, deleted ids never returned
    assert index.delete(["doc7", top[0], "missing"]) == 2
    assert len(index) == N - 2 and "doc7" not in index
    for mode in SearchMode:
        ids = index.search_embeddings(q_source, q_fine, k=20, mode=mode).ids[0]
        assert "doc7" not in ids and top[0] not in ids
    assert index.get_by_ids(["doc7", top[1]])[0].id == top[1]
    # re-add a deleted id
    index.add_embeddings(q_source, q_fine, ids=[top[0]])
    assert index.search_embeddings(q_source, q_fine, k=1).ids[0] == [top[0]]


def test_bad_input_errors(data: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        CascadeIndex.build_from_embeddings(np.zeros((0, 8)), np.zeros((0, 8)))
    with pytest.raises(ValueError, match="empty corpus"):
        CascadeIndex.build(None, [])
    index = _build(data)
    q = (data["q_source"], data["q_fine"])
    with pytest.raises(ValueError, match="duplicate id 'a' at positions 0 and 2"):
        index.add_embeddings(data["source"][:3], data["fine"][:3], ids=["a", "b", "a"])
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        index.search_embeddings(*q, k=0)
    with pytest.raises(ValueError, match="k must be >= 1, got -3"):
        index.search_embeddings(*q, k=-3)
    with pytest.raises(ValueError, match=r"shortlist \(5\) must be >= k \(10\)"):
        index.search_embeddings(*q, k=10, shortlist=5)
    with pytest.raises(TypeError, match="k must be an int"):
        index.search_embeddings(*q, k=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of"):
        index.search_embeddings(*q, mode="exact")
    with pytest.raises(ValueError, match=r"query coarse_source has 31 dims, the index expects 32"):
        index.search_embeddings(data["q_source"][:, :31], data["q_fine"])
    with pytest.raises(ValueError, match=r"fine has 16 dims, the index expects 32"):
        index.add_embeddings(data["source"][:2], data["fine"][:2, :16])
    with pytest.raises(ValueError, match="fine has 1 rows, expected 2"):
        index.add_embeddings(data["source"][:2], data["fine"][:1])
    with pytest.raises(ValueError, match="got 1 ids for 2 documents"):
        index.add_embeddings(data["source"][:2], data["fine"][:2], ids=["x"])
    with pytest.raises(TypeError, match=r"metadatas\[1\] must be a dict"):
        index.add_embeddings(data["source"][:2], data["fine"][:2], metadatas=[{}, "m"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add_embeddings(np.full((1, 32), np.nan), data["fine"][:1])
    with pytest.raises(TypeError, match=r"ids\[0\] must be a str"):
        index.add_embeddings(data["source"][:1], data["fine"][:1], ids=[3])  # type: ignore[list-item]
    with pytest.raises(RuntimeError, match="has no embedder"):
        index.search(["text"])
    assert len(index) == N  # failed calls changed nothing


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="transform must be one of 'prefix', 'pca', 'adapter'"):
        CascadeConfig(transform="svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coarse_dim must be a positive int"):
        CascadeConfig(coarse_dim=0)
    with pytest.raises(ValueError, match="invalid coarse index type 'Bogus12'"):
        CascadeIndex.build_from_embeddings(
            np.eye(4, dtype=np.float32),
            np.eye(4, dtype=np.float32),
            config=CascadeConfig(index_type="Bogus12"),
        )
    rng = np.random.default_rng(1)
    few = _unit(rng.standard_normal((50, 16)))
    with pytest.raises(ValueError, match=r"training coarse index 'IVF64,Flat' on 50 vectors failed"):
        CascadeIndex.build_from_embeddings(few, few, config=CascadeConfig(index_type="IVF64,Flat"))
    assert CascadeConfig.from_dict(CascadeConfig(fine_view=(2, 8)).to_dict()).fine_view == View(2, 8)
    with pytest.raises(ValueError, match=r"unknown CascadeConfig field\(s\) \['bogus'\]"):
        CascadeConfig.from_dict({"bogus": 1})


def test_require_gpu_without_faiss_gpu(data: dict[str, np.ndarray]) -> None:
    from esrag.index.coarse import gpu_available

    if gpu_available():
        pytest.skip("faiss-gpu and a GPU are present")
    with pytest.raises(ImportError, match=r"pip install esrag\[gpu\]"):
        _build(data, use_gpu=True)


def test_transform_fallbacks_and_widths(data: dict[str, np.ndarray]) -> None:
    # a full-width PCA is a rotation: stored as prefix (identity)
    index = _build(data, coarse_dim=64, transform="pca")
    assert index.transform is not None and index.transform.kind is Transform.PREFIX
    assert index.coarse_dim == DIM
    # too few documents for a 16-dim PCA: prefix with a warning
    small = CascadeIndex.build_from_embeddings(
        data["source"][:10], data["fine"][:10], config=CascadeConfig(coarse_dim=16)
    )
    assert small.transform is not None and small.transform.kind is Transform.PREFIX


def test_train_size_streams_the_rest(data: dict[str, np.ndarray]) -> None:
    cfg = CascadeConfig(coarse_dim=16, train_size=200, index_type="IVF4,Flat")
    index = CascadeIndex(None, cfg)
    index.add_embeddings(data["source"][:100], data["fine"][:100], ids=_ids()[:100])
    index.add_embeddings(data["source"][100:], data["fine"][100:], ids=_ids()[100:])
    assert len(index) == N
    assert index.search_embeddings(data["q_source"], data["q_fine"], k=10, shortlist=N).ids == (
        _exact(data, 10)
    )


def test_reconfigure_rebuilds_coarse_stage(data: dict[str, np.ndarray]) -> None:
    index = _build(data, transform="prefix", coarse_dim=4)
    index.delete(["doc3"])
    index.reconfigure(
        transform="pca", coarse_dim=16, index_type="HNSW32", coarse_source=data["source"][np.arange(N) != 3]
    )
    assert index.config.index_type == "HNSW32" and index.coarse_dim == 16
    assert index.transform is not None and index.transform.kind is Transform.PCA
    got = index.search_embeddings(data["q_source"], data["q_fine"], k=10, shortlist=N)
    assert got.ids == _exact(data, 10, np.flatnonzero(np.arange(N) != 3))
    index.reconfigure(shortlist=7)
    assert index.config.shortlist == 7
    with pytest.raises(ValueError, match="coarse_source has 5 rows, expected 1199"):
        index.reconfigure(coarse_dim=8, coarse_source=data["source"][:5])
    with pytest.raises(ValueError, match="no embedder to re-encode its texts: pass coarse_source"):
        index.reconfigure(coarse_dim=8)


def test_empty_index_search_and_clear(data: dict[str, np.ndarray]) -> None:
    index = CascadeIndex(None, CascadeConfig(coarse_dim=16))
    got = index.search_embeddings(data["q_source"][:2], data["q_fine"][:2], k=3, filter={"a": 1})
    assert got.ids == [[], []] and len(index) == 0
    index.add_embeddings(data["source"][:300], data["fine"][:300])
    index.clear()
    assert len(index) == 0
    assert index.search_embeddings(data["q_source"][:1], data["q_fine"][:1]).ids == [[]]


@pytest.mark.parametrize("index_type", ["RR16,Flat", "OPQ4,IVF8,PQ4x4"])
def test_pretransform_index_types_filter_and_delete(data: dict[str, np.ndarray], index_type: str) -> None:
    index = _build(data, index_type=index_type, exact_filter_threshold=0)
    q = (data["q_source"], data["q_fine"])
    got = index.search_embeddings(*q, k=10, shortlist=50, filter={"group": 3})
    assert all(len(ids) == 10 and all(int(i[3:]) % 10 == 3 for i in ids) for ids in got.ids)
    top = index.search_embeddings(*q, k=3).ids[0]
    assert index.delete(top) == 3
    for mode in SearchMode:
        assert not set(top) & set(index.search_embeddings(*q, k=10, mode=mode).ids[0])
    assert index.search_embeddings(*q, k=10, shortlist=N).ids == _exact(
        data, 10, np.array([i for i in range(N) if f"doc{i}" not in top])
    )


def test_transforms_fit_known_structure() -> None:
    from esrag.index import fit_transform

    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.standard_normal((32, 4)))[0]  # a planted 4-dim subspace
    x = rng.standard_normal((500, 4)) @ basis.T + 0.01 * rng.standard_normal((500, 32))
    pca = fit_transform("pca", x, 4)
    assert pca.matrix is not None and pca.matrix.shape == (32, 4)
    # the components span the planted subspace
    assert np.linalg.svd(basis.T @ pca.matrix, compute_uv=False).min() > 0.99
    np.testing.assert_allclose(np.linalg.norm(pca(x), axis=1), 1.0, rtol=1e-5)
    # adapter: the fine vectors are a linear map of the source -> coarse ranking = fine ranking
    w = rng.standard_normal((32, 16))
    src = _unit(rng.standard_normal((400, 32)))
    fine = src @ w
    adapter = fit_transform("adapter", src, 16, fine=fine, ridge=1e-6)
    np.testing.assert_allclose(adapter(src[:5]) @ adapter(src).T, _unit(fine[:5]) @ _unit(fine).T, atol=1e-3)
    prefix = fit_transform("prefix", src, 8)
    np.testing.assert_allclose(prefix(src), _unit(src[:, :8]), rtol=1e-6)
    with pytest.raises(ValueError, match="the adapter transform needs the fine vectors"):
        fit_transform("adapter", src, 8)
    with pytest.raises(ValueError, match=r"transform dim must be in 1\.\.32, got 40"):
        fit_transform("pca", src, 40)
    with pytest.raises(ValueError, match=r"coarse source vectors must have shape \(n, 32\)"):
        pca(src[:, :8])


@pytest.mark.gpu
@pytest.mark.parametrize("index_type", ["Flat", "IVF8,Flat"])
def test_gpu_coarse_stage_matches_cpu(data: dict[str, np.ndarray], index_type: str) -> None:
    from esrag.index.coarse import gpu_available

    if not gpu_available():
        pytest.skip("needs faiss-gpu and a CUDA GPU")
    cpu = _build(data, index_type=index_type, use_gpu=False)
    gpu = _build(data, index_type=index_type, use_gpu=True)
    q = (data["q_source"], data["q_fine"])
    assert (
        gpu.search_embeddings(*q, k=10, shortlist=50).ids == cpu.search_embeddings(*q, k=10, shortlist=50).ids
    )
    assert (
        gpu.search_embeddings(*q, k=5, filter={"group": 2}).ids
        == cpu.search_embeddings(*q, k=5, filter={"group": 2}).ids
    )
