"""Progressive cascade search: the coarse search starts at the coarse layer, on a worker thread,
while the deeper layers run; ids and scores are those of the sequential cascade."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from esrag.index import CascadeConfig, CascadeIndex
from esrag.index import progressive as progressive_module
from tests.conftest import layers_run

WORDS = "cat dog bird fish tree car house river city music paper cell gene protein drug virus".split()
TEXTS = [f"the {a} sees the {b} and the {c}" for a in WORDS for b in WORDS[:6] for c in WORDS[5:9] if a != b][
    :150
]
QUERIES = ["the cat sees the dog", "a protein and a gene", "the river city", "music paper", "drug virus cell"]


def both(index: CascadeIndex, queries: list[str], **kwargs: Any) -> tuple[Any, Any]:
    """(progressive, sequential) results of the same search on the same index."""
    index.reconfigure(progressive=True)
    fast = index.search(queries, **kwargs)
    index.reconfigure(progressive=False)
    slow = index.search(queries, **kwargs)
    index.reconfigure(progressive=True)
    return fast, slow


@pytest.mark.parametrize(
    ("transform", "index_type"),
    [("prefix", "Flat"), ("pca", "Flat"), ("adapter", "IVF4,Flat"), ("pca", "HNSW8")],
)
def test_progressive_equals_sequential(tiny_encoder: Any, transform: str, index_type: str) -> None:
    cfg = CascadeConfig(coarse_layer=1, coarse_dim=8, transform=transform, index_type=index_type, nprobe=2)
    index = CascadeIndex.build(tiny_encoder, TEXTS, config=cfg)
    for queries, k, shortlist in ((QUERIES, 5, 20), (QUERIES[:1], 3, 10), (QUERIES * 14, 4, 12)):
        fast, slow = both(index, queries, k=k, shortlist=shortlist)
        assert fast.ids == slow.ids  # identical, not merely close
        assert fast.scores == slow.scores
        assert fast.exited == slow.exited == []
    # filters: through the cascade (an IDSelector) and, matching few documents, exactly
    metas = [{"group": i % 2} for i in range(len(TEXTS))]
    for threshold in (0, 20_000):
        cfg = CascadeConfig(
            coarse_layer=1, coarse_dim=8, transform=transform, exact_filter_threshold=threshold
        )
        filtered = CascadeIndex.build(tiny_encoder, TEXTS, metadatas=metas, config=cfg)
        fast, slow = both(filtered, QUERIES, k=5, shortlist=10, filter={"group": 0})
        assert fast.ids == slow.ids and fast.scores == slow.scores
        assert all(int(i) % 2 == 0 for ids in fast.ids for i in map(filtered.ids().index, ids))


def test_coarse_search_runs_on_a_worker_while_the_deeper_layers_run(
    tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = CascadeIndex.build(tiny_encoder, TEXTS, config=CascadeConfig(coarse_layer=1, coarse_dim=8))
    assert index.config.progressive is False  # opt-in
    index.reconfigure(progressive=True)
    expected = index.search(QUERIES, k=5)  # progressive: the reference is checked above
    last_layer_ran = threading.Event()
    seen: list[str] = []
    original = progressive_module.cascade_shortlist

    def waiting(*args: Any) -> Any:
        seen.append(threading.current_thread().name)
        # deadlocks (times out) unless the encoder's last layer runs while this search waits
        assert last_layer_ran.wait(timeout=20), "the coarse search blocked the encoder pass"
        return original(*args)

    monkeypatch.setattr(progressive_module, "cascade_shortlist", waiting)
    hook = tiny_encoder.model.encoder.layer[2].register_forward_hook(lambda *_a: last_layer_ran.set())
    try:
        got = index.search(QUERIES, k=5)
    finally:
        hook.remove()
    assert seen and seen[0].startswith("esrag-coarse")
    assert got.ids == expected.ids and got.scores == expected.scores


def test_shallow_query_with_an_exact_coarse_source_is_progressive(tiny_encoder: Any) -> None:
    cfg = CascadeConfig(coarse_layer=1, coarse_dim=8, query_layer=2)  # ridge map, pass to layer 2
    index = CascadeIndex.build(tiny_encoder, TEXTS, config=cfg)
    with layers_run(tiny_encoder) as calls:
        fast, slow = both(index, QUERIES, k=5)
    assert sorted(set(calls)) == [1, 2]
    assert fast.ids == slow.ids and fast.scores == slow.scores


def test_not_progressive_when_the_coarse_layer_is_the_last(
    tiny_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = CascadeConfig(coarse_layer=3, coarse_dim=8, progressive=True)
    index = CascadeIndex.build(tiny_encoder, TEXTS, config=cfg)
    staged: list[int] = []
    original = progressive_module.staged_search
    monkeypatch.setattr(
        progressive_module, "staged_search", lambda *a, **kw: staged.append(1) or original(*a, **kw)
    )
    source, fine = index.encode_queries(QUERIES)
    got = index.search(QUERIES, k=5)
    assert staged == []  # nothing to overlap: the sequential path
    want = index.search_embeddings(source, fine, k=5)
    assert got.ids == want.ids
    np.testing.assert_array_equal(got.scores, want.scores)


def test_progressive_flag_validated_and_persisted(tiny_encoder: Any, tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"CascadeConfig.progressive must be True or False, got 'yes'"):
        CascadeConfig(progressive="yes")  # type: ignore[arg-type]
    index = CascadeIndex.build(
        tiny_encoder, TEXTS[:40], config=CascadeConfig(coarse_layer=1, progressive=True)
    )
    index.save(tmp_path / "ix")
    assert CascadeIndex.load(tmp_path / "ix", tiny_encoder).config.progressive is True
