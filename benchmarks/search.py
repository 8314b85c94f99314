"""Search benchmark: cascade configurations vs a flat full-dimension index (run by hand).

Data. Real all-MiniLM-L6-v2 vectors of the BEIR SciFact corpus (5,183 documents, every layer,
from the embedding cache ``esrag.encoder.cache.encode_cached``) are grown to ``--docs``
synthetic documents: document ``j`` is ``normalize(base[i] + noise * (base[a] - base[b]))``
for random real documents ``i, a, b``, with the *same* ``i, a, b`` at every layer, so the
variation lies in the data's own directions and the layers stay consistent with each other.
Queries are the 1,109 real SciFact queries (cached the same way).

Every configuration is built in one child process and searched in another, so build time,
resident memory (RSS growth of the search process: index loaded + all queries run; fine
vectors of the cascade are memory-mapped float16, their touched pages count) and latency are
measured cleanly; all ratios are against the flat float32 ``IndexFlatIP`` over the full
(layer 6, 384) vectors measured in the same run. Recall@10 is against that exact ranking.

``--progressive`` (implies ``--end-to-end``) times full-depth cascades with a layer-2 coarse stage
(IVF and flat) progressively and sequentially in the same process, interleaved, on 2 and 1
torch threads, and checks that both give the same ids.

``--end-to-end`` measures text in → ids out instead: the real SciFact query texts are encoded
in the search process, one at a time (torch on ``--torch-threads`` threads, 2 by default),
then searched (FAISS on one thread), for flat full-depth search, the best full-depth cascade
and the same cascade with shallow queries (``--query-layers``: the query's encoder pass
stops there; a ridge map fitted on the corpus at index time, or ``none`` for a model trained
for it, ``--maps``), plus each query layer's own coarse stage. A first child times the
encoder alone at every layer on the same texts. ``--model`` benchmarks another (e.g. a
trained) model.

    ESRAG_DATA=../shared/data python benchmarks/search.py --docs 1000000 --out bench.json
    ESRAG_DATA=../shared/data python benchmarks/search.py --docs 1000000 --end-to-end --out e2e.json
    ESRAG_DATA=../shared/data python benchmarks/search.py --docs 1000000 --progressive --out prog.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks.search")

LAYERS = (2, 6)  # coarse source layers compared; fine view = (6, 384)


def layers_needed(args: argparse.Namespace) -> list[int]:
    """Every layer the synthetic corpus is written at (coarse, fine and query layers)."""
    return sorted({*LAYERS, *query_layers(args)})


def query_layers(args: argparse.Namespace) -> list[int]:
    return [int(x) for x in args.query_layers.split(",") if x.strip()] if args.end_to_end else []


# ----------------------------------------------------------------------------- data
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def prepare_data(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write docs_L{layer}.npy (synthetic corpus) and queries_L{layer}.npy into ``work``."""
    from esrag.data.beir import load_beir
    from esrag.encoder import EspressoEncoder
    from esrag.encoder.cache import encode_cached

    data = Path(args.data or os.environ.get("ESRAG_DATA", "../shared/data"))
    dataset = load_beir(data / "scifact", "test")
    encoder = EspressoEncoder(args.model, device="cpu")
    base = encode_cached(encoder, dataset.doc_texts(), show_progress_bar=True)
    from esrag.data.beir import load_queries

    all_queries = load_queries(data / "scifact" / "queries.jsonl")
    queries = encode_cached(encoder, list(all_queries.values()), show_progress_bar=True)
    (work / "query_texts.json").write_text(json.dumps(list(all_queries.values())))
    rng = np.random.default_rng(args.seed)
    n, b = args.docs, base.shape[0]
    pick = rng.integers(0, b, size=(n, 3))
    pick[:b, 0] = np.arange(min(n, b))  # the real documents themselves come first
    for layer in layers_needed(args):
        out = np.lib.format.open_memmap(work / f"docs_L{layer}.npy", "w+", np.float32, (n, 384))
        src = base[:, layer - 1, :]
        for start in range(0, n, 100_000):
            p = pick[start : start + 100_000]
            vec = src[p[:, 0]] + args.noise * (src[p[:, 1]] - src[p[:, 2]])
            if start < b:
                real = min(b, n) - start
                vec[:real] = src[p[:real, 0]]
            out[start : start + len(p)] = _unit(vec)
        out.flush()
        del out
        np.save(work / f"queries_L{layer}.npy", np.ascontiguousarray(queries[:, layer - 1, :]))
    return {"base_docs": b, "queries": int(queries.shape[0]), "model": encoder.name}


