"""Processes the attack tests start: ``python -m tests.attack_worker ROLE FOLDER [ARGS]``.

Every index the workers write holds one of two document sets, told apart by their ids:
set ``A`` (``a0..a{n-1}``) and set ``B`` (``b0..b{n-1}``); each document's text names its
id and the set, and its vector is a function of its id, so a reader can check that what it
loaded is one whole set (never a mix of two saves).

Roles:

``saver FOLDER SECONDS``
    saves A and B alternately into FOLDER for SECONDS (printing ``READY`` after the first
    save and ``SAVES n`` at the end).
``reader FOLDER SECONDS``
    loads FOLDER in a loop for SECONDS, checks each load, prints ``LOADS n FAILURES m`` and
    the first failures' messages.
``killable FOLDER FIRST``
    like ``saver`` forever, starting with set FIRST and printing ``SAVED k`` after each
    save (the parent kills it).
``fill FOLDER EXTRA``
    loads FOLDER, adds EXTRA documents to it and saves: prints ``SAVED`` or ``OSERROR
    errno message`` (a full disk must be an exception, not a signal).
"""

from __future__ import annotations

import sys
import time
import zlib
from pathlib import Path

import numpy as np

from esrag.index import CascadeConfig, CascadeIndex

DIM = 16
N = 300


def vectors(ids: list[str]) -> np.ndarray:
    """Deterministic unit vectors: one per id."""
    out = np.stack([np.random.default_rng(zlib.crc32(i.encode())).standard_normal(DIM) for i in ids])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def doc_set(name: str, n: int = N) -> list[str]:
    """The ids of document set ``name``."""
    return [f"{name.lower()}{i}" for i in range(n)]


def build(name: str, n: int = N, **config: object) -> CascadeIndex:
    """An index holding exactly document set ``name``."""
    ids = doc_set(name, n)
    v = vectors(ids)
    return CascadeIndex.build_from_embeddings(
        v,
        v,
        ids=ids,
        texts=[f"{i} of set {name}" for i in ids],
        metadatas=[{"set": name, "n": k} for k, _ in enumerate(ids)],
        config=CascadeConfig(coarse_dim=8, **config),  # type: ignore[arg-type]
    )


def which_set(index: CascadeIndex) -> str:
    """``"A"`` or ``"B"`` when ``index`` holds exactly one whole set; raises otherwise."""
    ids = index.ids()
    name = "A" if ids and ids[0].startswith("a") else "B"
    if sorted(ids) != sorted(doc_set(name, len(ids))) or len(ids) != N:
        raise AssertionError(f"loaded {len(ids)} ids that are not one whole set: {ids[:3]}...")
    docs = index.get_by_ids(ids[:5] + ids[-5:])
    if any(d.text != f"{d.id} of set {name}" or d.metadata["set"] != name for d in docs):
        raise AssertionError(f"documents of set {name} carry another set's text or metadata")
    probe = vectors(ids[:3])
    if index.search_embeddings(probe, probe, k=1).ids != [[i] for i in ids[:3]]:
        raise AssertionError(f"vectors of set {name} do not match their ids")
    return name


def saver(folder: Path, seconds: float, *, forever: bool = False, first: str = "A") -> None:
    """Save A and B alternately, ``first`` first (see the module docstring)."""
    indexes = [build("A"), build("B")] if first == "A" else [build("B"), build("A")]
    deadline = time.monotonic() + seconds
    saves = 0
    while forever or time.monotonic() < deadline:
        indexes[saves % 2].save(folder)
        saves += 1
        if saves == 1:
            print("READY", flush=True)
        if forever:
            print(f"SAVED {saves}", flush=True)
    print(f"SAVES {saves}", flush=True)


def reader(folder: Path, seconds: float) -> None:
    """Load in a loop, checking each load (see the module docstring)."""
    deadline = time.monotonic() + seconds
    loads, failures, seen = 0, [], {"A": 0, "B": 0}
    while time.monotonic() < deadline:
        loads += 1
        try:
            seen[which_set(CascadeIndex.load(folder))] += 1
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    print(f"LOADS {loads} FAILURES {len(failures)} A {seen['A']} B {seen['B']}", flush=True)
    for message in failures[:5]:
        print(message, flush=True)


def fill(folder: Path, extra: int) -> None:
    """Grow the index in ``folder`` by ``extra`` documents and save it."""
    index = CascadeIndex.load(folder)
    ids = [f"x{extra}-{i}" for i in range(extra)]  # new ids for each size
    v = np.random.default_rng(extra).standard_normal((extra, DIM)).astype(np.float32)
    index.add_embeddings(v, v, ids=ids, texts=["x"] * extra)
    try:
        index.save(folder)
    except OSError as exc:
        print(f"OSERROR {exc.errno} {exc}", flush=True)
        return
    print("SAVED", flush=True)


def main(argv: list[str]) -> None:
    """Run the role named in ``argv``."""
    role, folder = argv[0], Path(argv[1])
    if role == "saver":
        saver(folder, float(argv[2]))
    elif role == "reader":
        reader(folder, float(argv[2]))
    elif role == "killable":
        saver(folder, 0.0, forever=True, first=argv[2])
    elif role == "fill":
        fill(folder, int(argv[2]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
