"""The Ray build on a local cluster (one per session, 2 CPUs): a sharded index equal to the
single-machine build, incremental updates, a killed actor, an interrupted driver, and the
reader's file:line errors."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from esrag.data.corpus import read_corpus
from esrag.encoder import EspressoEncoder
from esrag.index import CascadeConfig, CascadeIndex
from esrag.index.sharded import ShardedIndex
from esrag.index.sync import sync

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'esrag[ray]'")

from esrag.scale import RayOptions, build_sharded  # noqa: E402
from tests.conftest import TINY_WORDS  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.enable_socket]

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/


@pytest.fixture(scope="session")
def ray_cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()


def _write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(n):
            words = " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(6, 30)))
            handle.write(json.dumps({"id": f"d{i}", "text": f"{words} {i}", "group": i % 4}) + "\n")
    return path


def _single(encoder, corpus: Path, config: CascadeConfig) -> CascadeIndex:
    docs = list(read_corpus(corpus))
    return CascadeIndex.build(
        encoder,
        [d.text for d in docs],
        ids=[d.id for d in docs],
        metadatas=[d.metadata for d in docs],
        config=config,
        batch_size=32,
    )


def _assert_same(single, sharded, queries, **kwargs):
    """Same ids and scores (1e-5); two documents whose scores are within 1e-5 of each other
    may swap places (the encoder's batches differ, so its floats differ in the last bits)."""
    a, b = single.search(queries, k=10, **kwargs), sharded.search(queries, k=10, **kwargs)
    np.testing.assert_allclose(np.array(a.scores), np.array(b.scores), atol=1e-5)
    for ids_a, ids_b, scores in zip(a.ids, b.ids, a.scores, strict=True):
        for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=True)):
            near = [abs(scores[i] - scores[j]) < 1e-5 for j in (i - 1, i + 1) if 0 <= j < len(scores)]
            assert x == y or any(near), (ids_a, ids_b)


OPTIONS = RayOptions(actors=2, shards=3, batch_size=32, threads_per_actor=1)


@pytest.mark.parametrize(("n", "index_type"), [(5183, "IVF32,Flat"), (700, "Flat")])
def test_ray_build_equals_single_machine(ray_cluster, tiny_model_dir, tiny_encoder, tmp_path, n, index_type):
    corpus = _write_corpus(tmp_path / "corpus.jsonl", n)
    config = CascadeConfig(coarse_dim=16, index_type=index_type, shortlist=30, nprobe=4, train_size=4000)
    report = build_sharded(
        corpus, tmp_path / "idx", model=str(tiny_model_dir), config=config, options=OPTIONS
    )
    assert (report["action"], report["docs"], report["encoded"], report["shards"]) == ("built", n, n, 3)
    sharded = CascadeIndex.load(tmp_path / "idx", tiny_encoder)
    assert isinstance(sharded, ShardedIndex) and len(sharded) == n
    single = _single(tiny_encoder, corpus, config)
    assert sharded.ids() == single.ids()
    queries = [d.text for d in list(read_corpus(corpus))[:40]] + ["cat dog", "gene protein drug"]
    _assert_same(single, sharded, queries)
    _assert_same(single, sharded, queries, filter={"group": 2})
    _assert_same(single, sharded, queries, mode="fine")


@pytest.mark.data
def test_ray_build_of_real_scifact_documents(ray_cluster, tiny_model_dir, tiny_encoder, tmp_path, data_dir):
    corpus = tmp_path / "scifact.jsonl"
    with open(data_dir / "scifact" / "corpus.jsonl") as src, open(corpus, "w") as out:
        out.writelines(line for _, line in zip(range(300), src, strict=False))
    config = CascadeConfig(coarse_dim=16, shortlist=20)
    build_sharded(corpus, tmp_path / "idx", model=str(tiny_model_dir), config=config, options=OPTIONS)
    sharded = CascadeIndex.load(tmp_path / "idx", tiny_encoder)
    single = _single(tiny_encoder, corpus, config)
    assert len(sharded) == len(single) == 300
    _assert_same(single, sharded, [d.text[:200] for d in list(read_corpus(corpus))[:30]])


