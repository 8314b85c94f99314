"""Early exit on SciFact: retention of nDCG@10 vs end-to-end query cost, and the exit rate (run by hand).

The corpus (5,183 documents) and all 1,109 SciFact queries are encoded once at every layer
(``esrag.encoder.cache.encode_cached``, shared with ``benchmarks/search.py``). For cascades
with a shallow coarse stage (``--layers``, ``--transforms`` to ``--dim`` dims, flat coarse index) and full
-depth queries (layer 6), :func:`esrag.evaluation.sweep.run_sweep` with ``early_exit`` gives
on the **test** queries each setting without early exit and with it at fixed exit rates (the
Pareto points, margins picked on the test queries themselves, so they are a curve, not a
tuned result), costed end to end with the encoder pass measured on this machine.

The honest operating point: the margin is calibrated for ``--target`` on the **train**
queries (and their qrels) and then applied unchanged to the test queries through the index
itself (``CascadeIndex.search_embeddings(..., exit_margin=m)``), whose exit rate and nDCG@10
are reported. Retention is against the fine-only exact full-depth search of the same model
(and, beside it, against the same cascade without early exit). The model is the untrained
all-MiniLM-L6-v2: no ESE-trained model is available here.

    ESRAG_DATA=../shared/data python benchmarks/early_exit.py --out benchmarks/results/early_exit_scifact
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from esrag.data.beir import load_beir, load_queries
from esrag.encoder import EspressoEncoder
from esrag.encoder.cache import encode_cached
from esrag.evaluation.encoder_cost import measure_encoder_cost
from esrag.evaluation.metrics import ndcg_at_k
from esrag.evaluation.sweep import SweepGrid, run_sweep
from esrag.evaluation.vectors import fine_vectors
from esrag.index import CascadeConfig, CascadeIndex

logger = logging.getLogger("benchmarks.early_exit")


def _vectors(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(args.data or os.environ.get("ESRAG_DATA", "../shared/data")) / "scifact"
    test, train = load_beir(data, "test"), load_beir(data, "train")
    encoder = EspressoEncoder(args.model, device="cpu")
    all_queries = load_queries(data / "queries.jsonl")
    q_all = encode_cached(encoder, list(all_queries.values()))
    docs = encode_cached(encoder, test.doc_texts())
    row = {q: i for i, q in enumerate(all_queries)}
    return {"encoder": encoder, "docs": docs, "q_all": q_all, "row": row, "test": test, "train": train}


def _split(v: dict[str, Any], split: Any) -> tuple[list[str], dict[int, np.ndarray], list[str]]:
    qids = [q for q in split.queries if q in split.qrels]
    rows = [v["row"][q] for q in qids]
    layers = {la: np.ascontiguousarray(v["q_all"][rows, la - 1, :]) for la in range(1, 7)}
    return qids, layers, [split.queries[q] for q in qids]


def _sweep(v: dict[str, Any], split: Any, grid: SweepGrid, cost: Any, args: argparse.Namespace) -> Any:
    qids, q_layers, _texts = _split(v, split)
    d_layers = {la: np.ascontiguousarray(v["docs"][:, la - 1, :]) for la in range(1, 7)}
    return run_sweep(
        d_layers,
        q_layers,
        doc_ids=split.doc_ids,
        qids=qids,
        fine_view=(6, 384),
        grid=grid,
        qrels=split.qrels,
        base_config=CascadeConfig(index_type="Flat"),
        target=args.target,
        timing_queries=args.timing_queries,
        encoder_cost=cost,
        show_progress_bar=False,
    )


def _held_out(v: dict[str, Any], point: Any, margin: float) -> dict[str, Any]:
    """The train-calibrated ``margin`` applied to the test queries through the index itself."""
    test = v["test"]
    qids, q_layers, _ = _split(v, test)
    docs = v["docs"]
    config = CascadeConfig(
        coarse_layer=point.layer,
        coarse_dim=point.dim,
        transform=point.transform,
        fine_view=(6, 384),
        index_type="Flat",
        shortlist=point.shortlist,
    )
    index = CascadeIndex.build_from_embeddings(
        docs[:, point.layer - 1, :], fine_vectors(docs[:, 5, :], 384), ids=test.doc_ids, config=config
    )
    source, fine = q_layers[point.layer], q_layers[6]
    got = index.search_embeddings(source, fine, k=10, shortlist=point.shortlist, exit_margin=margin)
    plain = index.search_embeddings(source, fine, k=10, shortlist=point.shortlist)
    run = {q: ids for q, ids in zip(qids, got.ids, strict=True)}
    base = {q: ids for q, ids in zip(qids, plain.ids, strict=True)}
    return {
        "margin": margin,
        "exit_rate": float(np.mean(got.exited)),
        "ndcg@10": float(ndcg_at_k(run, test.qrels, 10)),
        "ndcg@10 without exit": float(ndcg_at_k(base, test.qrels, 10)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--layers", default="2,3")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--shortlists", default="100,300")
    parser.add_argument("--transforms", default="adapter,pca")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument(
        "--train-targets", default=None, help="targets calibrated on train (default --target)"
    )
    parser.add_argument("--timing-queries", type=int, default=50)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(args.torch_threads)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    v = _vectors(args)
    layers = tuple(int(x) for x in args.layers.split(","))
    grid = SweepGrid(
        layers=(*layers, 6),
        dims=(args.dim,),
        transforms=tuple(args.transforms.split(",")),
        shortlists=tuple(int(x) for x in args.shortlists.split(",")),
        early_exit=True,
    )
    _, _, test_texts = _split(v, v["test"])
    cost = measure_encoder_cost(
        v["encoder"],
        test_texts,
        v["test"].doc_texts()[:200],
        [*layers, 6],
        timing_queries=args.timing_queries,
    )
    test = _sweep(v, v["test"], grid, cost, args)
    targets = [float(x) for x in (args.train_targets or str(args.target)).split(",")]
    trains = {
        t: _sweep(v, v["train"], grid, cost, argparse.Namespace(**{**vars(args), "target": t}))
        for t in targets
    }
    rows = []
    for p in test.points:
        if p.exit_margin is not None:
            continue
        base = p
        same = [q for q in test.points if q.exit_margin is not None and q.label.split(" exit")[0] == p.label]
        held: dict[str, Any] = {}
        for t, train in trains.items():
            key = (p.layer, p.dim, p.transform, p.shortlist)
            cal = next(
                (
                    q
                    for q in train.points
                    if q.exit_calibrated and (q.layer, q.dim, q.transform, q.shortlist) == key
                ),
                None,
            )
            if cal is not None and p.layer < 6:
                held[str(t)] = {**_held_out(v, p, cal.exit_margin), "train_exit_rate": cal.exit_rate}
        rows.append({"base": base.to_json(), "test_points": [q.to_json() for q in same], "held_out": held})
    ref = test.reference
    lines = [
        f"SciFact test ({ref['num_queries']} queries, {ref['num_docs']} docs), "
        f"{'model ' + args.model if args.model else 'untrained all-MiniLM-L6-v2'}; "
        f"reference fine-only L6/384 exact nDCG@10 = {ref['quality']:.4f}, "
        f"end to end {ref['end_to_end_ms_p50']:.2f} ms p50, {ref['end_to_end_flops'] / 1e6:.1f} MFLOPs. "
        f"Encoder pass measured here (p50 ms by layer: "
        + ", ".join(f"L{la} {ms:.2f}" for la, ms in sorted(cost.query_ms.items()))
        + f"); load average {load0[0]:.1f} at start on {os.cpu_count()} cores.",
        "",
        "| coarse | exit margin | exit rate | nDCG@10 | retention vs fine-only | vs no-exit cascade "
        "| e2e MFLOPs | e2e ms p50 | cost saved vs no exit (FLOPs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = r["base"]
        name = f"L{b['layer']}/{b['dim']} {b['transform']} s{b['shortlist']}"
        lines.append(
            f"| {name} | none | 0% | {b['quality']:.4f} | {b['retention']:.3f} | 1.000 | "
            f"{b['end_to_end_flops'] / 1e6:.1f} | {b['end_to_end_ms_p50']:.2f} | 0% |"
        )
        for q in sorted(r["test_points"], key=lambda q: q["exit_rate"]):
            lines.append(
                f"| {name} | {q['exit_margin']:.4f}{' (in-sample ★)' if q['exit_calibrated'] else ''} | "
                f"{q['exit_rate']:.0%} | {q['quality']:.4f} | {q['retention']:.3f} | "
                f"{q['quality'] / b['quality']:.3f} | {q['end_to_end_flops'] / 1e6:.1f} | "
                f"{q['end_to_end_ms_p50']:.2f} | {q['exit_saving']:.1%} |"
            )
    lines += [
        "",
        "Margin calibrated on the train queries (their own qrels) for a target retention vs "
        "fine-only, then applied unchanged to the test queries through the index:",
        "",
    ]
    for t in targets:
        for r in rows:
            b = r["base"]
            if b["layer"] == 6:
                continue
            name = f"L{b['layer']}/{b['dim']} {b['transform']} s{b['shortlist']}"
            held = r["held_out"].get(str(t))
            if held is None:
                lines.append(f"- target {t:.0%}, {name}: no margin keeps it on the train queries")
                continue
            rate = held["exit_rate"]
            # the saving is linear in the exit rate: each exit saves the same share (from any test point)
            some = next((q for q in r["test_points"] if q["exit_rate"] > 0), None)
            saving = rate * some["exit_saving"] / some["exit_rate"] if some else 0.0
            lines.append(
                f"- target {t:.0%}, {name}: margin {held['margin']:.4f} (train exit rate "
                f"{held['train_exit_rate']:.1%}); test exit rate {rate:.1%}, nDCG@10 {held['ndcg@10']:.4f} "
                f"(retention {held['ndcg@10'] / ref['quality']:.3f} vs fine-only, "
                f"{held['ndcg@10'] / held['ndcg@10 without exit']:.3f} vs the same cascade), {saving:.1%} of "
                "its end-to-end FLOPs saved"
            )
    lines.append(f"\n(total {time.perf_counter() - t0:.0f} s; load average at end {os.getloadavg()[0]:.1f})")
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out + ".md").write_text(report + "\n")
        Path(args.out + ".json").write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "reference": ref,
                    "encoder_cost": cost.to_json(),
                    "rows": rows,
                    "load_start": load0,
                    "load_end": os.getloadavg(),
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
