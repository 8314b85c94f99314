"""Shallow-first ingest on SciFact: time to searchable and total build time vs a full build.

In one process, on the same documents (the first ``--docs`` of the SciFact corpus, or all):

* **full**: ``CascadeIndex.build`` (every document to the fine layer) + ``save``;
* **shallow-first**: ``CascadeIndex.build(..., shallow_first=True)`` + ``save`` (searchable, in
  coarse mode: *time to searchable*), then ``fill_fine(folder)`` (committed in chunks) until
  the index is complete (*total*).

The runs alternate ``--rounds`` times (full first in odd rounds, shallow-first first in even
ones). With ``--quality`` the test queries are searched against the shallow-first index in
coarse mode (before the fill-in) and in cascade mode (after), nDCG@10 with the test qrels
(evaluation only), and the fine-only reference; with fewer documents than the corpus, the
qrels are restricted to the indexed documents (and the queries left with a judgment).

    ESRAG_DATA=../shared/data python benchmarks/shallow_first.py --docs 1500 --coarse 2:64
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _env import environment

from esrag.data import load_beir
from esrag.encoder import EspressoEncoder
from esrag.encoder.views import parse_view
from esrag.evaluation.metrics import ndcg_at_k
from esrag.index import CascadeConfig, CascadeIndex


def _timed_full(encoder: Any, texts: list[str], ids: list[str], cfg: CascadeConfig, folder: Path) -> float:
    start = time.perf_counter()
    index = CascadeIndex.build(encoder, texts, ids=ids, config=cfg, batch_size=64)
    index.save(folder)
    return time.perf_counter() - start


def _timed_shallow(
    encoder: Any, texts: list[str], ids: list[str], cfg: CascadeConfig, folder: Path, quality: Any
) -> dict[str, Any]:
    start = time.perf_counter()
    index = CascadeIndex.build(encoder, texts, ids=ids, config=cfg, batch_size=64, shallow_first=True)
    index.save(folder)
    searchable = time.perf_counter() - start
    out: dict[str, Any] = {"searchable_s": searchable, "mode_before": index.stats()["mode"]}
    if quality is not None:
        out["ndcg_coarse_mode"] = quality(index, "cascade")  # answered in coarse mode
    fill_start = time.perf_counter()
    index.fill_fine(folder, chunk_size=1024, batch_size=64)
    out["fill_s"] = time.perf_counter() - fill_start
    out["total_s"] = searchable + out["fill_s"]
    out["mode_after"] = index.stats()["mode"]
    if quality is not None:
        out["ndcg_cascade"] = quality(index, "cascade")
        out["ndcg_fine"] = quality(index, "fine")
    return out


def main() -> None:
    """Run the comparison and write JSON + markdown under benchmarks/results/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=0, help="first N documents (0: the whole corpus)")
    parser.add_argument("--coarse", default="2:64", help="coarse LAYER:DIM (default 2:64)")
    parser.add_argument("--transform", default="pca")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quality", action="store_true", help="also nDCG@10, coarse mode vs cascade")
    parser.add_argument("--skip-full", action="store_true", help="only the shallow-first build")
    parser.add_argument("--out", default="benchmarks/results/shallow_first")
    args = parser.parse_args()
    data = load_beir(Path(os.environ["ESRAG_DATA"]) / "scifact", split="test")
    ids, texts = data.doc_ids, data.doc_texts()
    if args.docs:
        ids, texts = ids[: args.docs], texts[: args.docs]
    view = parse_view(args.coarse, what="--coarse")
    cfg = CascadeConfig(coarse_layer=view.layer, coarse_dim=view.dim, transform=args.transform)
    encoder = EspressoEncoder(device="cpu")
    quality = None
    if args.quality:
        kept = set(ids)
        qrels = {q: {d: g for d, g in j.items() if d in kept} for q, j in data.qrels.items()}
        qrels = {q: j for q, j in qrels.items() if j}
        qids = [q for q in data.queries if q in qrels]
        qtexts = [data.queries[q] for q in qids]

        def quality(index: CascadeIndex, mode: str) -> float:
            result = index.search(qtexts, k=10, shortlist=100, mode=mode)
            return float(ndcg_at_k(dict(zip(qids, result.ids, strict=True)), qrels, 10))

    env_before = environment()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            row: dict[str, Any] = {"round": r + 1}
            order = ["full", "shallow"] if r % 2 == 0 else ["shallow", "full"]
            for what in order:
                folder = Path(tmp) / f"{what}-{r}"
                if what == "full" and not args.skip_full:
                    row["full_s"] = _timed_full(encoder, texts, ids, cfg, folder)
                elif what == "shallow":
                    row.update(_timed_shallow(encoder, texts, ids, cfg, folder, quality))
                print(json.dumps(row), flush=True)
            if "full_s" in row:
                row["searchable_ratio"] = row["searchable_s"] / row["full_s"]
                row["total_ratio"] = row["total_s"] / row["full_s"]
            rounds.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "docs": len(ids),
        "corpus_docs": len(data.corpus),
        "config": cfg.to_dict(),
        "rounds": rounds,
        "environment_start": env_before,
        "environment_end": environment(),
        "uptime": os.getloadavg(),
    }
    if quality is not None:
        report["queries"] = len(qids)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