# ---------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def mapped_rss(path_part: str) -> int:
    """Resident bytes of the mappings of files whose path contains ``path_part``."""
    total, inside = 0, False
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                inside = path_part in line
            elif inside and line.startswith("Rss:"):
                total += int(head[1]) * 1024
    return total


# ------------------------------------------------------------------------ the configs
def _nlist(n: int) -> int:
    return int(2 ** round(np.log2(max(16.0, 4 * np.sqrt(n)))))


def _cascade(
    layer: int,
    dim: int,
    index_type: str,
    short: int,
    nprobe: int,
    nlist: int,
    query: tuple[int, str] | None = None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "coarse_layer": layer,
        "coarse_dim": dim,
        "transform": "pca",
        "index_type": index_type,
        "fine_dtype": "float16",
        "shortlist": short,
        "train_size": max(50_000, 40 * nlist),
        "nprobe": nprobe,
    }
    name = f"cascade {index_type} pca L{layer}/{dim} shortlist {short} nprobe {nprobe}"
    if query is not None:
        config.update(query_layer=query[0], query_map=query[1])
        name += f", queries to layer {query[0]} ({query[1]} map)"
    return {
        "name": name,
        "kind": "cascade",
        "layer": layer,
        "shortlist": short,
        "config": config,
        "query": query,
    }


