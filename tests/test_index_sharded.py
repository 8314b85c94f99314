"""ShardedIndex: routing, exact merged search (same ids and scores as one index), ties,
persistence (generations, atomic top-level manifest), loading through CascadeIndex."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esrag.errors import IndexFormatError
from esrag.index import CascadeConfig, CascadeIndex, shardset
from esrag.index.sharded import ShardedIndex
from esrag.index.shardset import shard_of


def _data(n=2500, ds=24, df=16, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, ds)).astype(np.float32)
    fine = rng.standard_normal((n, df)).astype(np.float32)
    ids = [f"doc-{i}" for i in range(n)]
    metas = [{"g": i % 7, "even": i % 2 == 0} for i in range(n)]
    return src, fine, ids, metas


def _queries(n=37, ds=24, df=16, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, ds)).astype(np.float32), rng.standard_normal((n, df)).astype(np.float32)


def _pair(index_type, shards=3, **cfg):
    src, fine, ids, metas = _data()
    config = CascadeConfig(
        coarse_dim=8, index_type=index_type, shortlist=25, nprobe=3, exact_filter_threshold=200, **cfg
    )
    one = CascadeIndex.build_from_embeddings(src, fine, ids=ids, metadatas=metas, config=config)
    many = ShardedIndex.build_from_embeddings(
        src, fine, ids=ids, metadatas=metas, config=config, shards=shards
    )
    return one, many


def _same(a, b):
    assert a.ids == b.ids
    for sa, sb in zip(a.scores, b.scores, strict=True):
        np.testing.assert_allclose(sa, sb, atol=1e-5)


def test_routing_is_stable_and_spreads():
    assert shard_of("doc-1", 4) == shard_of("doc-1", 4)  # not Python's salted hash
    assert shard_of("abc", 7) == 3  # pinned: a change would re-route every stored index
    counts = np.bincount([shard_of(f"d{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 850


@pytest.mark.parametrize("index_type", ["Flat", "IVF16,Flat"])
@pytest.mark.parametrize("mode", ["cascade", "coarse", "fine"])
@pytest.mark.parametrize("filter", [None, {"g": 3}, {"g": [1, 2, 5]}, {"even": True}])
def test_sharded_search_equals_one_index(index_type, mode, filter):
    one, many = _pair(index_type)
    q, qf = _queries()
    for k in (1, 10):
        _same(
            one.search_embeddings(q, qf, k=k, filter=filter, mode=mode),
            many.search_embeddings(q, qf, k=k, filter=filter, mode=mode),
        )
    assert one.ids() == many.ids() and len(one) == len(many) == 2500
    assert many.stats()["documents"] == 2500 and many.stats()["shards"] == 3


@pytest.mark.parametrize("index_type", ["Flat", "IVF16,Flat"])
def test_small_searches_in_the_calling_thread_equal_fanned_out_batches(index_type):
    from esrag.index.sharded import FANOUT_MIN_QUERIES

    one, many = _pair(index_type)
    q, qf = _queries()
    assert q.shape[0] >= FANOUT_MIN_QUERIES  # the batch fans out over threads
    batched = many.search_embeddings(q, qf, k=10)
    for i in range(q.shape[0]):  # one query at a time: serial over the shards
        single = many.search_embeddings(q[i : i + 1], qf[i : i + 1], k=10)
        assert single.ids[0] == batched.ids[0 + i]
        np.testing.assert_allclose(single.scores[0], batched.scores[i], atol=1e-6)
    _same(one.search_embeddings(q, qf, k=10), batched)


def test_ivf_short_shortlist_falls_back_exactly_in_both():
    one, many = _pair("IVF64,Flat")
    one.reconfigure(nprobe=1)
    many.reconfigure(nprobe=1)
    q, qf = _queries()
    _same(
        one.search_embeddings(q, qf, k=10, shortlist=200), many.search_embeddings(q, qf, k=10, shortlist=200)
    )


def test_ties_are_settled_the_same_way():
    """Duplicate vectors: equal scores rank the earlier document first, in both, also at the
    edge of the shortlist and of the top k."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 12)).astype(np.float32)
    src = np.concatenate([base] * 6)
    ids = [f"t{i}" for i in range(len(src))]
    config = CascadeConfig(coarse_dim=6, transform="prefix", shortlist=7)
    one = CascadeIndex.build_from_embeddings(src, src, ids=ids, config=config)
    many = ShardedIndex.build_from_embeddings(src, src, ids=ids, config=config, shards=4)
    q = base[:5] + 0.01
    for mode in ("cascade", "coarse", "fine"):
        a = one.search_embeddings(q, q, k=5, mode=mode)
        _same(a, many.search_embeddings(q, q, k=5, mode=mode))
    first = one.search_embeddings(base[:1], base[:1], k=6, mode="fine").ids[0]
    assert first == ["t0", "t40", "t80", "t120", "t160", "t200"]


