"""Tests that attack (issue 12, item 7): property-based inputs for the table readers, the
filters and the row map; a reader process loading while a writer process saves; a full
disk; a writer killed with SIGKILL at random moments; searches racing upserts and deletes.

Each attack prints one ``ATTACK name: ...`` line with its trials and outcomes (``pytest -s``
shows them). Together they run in well under two minutes on two cores.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from esrag.data import DataError, read_corpus, read_table
from esrag.index import CascadeIndex
from esrag.index.batch import check_metadatas
from esrag.index.docstore import DocStore
from esrag.index.format import data_folder
from esrag.index.rows import RowMap
from tests.attack_worker import N, build, vectors, which_set

REPO = Path(__file__).resolve().parents[1]
SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _worker(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.attack_worker", *args],
        cwd=REPO,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def _report(name: str, text: str) -> None:
    print(f"\nATTACK {name}: {text}")


def _stray(folder: Path) -> list[str]:
    """Drafts, trash and superseded versions left in or beside an index folder."""
    prefixes = (".tmp-", ".trash-", f".{folder.name}.tmp-", f".{folder.name}.old-")
    found = [p.name for p in [*folder.parent.iterdir(), *folder.rglob("*")] if p.name.startswith(prefixes)]
    versions = folder / "versions"
    if versions.is_dir():
        found += [p.name for p in versions.iterdir() if p != data_folder(folder)]
    return found


# ====================================================================== properties: tables
_TEXT = hs.text(hs.characters(exclude_categories=("Cs",)), max_size=12)


@SETTINGS
@given(raw=hs.binary(max_size=200), suffix=hs.sampled_from([".jsonl", ".json", ".csv", ".tsv"]))
def test_table_reader_on_arbitrary_bytes(tmp_path: Path, raw: bytes, suffix: str) -> None:
    """Any bytes: rows, or a DataError naming the file; never another exception."""
    path = tmp_path / f"r{suffix}"
    path.write_bytes(raw)
    try:
        rows = list(read_table(path))
    except DataError as exc:
        assert str(exc).startswith(str(path))
        return
    assert rows and all(isinstance(r.values, dict) for r in rows)


@SETTINGS
@given(raw=hs.lists(hs.binary(max_size=30) | _TEXT.map(str.encode), max_size=6))
def test_corpus_reader_on_arbitrary_json_lines(tmp_path: Path, raw: list[bytes]) -> None:
    """Lines of arbitrary bytes or text: documents the index can store, or a DataError."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n".join(raw))
    try:
        docs = list(read_corpus(path))
    except DataError as exc:
        assert str(exc).startswith(str(path))
        return
    for doc in docs:  # what the reader lets through, the index accepts and JSON can write
        check_metadatas([doc.metadata], 1)
        json.dumps([doc.id, doc.text], ensure_ascii=False).encode("utf-8")


_VALUE = hs.none() | hs.booleans() | hs.integers(-5, 5) | hs.floats(allow_nan=False, width=32) | _TEXT
_FIELDS = ("id", "text", "a", "b")