def test_incremental_ray_build_encodes_only_new_and_changed(
    ray_cluster, tiny_model_dir, tiny_encoder, tmp_path
):
    corpus = _write_corpus(tmp_path / "corpus.jsonl", 400)
    config = CascadeConfig(coarse_dim=16, shortlist=20)
    build_sharded(corpus, tmp_path / "idx", model=str(tiny_model_dir), config=config, options=OPTIONS)
    single = _single(tiny_encoder, corpus, config)
    lines = corpus.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for rec in records[:5]:
        rec["text"] += " changed"
    records = [r for i, r in enumerate(records) if i not in (10, 11, 12, 13)]
    records += [{"id": f"new{i}", "text": f"a new red bird {i}", "group": 9} for i in range(7)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = build_sharded(corpus, tmp_path / "idx", model=str(tiny_model_dir), options=OPTIONS)
    assert (report["added"], report["updated"], report["deleted"], report["encoded"]) == (7, 5, 4, 12)
    sync(single, list(read_corpus(corpus)), batch_size=32)
    sharded = CascadeIndex.load(tmp_path / "idx", tiny_encoder)
    assert len(sharded) == len(single) == 403 and sharded.ids() == single.ids()
    _assert_same(single, sharded, [r["text"] for r in records[:20]] + ["a new red bird"])
    again = build_sharded(corpus, tmp_path / "idx", model=str(tiny_model_dir), options=OPTIONS)
    assert again["action"] == "up to date" and again["encoded"] == 0


class _DiesOnce:
    """An encoder factory whose encoder kills its actor's process in its second batch, once."""

    def __init__(self, model_dir: str, marker: str) -> None:
        self.model_dir, self.marker = model_dir, marker

    def __call__(self):
        marker = self.marker

        class Dying(EspressoEncoder):
            calls = 0

            def encode(self, *args, **kwargs):
                Dying.calls += 1
                if Dying.calls == 2:
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                    except FileExistsError:
                        pass
                    else:
                        os.kill(os.getpid(), signal.SIGKILL)
                return super().encode(*args, **kwargs)

        return Dying(self.model_dir, device="cpu")


def test_killed_actor_is_retried_and_every_document_is_indexed_once(ray_cluster, tiny_model_dir, tmp_path):
    corpus = _write_corpus(tmp_path / "corpus.jsonl", 900)
    marker = tmp_path / "killed"
    factory = _DiesOnce(str(tiny_model_dir), str(marker))
    report = build_sharded(
        corpus, tmp_path / "idx", encoder_factory=factory, config=CascadeConfig(coarse_dim=8), options=OPTIONS
    )
    assert marker.exists(), "no actor was killed"
    index = CascadeIndex.load(tmp_path / "idx")
    assert report["docs"] == len(index) == 900  # the shard writers refuse a document twice
    assert sorted(index.ids()) == sorted(f"d{i}" for i in range(900))


def test_interrupted_driver_leaves_the_previous_index(
    ray_cluster, tiny_model_dir, tiny_encoder, tmp_path, monkeypatch
):
    from esrag.index import shard_store

    corpus = _write_corpus(tmp_path / "corpus.jsonl", 300)
    build_sharded(corpus, tmp_path / "idx", model=str(tiny_model_dir), options=OPTIONS)
    before = CascadeIndex.load(tmp_path / "idx", tiny_encoder).search("cat dog", k=5)
    _write_corpus(corpus, 350, seed=1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shard_store, "write_shardset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_sharded(corpus, tmp_path / "idx", model=str(tiny_model_dir), options=OPTIONS)
    with pytest.raises(KeyboardInterrupt):  # a fresh build interrupted: nothing is left behind
        build_sharded(corpus, tmp_path / "fresh", model=str(tiny_model_dir), options=OPTIONS)
    monkeypatch.undo()
    assert not (tmp_path / "fresh").exists()
    index = CascadeIndex.load(tmp_path / "idx", tiny_encoder)
    assert len(index) == 300 and index.search("cat dog", k=5) == before


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ('{"id": "a", "text": "fine"}\n{"id": "b", "text": 3}\n', "c.jsonl"),
        ('{"id": "a", "text": "fine"}\nnot json\n', "c.jsonl"),
        ("id,text\na,fine\nb\n", "c.csv"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "c.jsonl"),
    ],
)
def test_malformed_corpus_gives_the_single_machine_error(ray_cluster, tiny_model_dir, tmp_path, body, name):
    corpus = tmp_path / name
    corpus.write_text(body)
    with pytest.raises(ValueError) as single:
        list(read_corpus(corpus))
    with pytest.raises(type(single.value)) as distributed:
        build_sharded(corpus, tmp_path / "idx", model=str(tiny_model_dir), options=OPTIONS)
    assert str(distributed.value) == str(single.value)
    assert str(corpus) in str(distributed.value) and not (tmp_path / "idx").exists()


def test_cli_build_with_ray_then_search(ray_cluster, tiny_model_dir, tmp_path, capsys):
    from esrag.cli.main import main

    corpus = _write_corpus(tmp_path / "corpus.jsonl", 200)
    argv = ["build", str(corpus), "--index", str(tmp_path / "idx"), "--model", str(tiny_model_dir)]
    argv += [
        "--ray",
        "--ray-actors",
        "2",
        "--ray-threads-per-actor",
        "1",
        "--shards",
        "3",
        "--coarse",
        "3:16",
    ]
    assert main([*argv, "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["action"], report["docs"], report["shards"]) == ("built", 200, 3)
    assert main(["search", "--index", str(tmp_path / "idx"), "cat dog", "--json"]) == 0
    assert "d" in capsys.readouterr().out
