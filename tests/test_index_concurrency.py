"""Searches running while other threads add and delete never crash nor see half-written state."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from esrag.index import CascadeConfig, CascadeIndex

DIM = 16


def _vector(i: int) -> np.ndarray:
    """The vector of document ``doc{i}``: a deterministic function of its number."""
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("index_type", ["Flat", "HNSW32"])
def test_search_during_writes(index_type: str) -> None:
    base = 300
    vectors = np.stack([_vector(i) for i in range(base)])
    index = CascadeIndex.build_from_embeddings(
        vectors,
        vectors,
        ids=[f"doc{i}" for i in range(base)],
        texts=[f"text {i}" for i in range(base)],
        metadatas=[{"batch": -1} for _ in range(base)],
        config=CascadeConfig(coarse_dim=8, index_type=index_type),
    )
    errors: list[BaseException] = []
    stop = threading.Event()
    queries = np.stack([_vector(10_000 + i) for i in range(8)])

    started = threading.Barrier(5)
    rounds = [0, 0, 0]

    def writer(offset: int) -> None:
        try:
            started.wait(timeout=60)
            for b in range(12):
                start = base + offset * 1000 + b * 10
                ids = list(range(start, start + 10))
                batch = np.stack([_vector(i) for i in ids])
                index.add_embeddings(
                    batch,
                    batch,
                    ids=[f"doc{i}" for i in ids],
                    texts=[f"text {i}" for i in ids],
                    metadatas=[{"batch": b} for _ in ids],
                )
                index.delete([f"doc{i}" for i in ids[:5]])
                index.delete([f"doc{offset * 7 + b}"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader(slot: int) -> None:
        try:
            started.wait(timeout=60)
            while not stop.is_set() or rounds[slot] == 0:
                rounds[slot] += 1
                for mode in ("cascade", "fine", "coarse"):
                    got = index.search_embeddings(queries, queries, k=5, shortlist=20, mode=mode)
                    for q, (ids, scores) in enumerate(zip(got.ids, got.scores, strict=True)):
                        assert len(ids) == 5 and len(set(ids)) == 5
                        if mode != "coarse":  # every hit is a whole document: its own vector
                            want = [float(_vector(int(i[3:])) @ queries[q]) for i in ids]
                            np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-5)
                filtered = index.search_embeddings(queries, queries, k=3, filter={"batch": 3})
                for ids in filtered.ids:
                    assert all(int(i[3:]) >= base for i in ids)
                docs = index.get_by_ids([f"doc{base + 5}", "doc1"])
                assert all(d.text == f"text {d.id[3:]}" for d in docs)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(r,)) for r in range(3)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    stop.set()
    for thread in readers:
        thread.join(timeout=120)
    assert not errors, errors[0]
    assert min(rounds) > 0
    deleted = {w * 7 + b for w in range(2) for b in range(12)}
    assert len(index) == base + 2 * 12 * 5 - len(deleted)


class _ClearBeforeFirstWrite:
    """Wraps an index's lock: the first ``write()`` first clears the index, exactly as if
    another thread called ``clear()`` between an add's model pass and its insert."""

    def __init__(self, index: CascadeIndex) -> None:
        self.index, self.inner, self.fired = index, index._lock, False

    def read(self) -> contextlib.AbstractContextManager[None]:
        return self.inner.read()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        if not self.fired:
            self.fired = True
            self.index.clear()
        with self.inner.write():
            yield


def test_clear_between_model_pass_and_insert() -> None:
    vectors = np.stack([_vector(i) for i in range(100)])
    index = CascadeIndex.build_from_embeddings(
        vectors[:50], vectors[:50], ids=[f"old{i}" for i in range(50)], config=CascadeConfig(coarse_dim=8)
    )
    index._lock = _ClearBeforeFirstWrite(index)  # type: ignore[assignment]
    index.add_embeddings(vectors[50:], vectors[50:], ids=[f"new{i}" for i in range(50)])
    assert index._lock.fired  # type: ignore[attr-defined]
    # the batch arrived after the clear: it refits the coarse stage and is the whole index
    assert sorted(index.ids()) == sorted(f"new{i}" for i in range(50))
    got = index.search_embeddings(vectors[50:53], vectors[50:53], k=1)
    assert got.ids == [["new0"], ["new1"], ["new2"]]


def test_adds_racing_clears() -> None:
    index = CascadeIndex(None, CascadeConfig(coarse_dim=8, train_size=40))
    errors: list[BaseException] = []
    started = threading.Barrier(2)

    def adder() -> None:
        try:
            started.wait(timeout=60)
            for b in range(30):
                ids = list(range(b * 25, b * 25 + 25))
                batch = np.stack([_vector(i) for i in ids])
                index.add_embeddings(batch, batch, ids=[f"doc{i}" for i in ids])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def clearer() -> None:
        try:
            started.wait(timeout=60)
            for _ in range(30):
                index.clear()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=adder), threading.Thread(target=clearer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[0]
    live = index.ids()
    assert len(live) == len(index)
    if live:  # whatever survived the last clear is searchable and intact
        _, stored = index.fine_vectors(live)
        want = np.stack([_vector(int(i[3:])) for i in live])
        np.testing.assert_allclose(stored, want, atol=1e-6)