@SETTINGS
@given(
    records=hs.lists(
        hs.fixed_dictionaries(
            {"id": _TEXT.filter(lambda s: s.strip()), "text": _TEXT},
            optional={"a": _VALUE, "b": hs.lists(hs.integers(-(2**63), 2**63 - 1), max_size=3)},
        ),
        min_size=1,
        max_size=8,
    )
)
def test_parquet_round_trip(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: [r.get(name) for r in records] for name in _FIELDS if any(name in r for r in records)}
    try:
        table = pa.table(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one column: not a Parquet table
        return
    pq.write_table(table, tmp_path / "r.parquet", row_group_size=3)
    rows = list(read_table(tmp_path / "r.parquet"))
    assert [r.values for r in rows] == table.to_pylist()
    assert [r.position.row for r in rows] == list(range(1, len(records) + 1))


@SETTINGS
@given(
    cells=hs.lists(
        hs.lists(
            hs.text(hs.characters(exclude_categories=("Cs",), exclude_characters="\r\x00"), max_size=8),
            min_size=2,
            max_size=2,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_csv_positions_name_the_first_line_of_each_record(tmp_path: Path, cells: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["x", "y"])
    starts = []
    for record in cells:
        starts.append(buffer.getvalue().count("\n") + 1)
        writer.writerow(record)
    (tmp_path / "r.csv").write_text(buffer.getvalue(), encoding="utf-8")
    kept = [(s, r) for s, r in zip(starts, cells, strict=True) if any(c.strip() for c in r)]
    if not kept:
        return
    rows = list(read_table(tmp_path / "r.csv"))
    assert [(r.position.line, [r.values["x"], r.values["y"]]) for r in rows] == kept


# ====================================================================== properties: filters
_META = hs.dictionaries(
    hs.sampled_from(["g", "h", "tag"]),
    hs.integers(0, 3) | hs.sampled_from(["0", "1", "x"]) | hs.booleans(),
    max_size=3,
)


def _matches(meta: dict[str, Any], spec: dict[str, list[Any]]) -> bool:
    key = lambda v: json.dumps(v)  # noqa: E731 - JSON equality: 1, "1" and True differ
    return all(
        field in meta and key(meta[field]) in {key(v) for v in values} for field, values in spec.items()
    )


@SETTINGS
@given(
    ops=hs.lists(hs.tuples(hs.booleans(), _META), min_size=1, max_size=25),
    spec=hs.dictionaries(
        hs.sampled_from(["g", "h", "tag"]),
        hs.lists(hs.integers(0, 3) | hs.sampled_from(["0", "x"]) | hs.booleans(), min_size=1, max_size=3),
        min_size=1,
        max_size=2,
    ),
    form=hs.sampled_from(["plain", "ops"]),
)
def test_filters_match_a_brute_force_model(
    ops: list[tuple[bool, dict[str, Any]]], spec: dict[str, list[Any]], form: str
) -> None:
    """Random appends and removals, then a filter: the rows are exactly the brute-force ones."""
    store, model, ever = DocStore(), {}, set()
    for remove, meta in ops:
        if remove and model:
            row = sorted(model)[len(meta) % len(model)]
            store.remove(row)
            del model[row]
        else:
            model[store.append("t", check_metadatas([meta], 1)[0])] = meta
            ever.update(meta)
    if form == "plain":
        flt: dict[str, Any] = {f: (v[0] if len(v) == 1 else v) for f, v in spec.items()}
    else:
        flt = {f: {"$in": v} for f, v in spec.items()}
    live = np.array(sorted(model), dtype=np.int64)
    if not set(spec) <= ever:  # a field no document ever had is an error, not an empty result
        with pytest.raises(ValueError, match="unknown filter field"):
            store.matching_rows(flt, live)
        return
    got = store.matching_rows(flt, live).tolist()
    assert got == sorted(r for r, meta in model.items() if _matches(meta, spec))


# ====================================================================== properties: row map
@SETTINGS
@given(ops=hs.lists(hs.tuples(hs.booleans(), hs.integers(0, 15)), max_size=50))
def test_row_map_survives_compaction(tmp_path: Path, ops: list[tuple[bool, int]]) -> None:
    """After random upserts and removals, the compacted map a save writes restores the same
    live documents, in the same order, with the same coarse ids; deleted ids stay unknown.
    """
    rows, live = RowMap(), {}
    for is_add, key in ops:
        doc_id = f"d{key}"
        rows.remove([doc_id])
        live.pop(doc_id, None)
        if is_add:
            _, coarse = rows.add([doc_id])
            live[doc_id] = int(coarse[0])
    kept = rows.live()
    rows.write_coarse_ids(tmp_path / "ids.npy", kept)
    back = RowMap.restore(rows.doc_ids(kept.tolist()), np.load(tmp_path / "ids.npy"), rows.next_coarse_id)
    assert back.doc_ids(back.live().tolist()) == rows.doc_ids(kept.tolist())
    assert {i: int(back.coarse_ids(np.array([back.row_of(i)]))[0]) for i in live} == live
    gone = [f"d{k}" for k in range(16) if f"d{k}" not in live]
    assert all(back.row_of(i) is None for i in gone)
    if back.num_rows:
        assert (back.rows_of_coarse(np.array(sorted(live.values()), dtype=np.int64)) >= 0).all()
    new_rows, new_coarse = back.add(["fresh"])
    assert int(new_coarse[0]) == rows.next_coarse_id and int(new_rows[0]) == len(live)


# ====================================================================== processes: save vs load
def test_a_reader_process_never_sees_a_save_in_progress(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    build("A").save(folder)
    saver = _worker("saver", str(folder), "9")
    try:
        assert saver.stdout is not None and saver.stdout.readline().strip() == "READY"
        reader = _worker("reader", str(folder), "7")
        out, err = reader.communicate(timeout=120)
    finally:
        saves = saver.communicate(timeout=120)[0]
    head, *failures = out.strip().splitlines()
    fields = head.split()
    loads, failed, seen_a, seen_b = int(fields[1]), int(fields[3]), int(fields[5]), int(fields[7])
    _report(
        "save-vs-load",
        f"{loads} loads in another process ({seen_a} A, {seen_b} B) "
        f"during {saves.split()[-1]} saves; {failed} failed",
    )
    assert failed == 0, "\n".join(failures) + err
    assert loads >= 20 and seen_a and seen_b


# ====================================================================== a full disk
@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs mount rights: root on Linux; skipped elsewhere, e.g. on CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if sys.platform != "linux":
        pytest.skip("tmpfs mounts need Linux")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def test_a_full_disk_is_an_oserror_and_keeps_the_previous_version(small_disk: Path) -> None:
    folder = small_disk / "idx"
    build("A").save(folder)
    outcomes: collections.Counter[str] = collections.Counter()
    size = N
    for extra in (1500, 7000, 400, 20_000, 0):  # fits, fine.npy overflows, fits, coarse overflows, fits
        proc = _worker("fill", str(folder), str(extra))
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"the saving process died (signal {-proc.returncode}): {err[-2000:]}"
        result = out.strip().splitlines()[-1]
        print(f"  +{extra}: {result[:160]}")
        if result == "SAVED":
            size += extra
            outcomes["saved"] += 1
        else:
            assert result.startswith("OSERROR 28 ") and f"{folder}: saving the index failed" in result, result
            outcomes["ENOSPC"] += 1
        assert len(CascadeIndex.load(folder)) == size  # the old or the new version, whole
        assert _stray(folder) == []  # a failed save removed its draft
    _report(
        "disk-full",
        f"{sum(outcomes.values())} saves on a 1 MiB tmpfs: {dict(outcomes)}; "
        "the process survived each, the index always loaded",
    )
    assert outcomes["saved"] >= 2 and outcomes["ENOSPC"] >= 2


# ====================================================================== SIGKILL during saves
def test_kill_9_during_saves_leaves_the_old_or_the_new_set(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    build("A").save(folder)
    rng = random.Random(12)
    outcomes: collections.Counter[str] = collections.Counter()
    trials, deadline = 0, time.monotonic() + 15
    while trials < 12 or (trials < 20 and time.monotonic() < deadline):
        on_disk = which_set(CascadeIndex.load(folder))
        proc = _worker("killable", str(folder), "B" if on_disk == "A" else "A")
        assert proc.stdout is not None
        lines: list[str] = []
        reading = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
        reading.start()
        while not lines and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))  # somewhere inside a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reading.join(timeout=30)
        done = max([int(line.split()[1]) for line in lines if line.startswith("SAVED")], default=0)
        first = "B" if on_disk == "A" else "A"
        old = on_disk if done == 0 else (first if done % 2 else on_disk)
        new = first if (done + 1) % 2 else on_disk
        got = which_set(CascadeIndex.load(folder))  # raises unless it is one whole set
        assert got in (old, new)
        outcomes["old" if got == old else "new"] += 1
        trials += 1
    index = CascadeIndex.load(folder)
    index.save(folder)  # the killed writers' drafts are removed by the next save
    assert _stray(folder) == []
    _report(
        "kill-9",
        f"{trials} writers killed with SIGKILL mid-save loop: {dict(outcomes)} (old = the last "
        "completed save, new = the save it was in); every load was one whole set",
    )
    assert trials >= 12


# ====================================================================== searches vs writes
@pytest.mark.parametrize("index_type", ["Flat", "HNSW32"])
def test_soak_search_upsert_delete_never_returns_a_deleted_id(tmp_path: Path, index_type: str) -> None:
    index = build("A", index_type=index_type)
    stop = threading.Event()
    gone: set[str] = set()  # ids whose delete has returned (never added back)
    lock = threading.Lock()
    errors: list[BaseException] = []
    counts: collections.Counter[str] = collections.Counter()
    queries = vectors([f"q{i}" for i in range(6)])

    def writer() -> None:
        try:
            k = 0
            while not stop.is_set():
                fresh = [f"n{k}-{j}" for j in range(6)]
                v = vectors(fresh)
                index.add_embeddings(
                    v, v, ids=fresh, texts=[f"{i} new" for i in fresh], metadatas=[{"set": "N"}] * 6
                )
                up = [f"a{(k * 7 + j) % N}" for j in range(3)]
                uv = vectors([f"{i}v{k}" for i in up])
                index.add_embeddings(
                    uv, uv, ids=up, texts=[f"{i} v{k}" for i in up], metadatas=[{"set": "A"}] * 3
                )
                doomed = fresh[:4]
                index.delete(doomed)
                with lock:
                    gone.update(doomed)
                counts["upserts"] += 9
                counts["deletes"] += 4
                k += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def searcher(seed: int) -> None:
        try:
            rng = random.Random(seed)
            while not stop.is_set():
                with lock:
                    banned = frozenset(gone)
                mode = rng.choice(["cascade", "fine", "coarse"])
                flt = rng.choice([None, {"set": "N"}, {"set": ["A", "N"]}])
                got = index.search_embeddings(queries, queries, k=8, shortlist=40, filter=flt, mode=mode)
                for ids in got.ids:
                    assert not banned & set(ids), f"deleted ids returned: {sorted(banned & set(ids))}"
                    assert len(ids) == len(set(ids))
                    counts["results"] += len(ids)
                counts["searches"] += 1
        except BaseException as exc:
            errors.append(exc)

    def saver() -> None:
        try:
            while not stop.is_set():
                with lock:
                    banned = frozenset(gone)
                index.save(tmp_path / "idx")
                loaded = CascadeIndex.load(tmp_path / "idx")
                assert not banned & set(loaded.ids())
                counts["saves"] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=saver)]
    threads += [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    _report(
        f"soak-{index_type}",
        f"{counts['searches']} searches ({counts['results']} hits checked) while {counts['upserts']} "
        f"upserts, {counts['deletes']} deletes and {counts['saves']} save+load rounds ran: "
        "0 deleted ids returned",
    )
    assert counts["searches"] >= 50 and counts["deletes"] >= 20 and counts["saves"] >= 2
    assert gone.isdisjoint(index.ids())
    assert len(index) == N + counts["upserts"] // 9 * 2  # 6 new minus 4 deleted per round