def test_writes_route_to_one_shard_and_match_one_index():
    one, many = _pair("Flat")
    src, fine, _, _ = _data(60, seed=5)
    new_ids = [f"new-{i}" for i in range(30)] + [f"doc-{i}" for i in range(30)]  # 30 new, 30 upserts
    for index in (one, many):
        index.add_embeddings(src, fine, ids=new_ids, texts=[f"text {i}" for i in range(60)])
        assert index.delete(["doc-100", "doc-101", "nope"]) == 2
    q, qf = _queries()
    _same(one.search_embeddings(q, qf, k=10), many.search_embeddings(q, qf, k=10))
    assert "doc-5" in many and "doc-100" not in many and len(many) == len(one)
    assert [d.text for d in many.get_by_ids(["doc-3", "zzz", "doc-1"])] == ["text 33", "text 31"]
    got, vectors = many.fine_vectors(["doc-1", "nope"])
    assert got == ["doc-1"] and vectors.shape == (1, 16)
    assert one.ids() == many.ids()


def test_unknown_filter_field_is_an_error_like_one_index():
    one, many = _pair("Flat")
    q, qf = _queries(2)
    for index in (one, many):
        with pytest.raises(ValueError, match="unknown filter field 'nope'"):
            index.search_embeddings(q, qf, filter={"nope": 1})


def test_reconfigure_refits_one_coarse_stage_like_one_index():
    one, many = _pair("Flat")
    src = _data()[0]
    for index in (one, many):
        index.reconfigure(coarse_dim=12, index_type="IVF8,Flat", nprobe=2, coarse_source=src)
    q, qf = _queries()
    _same(one.search_embeddings(q, qf, k=10), many.search_embeddings(q, qf, k=10))
    with pytest.raises(TypeError, match="unexpected setting"):
        many.reconfigure(coarse_dims=3)


def test_save_load_and_generations(tmp_path):
    one, many = _pair("IVF16,Flat")
    folder = tmp_path / "idx"
    many.save(folder)
    manifest = json.loads((folder / "shards.json").read_text())
    assert manifest["count"] == 2500 and len(manifest["shards"]) == 3
    loaded = CascadeIndex.load(folder)
    assert isinstance(loaded, ShardedIndex)
    q, qf = _queries()
    _same(one.search_embeddings(q, qf, k=10), loaded.search_embeddings(q, qf, k=10))
    # one shard changes: only that shard is rewritten, as the next generation
    target = next(i for i in range(50) if shard_of(f"doc-{i}", 3) == 1)
    loaded.delete([f"doc-{target}"])
    one.delete([f"doc-{target}"])
    loaded.save(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["shard-0000-g000001", "shard-0001-g000002", "shard-0002-g000001", "shards.json"]
    again = CascadeIndex.load(folder)
    _same(one.search_embeddings(q, qf, k=10), again.search_embeddings(q, qf, k=10))
    shard = CascadeIndex.load(folder / "shard-0001-g000002")  # a shard is an index on its own
    assert isinstance(shard, CascadeIndex) and len(shard) == again.stats()["documents"] - sum(
        len(CascadeIndex.load(folder / n)) for n in ("shard-0000-g000001", "shard-0002-g000001")
    )


def test_interrupted_save_leaves_the_previous_index(tmp_path, monkeypatch):
    _, many = _pair("Flat")
    folder = tmp_path / "idx"
    many.save(folder)
    before = CascadeIndex.load(folder)
    before.delete(["doc-1", "doc-2", "doc-3", "doc-4"])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shardset, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        before.save(folder)
    monkeypatch.undo()
    after = CascadeIndex.load(folder)
    assert len(after) == 2500
    before.save(folder)  # the next save cleans up what the interrupted one left
    assert len(CascadeIndex.load(folder)) == 2496
    assert len([p for p in folder.iterdir() if p.name.startswith("shard-")]) == 3


def test_corrupted_shard_is_refused(tmp_path):
    _, many = _pair("Flat")
    many.save(tmp_path / "idx")
    shard = next((tmp_path / "idx").glob("shard-0001-*"))
    (shard / "manifest.json").write_text((shard / "manifest.json").read_text().replace('"count"', '"count" '))
    with pytest.raises(IndexFormatError, match="shard 1 does not match"):
        CascadeIndex.load(tmp_path / "idx")


def test_vectorstore_opens_a_sharded_folder(tmp_path, tiny_encoder):
    from esrag.langchain.vectorstore import CascadeVectorStore

    texts = [f"the cat sees {w} number {i}" for i, w in enumerate(["dog", "bird", "fish", "tree"] * 10)]
    many = ShardedIndex.build(tiny_encoder, texts, ids=[f"t{i}" for i in range(40)], shards=3)
    many.save(tmp_path / "idx")
    store = CascadeVectorStore.load(tmp_path / "idx", tiny_encoder)
    one = CascadeIndex.build(tiny_encoder, texts, ids=[f"t{i}" for i in range(40)])
    hits = store.similarity_search_with_score("the cat sees fish", k=3)
    expected = one.search("the cat sees fish", k=3)
    assert [d.id for d, _ in hits] == expected.ids[0]
