"""esrag.index.sync: diff documents against an index by content hash."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from esrag.data import Document
from esrag.data.corpus import content_hash
from esrag.index import CascadeConfig, CascadeIndex
from esrag.index.sync import sync


class _CountingEncoder:
    """The tiny encoder, counting the texts it encodes."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self.encoded: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode(self, texts: list[str], views: Any = None, **kwargs: Any) -> Any:
        self.encoded.extend(texts)
        return self._encoder.encode(texts, views, **kwargs)


def _docs(n: int, *, changed: int | None = None) -> list[Document]:
    words = ["cat", "dog", "bird", "fish", "tree", "car", "river", "city"]
    return [
        Document(
            f"d{i}",
            f"the {words[i % 8]} sees the {words[(i * 3) % 8]} {i}" + (" now" if i == changed else ""),
            {"g": i % 3},
        )
        for i in range(n)
    ]


def test_content_hash_is_the_documents() -> None:
    doc = Document("a", "some text", {"x": 1, "y": "z"})
    assert content_hash(doc.text, doc.metadata) == doc.content_hash
    assert content_hash("some text", {"y": "z", "x": 1}) == doc.content_hash  # key order is irrelevant
    assert content_hash("some text", {"x": 2, "y": "z"}) != doc.content_hash


def test_sync_adds_changes_removes_and_keeps(tiny_encoder: Any) -> None:
    counting = _CountingEncoder(tiny_encoder)
    index = CascadeIndex(counting, CascadeConfig(coarse_layer=2, coarse_dim=8, transform="prefix"))
    first = sync(index, _docs(12))
    assert sorted(first.added) == sorted(f"d{i}" for i in range(12)) and first.encoded == 12
    assert not first.changed and not first.removed and not first.kept
    counting.encoded.clear()
    docs = _docs(10, changed=3)  # d10, d11 vanish; d3's text changes
    docs[5] = Document("d5", docs[5].text, {"g": 99})  # metadata change counts too
    docs.append(Document("new", "a new red car", {}))
    report = sync(index, docs)
    assert report.added == ["new"]
    assert report.changed == ["d3", "d5"]
    assert sorted(report.removed) == ["d10", "d11"]
    assert len(report.kept) == 8 and report.encoded == 3 and report.modified
    assert sorted(counting.encoded) == sorted([docs[3].text, docs[5].text, "a new red car"])
    assert sorted(index.ids()) == sorted(d.id for d in docs)
    assert index.get_by_ids(["d5"])[0].metadata == {"g": 99}
    again = sync(index, docs)
    assert not again.modified and again.encoded == 0 and len(again.kept) == len(docs)
    hits = index.search(["a new red car"], k=1, mode="fine")
    assert hits.ids == [["new"]]
    assert np.isfinite(hits.scores[0][0])


def test_sync_keep_missing_and_duplicates(tiny_encoder: Any) -> None:
    index = CascadeIndex(tiny_encoder, CascadeConfig(coarse_layer=2, coarse_dim=8, transform="prefix"))
    sync(index, _docs(6))
    report = sync(index, _docs(3), delete_missing=False)
    assert not report.removed and len(index) == 6
    with pytest.raises(ValueError, match="sync: document id 'd0' appears twice"):
        sync(index, [*_docs(2), *_docs(2)])
