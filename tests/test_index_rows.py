"""RowMap: id ↔ row ↔ coarse-id bookkeeping, exact against a plain-dict model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from esrag.index.rows import RowMap


def test_add_remove_and_lookups() -> None:
    rows = RowMap()
    r, c = rows.add(["a", "b", "c"])
    assert r.tolist() == [0, 1, 2] and c.tolist() == [0, 1, 2]
    assert len(rows) == 3 and "b" in rows and rows.row_of("b") == 1
    removed_rows, removed_coarse = rows.remove(["b", "zzz"])  # unknown ids are skipped
    assert removed_rows.tolist() == [1] and removed_coarse.tolist() == [1]
    assert "b" not in rows and rows.row_of("b") is None and len(rows) == 2
    r2, c2 = rows.add(["b"])  # a re-added id gets a new row and a new coarse id
    assert r2.tolist() == [3] and c2.tolist() == [3]
    assert rows.live().tolist() == [0, 2, 3]
    assert rows.alive_mask().tolist() == [True, False, True, True]
    assert rows.doc_ids([0, 2, 3]) == ["a", "c", "b"]
    assert rows.found(["c", "nope", "a"]) == [("c", 2), ("a", 0)]
    assert rows.rows_of_coarse(np.array([[3, 1, -1, 99, 0]])).tolist() == [[3, -1, -1, -1, 0]]
    assert rows.coarse_ids(np.array([0, 3])).tolist() == [0, 3]
    assert rows.num_rows == 4 and rows.next_coarse_id == 4


def test_add_refuses_present_or_repeated_ids() -> None:
    rows = RowMap()
    rows.add(["a"])
    with pytest.raises(ValueError, match=r"ids already present or repeated: \['a'\]"):
        rows.add(["a"])
    with pytest.raises(ValueError, match="ids already present or repeated"):
        rows.add(["x", "x"])
    assert len(rows) == 1


def test_doc_id_of_a_dead_row_is_an_error() -> None:
    rows = RowMap()
    rows.add(["a"])
    rows.remove(["a"])
    with pytest.raises(KeyError, match="row 0 holds no live document"):
        rows.doc_id(0)


def test_restore_round_trip_and_errors(tmp_path: Path) -> None:
    rows = RowMap()
    rows.add(["a", "b", "c", "d"])
    rows.remove(["b"])
    live = rows.live()
    rows.write_coarse_ids(tmp_path / "ids.npy", live)
    back = RowMap.restore(rows.doc_ids(live.tolist()), np.load(tmp_path / "ids.npy"), rows.next_coarse_id)
    assert back.doc_ids(back.live().tolist()) == ["a", "c", "d"]
    assert back.rows_of_coarse(np.array([0, 1, 2, 3])).tolist() == [0, -1, 1, 2]
    with pytest.raises(ValueError, match=r"expected int64 ids of shape \(2,\), got int32"):
        RowMap.restore(["a", "b"], np.array([0, 1], np.int32), 2)
    with pytest.raises(ValueError, match=r"ids outside 0\.\.1"):
        RowMap.restore(["a", "b"], np.array([0, 2], np.int64), 2)
    with pytest.raises(ValueError, match="duplicate ids"):
        RowMap.restore(["a", "b"], np.array([1, 1], np.int64), 2)
    with pytest.raises(ValueError, match="ids must increase with the row"):
        RowMap.restore(["a", "b"], np.array([1, 0], np.int64), 2)
    with pytest.raises(ValueError, match="duplicate document ids"):
        RowMap.restore(["a", "a"], np.array([0, 1], np.int64), 2)


def test_restore_allocates_nothing_sized_by_next_id() -> None:
    back = RowMap.restore(["a"], np.array([5], np.int64), 10**15)  # would be 8 PB as a table
    assert back.rows_of_coarse(np.array([5, 6, 10**14])).tolist() == [0, -1, -1]


@settings(max_examples=60, deadline=None)
@given(hs.lists(hs.tuples(hs.booleans(), hs.integers(0, 12)), max_size=60))
def test_matches_a_dict_model(ops: list[tuple[bool, int]]) -> None:
    """Random adds/removes: lookups agree with a dict of id -> (row, coarse id)."""
    rows = RowMap()
    model: dict[str, tuple[int, int]] = {}
    next_row = 0
    for is_add, key in ops:
        doc_id = f"d{key}"
        if is_add:
            if doc_id in model:
                rows.remove([doc_id])
                del model[doc_id]
            r, c = rows.add([doc_id])
            assert (int(r[0]), int(c[0])) == (next_row, next_row)
            model[doc_id] = (next_row, next_row)
            next_row += 1
        else:
            rows.remove([doc_id])
            model.pop(doc_id, None)
    assert len(rows) == len(model)
    assert rows.live().tolist() == sorted(r for r, _ in model.values())
    for doc_id, (row, coarse) in model.items():
        assert rows.row_of(doc_id) == row and rows.doc_id(row) == doc_id
        assert rows.rows_of_coarse(np.array([coarse])).tolist() == [row]
    dead = sorted(set(range(next_row)) - {c for _, c in model.values()})
    assert (rows.rows_of_coarse(np.array(dead, dtype=np.int64)) == -1).all()