def e2e_configs(n: int, shortlist: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Flat full depth, the best full-depth cascade, and shallow-query variants of it
    (``--progressive``: full-depth cascades with a layer-2 coarse stage, IVF and flat).
    """
    nlist = _nlist(n)
    sq8 = f"IVF{nlist},SQ8"
    out: list[dict[str, Any]] = [{"name": "flat IndexFlatIP L6/384", "kind": "flat"}]  # the exact ranking
    if args.progressive:
        out.append(_cascade(2, 128, sq8, 3 * shortlist, 64, nlist))
        return [*out, _cascade(2, 128, "Flat", 3 * shortlist, 64, nlist)]
    out.append(_cascade(6, 128, sq8, 3 * shortlist, 64, nlist))
    for k in query_layers(args):
        for kind in args.maps.split(","):
            out.append(_cascade(6, 128, sq8, 3 * shortlist, 64, nlist, (k, kind)))
        out.append(_cascade(k, 128, sq8, 3 * shortlist, 64, nlist, (k, "ridge")))
    return out


def configs(n: int, shortlist: int) -> list[dict[str, Any]]:
    nlist = _nlist(n)
    out: list[dict[str, Any]] = [
        {"name": "flat IndexFlatIP L6/384", "kind": "flat"},
        {
            "name": f"IndexRefineFlat(prefix 64) shortlist {shortlist}",
            "kind": "refine",
            "shortlist": shortlist,
        },
        {
            "name": f"IndexRefineFlat(prefix 64) shortlist {3 * shortlist}",
            "kind": "refine",
            "shortlist": 3 * shortlist,
        },
    ]
    for layer, dim, transform, index_type, extra in [
        (6, 64, "pca", "Flat", {}),
        (6, 64, "pca", "HNSW32", {}),
        (6, 64, "pca", "HNSW32", {"shortlist": 3 * shortlist}),
        (6, 64, "pca", "HNSW32", {"shortlist": 10 * shortlist}),
        (6, 128, "pca", "HNSW32", {"shortlist": 3 * shortlist}),
        (6, 128, "pca", "HNSW32", {"shortlist": 10 * shortlist}),
        (6, 64, "pca", f"IVF{nlist},Flat", {"nprobe": 32, "shortlist": 3 * shortlist}),
        (6, 64, "pca", f"IVF{nlist},PQ16", {"nprobe": 32, "shortlist": 3 * shortlist}),
        (6, 128, "pca", f"IVF{nlist},Flat", {"nprobe": 64, "shortlist": 3 * shortlist}),
        (6, 128, "pca", f"IVF{nlist},Flat", {"nprobe": 64, "shortlist": 10 * shortlist}),
        (6, 128, "pca", f"IVF{nlist},SQ8", {"nprobe": 64, "shortlist": 3 * shortlist}),
        (6, 128, "pca", f"IVF{nlist},PQ32", {"nprobe": 64, "shortlist": 10 * shortlist}),
        (6, 64, "prefix", "HNSW32", {"shortlist": 3 * shortlist}),
        (6, 64, "adapter", "HNSW32", {"shortlist": 3 * shortlist}),
        (2, 64, "prefix", "HNSW32", {"shortlist": 3 * shortlist}),
        (2, 64, "adapter", "HNSW32", {"shortlist": 3 * shortlist}),
    ]:
        short = extra.pop("shortlist", shortlist)
        out.append(
            {
                "name": f"cascade {index_type} {transform} L{layer}/{dim} shortlist {short}"
                + (f" nprobe {extra['nprobe']}" if "nprobe" in extra else ""),
                "kind": "cascade",
                "layer": layer,
                "shortlist": short,
                "config": {
                    "coarse_layer": layer,
                    "coarse_dim": dim,
                    "transform": transform,
                    "index_type": index_type,
                    "fine_dtype": "float16",
                    "shortlist": short,
                    "train_size": max(50_000, 40 * nlist),
                    **extra,
                },
            }
        )
    return out


# --------------------------------------------------------------------- child: build
def child_build(cfg: dict[str, Any], work: Path, folder: Path, threads: int) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(threads)

    fine = np.load(work / "docs_L6.npy", mmap_mode="r")
    n = fine.shape[0]
    start = time.perf_counter()
    if cfg["kind"] == "flat":
        index = faiss.IndexFlatIP(384)
        for s in range(0, n, 100_000):
            index.add(np.ascontiguousarray(fine[s : s + 100_000]))
        built = time.perf_counter() - start
        faiss.write_index(index, str(folder / "flat.faiss"))
    elif cfg["kind"] == "refine":
        remap = faiss.RemapDimensionsTransform(384, 64, False)  # keep the first 64 dims
        base = faiss.IndexPreTransform(remap, faiss.IndexFlatIP(64))
        index = faiss.IndexRefineFlat(base)
        for s in range(0, n, 100_000):
            index.add(np.ascontiguousarray(fine[s : s + 100_000]))
        built = time.perf_counter() - start
        faiss.write_index(index, str(folder / "refine.faiss"))
    else:
        from esrag.index import CascadeConfig, CascadeIndex

        source = np.load(work / f"docs_L{cfg['layer']}.npy", mmap_mode="r")
        query = cfg.get("query")
        shallow = None if query is None else np.load(work / f"docs_L{query[0]}.npy", mmap_mode="r")
        index = CascadeIndex.build_from_embeddings(
            source,
            fine,
            ids=[str(i) for i in range(n)],
            config=CascadeConfig(**cfg["config"]),
            query_source=shallow,
        )
        built = time.perf_counter() - start
        index.save(folder / "cascade")
    return {"build_s": built, "total_build_and_save_s": time.perf_counter() - start}


# -------------------------------------------------------------------- child: search
def _encoder(args: argparse.Namespace) -> Any:
    import torch

    from esrag.encoder import EspressoEncoder

    torch.set_num_threads(args.torch_threads)
    return EspressoEncoder(args.model, device="cpu")


def child_together(items: list[dict[str, Any]], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Text in -> ids out for every configuration in ONE process, interleaved query by query (a
    fresh random order each query), so that load on a shared machine hits all of them alike; the
    encoder alone at every layer is timed in the same loop.
    """
    import faiss

    encoder = _encoder(args)
    faiss.omp_set_num_threads(1)
    texts = json.loads((work / "query_texts.json").read_text())[: args.single]
    runners: dict[str, Any] = {}
    for layer in sorted({1, 2, 3, encoder.num_layers, *query_layers(args)}):
        runners[f"encoder L{layer}"] = lambda t, la=layer: encoder.encode([t], [(la, 384)], batch_size=1)
    depths = {}
    pairs: list[tuple[Any, Any]] = []
    for item in items:
        if args.progressive and item["cfg"]["kind"] == "flat":
            continue  # only the cascades are compared (flat gave the exact ranking)
        index, _search, search_text, _ids = _open(item["cfg"], work, Path(item["folder"]), encoder, args.k)
        name = item["cfg"]["name"]
        depths[name] = 6 if item["cfg"]["kind"] == "flat" else index.query_depth()
        if not args.progressive:
            runners[name] = search_text
            continue
        index.reconfigure(progressive=True)
        sequential = _open(item["cfg"], work, Path(item["folder"]), encoder, args.k)
        sequential[0].reconfigure(progressive=False)
        pairs.append((search_text, sequential[2]))
        for threads in sorted({args.torch_threads, 1}, reverse=True):
            for label, run in (("progressive", search_text), ("sequential", sequential[2])):
                key = f"{name} [{label}, {threads} torch thread{'s' if threads > 1 else ''}]"
                runners[key] = _with_threads(run, threads, args.torch_threads)
                depths[key] = depths[name]
    for run in runners.values():
        for text in texts[:3]:
            run(text)  # warm-up
    rng = np.random.default_rng(args.seed)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for text in texts:
        for name in rng.permutation(list(runners)):
            t0 = time.perf_counter()
            runners[name](text)
            times[name].append(time.perf_counter() - t0)
    out: dict[str, Any] = {
        name: {
            "e2e_ms_p50": 1000 * float(np.median(v)),
            "e2e_ms_p95": 1000 * float(np.percentile(v, 95)),
            "query_depth": depths.get(name),
        }
        for name, v in times.items()
    }
    if pairs:  # progressive answers are the sequential ones, query by query
        same = sum(fast(t) == slow(t) for fast, slow in pairs for t in texts)
        out["identical answers"] = {"same": same, "of": len(pairs) * len(texts)}
    return out


def _with_threads(run: Any, threads: int, default: int) -> Any:
    """``run`` with torch on ``threads`` intra-op threads (restored to ``default`` after)."""
    import torch

    def call(text: str) -> Any:
        torch.set_num_threads(threads)
        try:
            return run(text)
        finally:
            torch.set_num_threads(default)

    return call


def _query_vectors(index: Any, cfg: dict[str, Any], work: Path) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed (coarse source, fine) query vectors of a cascade (mapped for shallow queries)."""
    q_fine = np.load(work / "queries_L6.npy")
    q_source = np.load(work / f"queries_L{cfg.get('layer', 6)}.npy")
    if index is None or index.query_map is None:
        return q_source, q_fine
    qmap = index.query_map
    return qmap.map_vectors(
        np.load(work / f"queries_L{qmap.layer}.npy"), q_source if qmap.exact_source else None
    )


def _open(cfg: dict[str, Any], work: Path, folder: Path, encoder: Any, k: int) -> tuple[Any, Any, Any, Any]:
    """(index, search(slice) over precomputed queries, search_text(text), to_ids(rows))."""
    import faiss

    from esrag.index import CascadeIndex

    if cfg["kind"] in ("flat", "refine"):
        index = faiss.read_index(str(folder / f"{cfg['kind']}.faiss"))
        q_fine = _query_vectors(None, cfg, work)[1]
        params = None
        if cfg["kind"] == "refine":
            params = faiss.IndexRefineSearchParameters(k_factor=float(cfg["shortlist"] / k))

        def search(i: slice) -> np.ndarray:
            return index.search(q_fine[i], k, params=params)[1]

        def search_text(text: str) -> np.ndarray:
            return index.search(encoder.encode([text], [(6, 384)], batch_size=1)[0], k, params=params)[1]

        return index, search, search_text, lambda rows: rows
    index = CascadeIndex.load(folder / "cascade", encoder, verify=False)
    q_source, q_fine = _query_vectors(index, cfg, work)
    short = cfg["shortlist"]

    def search(i: slice) -> list[list[str]]:
        return index.search_embeddings(q_source[i], q_fine[i], k=k, shortlist=short).ids

    def search_text(text: str) -> list[list[str]]:
        return index.search([text], k=k, shortlist=short).ids

    def to_ids(rows: Any) -> np.ndarray:
        return np.array([[int(x) for x in r] + [-1] * (k - len(r)) for r in rows])

    return index, search, search_text, to_ids


def child_search(cfg: dict[str, Any], work: Path, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from esrag.index import CascadeIndex  # noqa: F401 (imported before measuring memory)

    n_queries = len(np.load(work / "queries_L6.npy", mmap_mode="r"))
    k = args.k
    gc.collect()
    rss0 = rss_bytes()
    _index, search, _search_text, to_ids = _open(cfg, work, folder, None, k)
    rss_loaded = rss_bytes()
    faiss.omp_set_num_threads(1)  # single queries: one thread (no OpenMP fork/join per query)
    for _ in range(3):
        search(slice(0, 1))  # warm-up
    single = []
    for i in range(min(args.single, n_queries)):
        t0 = time.perf_counter()
        search(slice(i, i + 1))
        single.append(time.perf_counter() - t0)
    out: dict[str, Any] = {}
    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = to_ids(search(slice(0, n_queries)))
    batched = time.perf_counter() - t0
    rss_end = rss_bytes()
    out.update(
        {
            "single_ms_p50": 1000 * float(np.median(single)),
            "single_ms_mean": 1000 * float(np.mean(single)),
            "batched_ms_per_query": 1000 * batched / n_queries,
            "rss_growth_loaded_mb": (rss_loaded - rss0) / 2**20,
            "rss_growth_mb": (rss_end - rss0) / 2**20,
        }
    )
    if cfg["kind"] == "cascade":
        out["fine_mmap_resident_mb"] = mapped_rss("fine.npy") / 2**20
        from esrag.index.format import data_folder

        out["coarse_file_mb"] = (data_folder(folder / "cascade") / "coarse.faiss").stat().st_size / 2**20
    if cfg["kind"] == "flat":
        np.save(work / "truth.npy", rows)
    truth = np.load(work / "truth.npy")
    hits = [len(set(r[r >= 0].tolist()) & set(t.tolist())) for r, t in zip(rows, truth, strict=True)]
    out["recall_at_10"] = float(np.mean(hits)) / k
    return out


# ------------------------------------------------------------------------------ main
def _child(args: argparse.Namespace) -> None:
    cfg = json.loads(args.child_config)
    work, folder = Path(args.work), Path(args.folder)
    if args.child == "together":
        result = child_together(cfg, work, args)
    elif args.child == "build":
        result = child_build(cfg, work, folder, args.threads)
    else:
        result = child_search(cfg, work, folder, args)
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(
    stage: str, cfg: dict[str, Any], args: argparse.Namespace, work: Path, folder: Path
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        stage,
        "--child-config",
        json.dumps(cfg),
        "--work",
        str(work),
        "--folder",
        str(folder),
        "--k",
        str(args.k),
        "--shortlist",
        str(args.shortlist),
        "--single",
        str(args.single),
        "--threads",
        str(args.threads),
        "--torch-threads",
        str(args.torch_threads),
        "--query-layers",
        args.query_layers,
        "--maps",
        args.maps,
        *(["--model", args.model] if args.model else []),
        *(["--end-to-end"] if args.end_to_end else []),
        *(["--progressive"] if args.progressive else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    name = cfg["name"] if isinstance(cfg, dict) else stage
    raise RuntimeError(f"{stage} of {name} failed:\n{proc.stderr[-3000:]}")


def environment() -> dict[str, Any]:
    import faiss

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "loadavg": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shortlist", type=int, default=100)
    parser.add_argument("--single", type=int, default=200, help="single-query searches timed")
    parser.add_argument("--data", default=None, help="data folder (default $ESRAG_DATA)")
    parser.add_argument("--only", default=None, help="comma-separated substrings of config names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="faiss threads for building and batched search (single queries use 1)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--end-to-end", action="store_true", help="text in -> ids out (see the module doc)")
    parser.add_argument("--model", default=None, help="model folder (default: the shipped all-MiniLM-L6-v2)")
    parser.add_argument("--query-layers", default="1,2,3", help="shallow query layers (--end-to-end)")
    parser.add_argument("--maps", default="ridge", help="query maps of the shallow queries: ridge,none")
    parser.add_argument("--torch-threads", type=int, default=2, help="encoder threads (--end-to-end)")
    parser.add_argument(
        "--progressive",
        action="store_true",
        help="progressive vs sequential cascade search, same process (implies --end-to-end)",
    )
    parser.add_argument("--child", choices=["build", "search", "together"], help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.end_to_end = args.end_to_end or args.progressive
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.child:
        _child(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="esrag-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        info = prepare_data(args, work)
        logger.info("synthesised %d documents in %.1fs", args.docs, time.perf_counter() - t0)
        results = []
        todo = (
            e2e_configs(args.docs, args.shortlist, args)
            if args.end_to_end
            else configs(args.docs, args.shortlist)
        )
        if args.only:
            keep = args.only.split(",")
            todo = [c for c in todo if c["kind"] in ("flat", "encoder") or any(s in c["name"] for s in keep)]
        kept = []
        for cfg in todo:
            folder = Path(tempfile.mkdtemp(dir=work))
            build = _run_child("build", cfg, args, work, folder)
            search = _run_child("search", cfg, args, work, folder)
            results.append({"name": cfg["name"], **build, **search})
            logger.info("%s: %s", cfg["name"], json.dumps(results[-1]))
            if args.end_to_end:
                kept.append({"cfg": cfg, "folder": str(folder)})
            else:
                subprocess.run(["rm", "-rf", str(folder)], check=False)
        if args.end_to_end:
            together = _run_child("together", kept, args, work, work)  # type: ignore[arg-type]
            logger.info("end to end: %s", json.dumps(together))
            for r in results:
                r.update(together.get(r["name"], {}))
            encoder = {k: v for k, v in together.items() if k.startswith("encoder")}
            results.append({"name": "encoder alone", "encoder": encoder})
            results += [{"name": k, **v} for k, v in together.items() if "[" in k]
            if "identical answers" in together:
                results.append({"name": "identical answers", **together["identical answers"]})
    env = {
        **environment(),
        "threads_build_and_batched": args.threads,
        "threads_single": 1,
        "torch_threads": args.torch_threads,
    }
    if args.progressive:
        report = progressive_report(results, args, info) + "\n\nenvironment: " + json.dumps(env)
    elif args.end_to_end:
        report = e2e_report(results, args, info) + "\n\nenvironment: " + json.dumps(env)
    else:
        report = search_report(results, args, info) + "\n\nenvironment: " + json.dumps(env)
    print(report)
    if args.out:
        Path(args.out).write_text(
            json.dumps({"args": vars(args), "data": info, "environment": env, "results": results}, indent=2)
            + "\n"
        )
    return 0


def e2e_report(results: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]) -> str:
    """Text in -> ids out: p50/p95 and ratios against flat and the full-depth cascade, and the targets."""
    encoder = next(r for r in results if r["name"] == "encoder alone")["encoder"]
    by_layer = {int(name.split("L")[1]): v for name, v in encoder.items()}
    flat = next(r for r in results if r["name"].startswith("flat"))
    runs = [r for r in results if "e2e_ms_p50" in r]
    full = next(r for r in runs if r["name"].startswith("cascade") and "queries to layer" not in r["name"])
    enc_full = by_layer[max(by_layer)]["e2e_ms_p50"]
    ceiling = flat["e2e_ms_p50"] / enc_full
    lines = [
        f"{args.docs:,} docs ({info['base_docs']:,} real SciFact + synthetic, noise {args.noise}), "
        f"{info['queries']} real SciFact query texts, k={args.k}; text in -> ids out, one query at a "
        f"time ({args.single} timed), encoder on {args.torch_threads} torch threads, FAISS on 1",
        "encoder alone, p50 (p95) ms by layer: "
        + ", ".join(
            f"L{la} {v['e2e_ms_p50']:.2f} ({v['e2e_ms_p95']:.2f})" for la, v in sorted(by_layer.items())
        ),
        "",
        "| config | query pass to layer | recall@10 vs flat | e2e p50 ms | e2e p95 ms | speed-up vs flat "
        "| / full-depth cascade p50 | search only p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['name']} | {r.get('query_depth', 6)} | {r['recall_at_10']:.4f} | {r['e2e_ms_p50']:.2f} | "
            f"{r['e2e_ms_p95']:.2f} | {flat['e2e_ms_p50'] / r['e2e_ms_p50']:.1f}x | "
            f"{r['e2e_ms_p50'] / full['e2e_ms_p50']:.2f} | {r['single_ms_p50']:.3f} |"
        )
    lines += [
        "",
        f"full-depth cascade ceiling (flat e2e / full-depth encoder pass) = {ceiling:.1f}x; "
        f"target for a shallow query: >= {2 * ceiling:.1f}x faster than flat, and <= 0.60 of the "
        f"full-depth cascade's p50 ({0.6 * full['e2e_ms_p50']:.2f} ms)",
    ]
    return "\n".join(lines)


def progressive_report(results: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]) -> str:
    """Progressive vs sequential cascade, text in -> ids out, same process, interleaved."""
    encoder = next(r for r in results if r["name"] == "encoder alone")["encoder"]
    same = next((r for r in results if r["name"] == "identical answers"), None)
    runs = {r["name"]: r for r in results if "[" in r["name"]}
    lines = [
        f"{args.docs:,} docs ({info['base_docs']:,} real SciFact + synthetic, noise {args.noise}), "
        f"{info['queries']} real SciFact query texts ({args.single} timed, interleaved in random order), "
        f"k={args.k}; text in -> ids out one query at a time; FAISS on 1 thread (the worker)",
        "encoder alone, p50 (p95) ms by layer: "
        + ", ".join(
            f"{n.split()[1]} {v['e2e_ms_p50']:.2f} ({v['e2e_ms_p95']:.2f})" for n, v in encoder.items()
        ),
        "",
        "| config | torch threads | sequential p50 / p95 ms | progressive p50 / p95 ms "
        "| progressive / sequential p50 | p95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, seq in runs.items():
        if "[sequential" not in name:
            continue
        prog = runs[name.replace("[sequential", "[progressive")]
        base, threads = name.split(" [")[0], name.split(", ")[-1].split()[0]
        lines.append(
            f"| {base} | {threads} | {seq['e2e_ms_p50']:.2f} / {seq['e2e_ms_p95']:.2f} | "
            f"{prog['e2e_ms_p50']:.2f} / {prog['e2e_ms_p95']:.2f} | "
            f"{prog['e2e_ms_p50'] / seq['e2e_ms_p50']:.3f} | {prog['e2e_ms_p95'] / seq['e2e_ms_p95']:.3f} |"
        )
    search = {r["name"]: r for r in results if "single_ms_p50" in r}
    lines += [
        "",
        "search alone (precomputed vectors) p50 ms: "
        + ", ".join(
            f"{n}: {r['single_ms_p50']:.2f} (recall@10 vs exact {r.get('recall_at_10', float('nan')):.3f})"
            for n, r in search.items()
        ),
    ]
    if same:
        lines.append(f"identical ids, progressive vs sequential: {same['same']} of {same['of']} queries")
    return "\n".join(lines)


def search_report(results: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]) -> str:
    """The search-only table (precomputed query vectors)."""
    flat = next(r for r in results if r["name"].startswith("flat"))
    flat_bytes = args.docs * 384 * 4 / 2**20
    lines = [
        f"{args.docs:,} docs ({info['base_docs']:,} real SciFact + synthetic, noise {args.noise}), "
        f"{info['queries']} queries, k={args.k}; flat float32 index = {flat_bytes:.0f} MiB",
        "| config | recall@10 | single ms (p50) | single speedup | batched ms/q | batched speedup "
        "| build s | RSS loaded MiB | loaded / flat | RSS after queries MiB | after / flat |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in results if "recall_at_10" in r):
        lines.append(
            f"| {r['name']} | {r['recall_at_10']:.4f} | {r['single_ms_p50']:.3f} | "
            f"{flat['single_ms_p50'] / r['single_ms_p50']:.1f}x | {r['batched_ms_per_query']:.3f} | "
            f"{flat['batched_ms_per_query'] / r['batched_ms_per_query']:.1f}x | {r['build_s']:.1f} | "
            f"{r['rss_growth_loaded_mb']:.0f} | "
            f"{r['rss_growth_loaded_mb'] / flat['rss_growth_loaded_mb']:.2f} | "
            f"{r['rss_growth_mb']:.0f} | {r['rss_growth_mb'] / flat['rss_growth_mb']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
