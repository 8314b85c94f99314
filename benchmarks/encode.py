"""Encoding speed of every depth view against sentence-transformers, in one process.

Usage: python benchmarks/encode.py [--data ../shared/data] [--n 2000] [--repeats 3]

Encodes N STS-B sentences with sentence-transformers' ``encode`` (the baseline) and with
EspressoEncoder at the views (k, 384) for k = 1..6, interleaving the runs and keeping each
one's best time over ``--repeats`` rounds, so background load hits both alike. Prints
sentences/s and ratios: full depth vs sentence-transformers (target ≥ 1.0×) and each
layer-k view's cost against the full pass (target ≤ k/6 + 0.1).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment


def sentences(data: Path, n: int) -> list[str]:
    out: list[str] = []
    with (data / "stsb" / "stsb.tsv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            out.extend([row["sentence1"], row["sentence2"]])
            if len(out) >= n:
                break
    return out[:n]


def best_time(fn, repeats: int) -> float:
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ESRAG_DATA", "../shared/data")))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from esrag.encoder import EspressoEncoder, default_model_path

    texts = sentences(args.data, args.n)
    baseline = SentenceTransformer(str(default_model_path()), device="cpu")
    encoder = EspressoEncoder(device="cpu")
    runs = {"sentence-transformers": lambda: baseline.encode(texts, batch_size=args.batch_size)}
    for layer in range(1, encoder.num_layers + 1):
        runs[f"esrag layer {layer}/384"] = lambda layer=layer: encoder.encode(
            texts, [(layer, 384)], batch_size=args.batch_size, show_progress_bar=False
        )
    for fn in runs.values():  # warm up
        fn()
    times = {name: float("inf") for name in runs}
    for _ in range(args.repeats):  # interleaved rounds
        for name, fn in runs.items():
            times[name] = min(times[name], best_time(fn, 1))

    full = times[f"esrag layer {encoder.num_layers}/384"]
    st = times["sentence-transformers"]
    print(f"environment: {environment()}")
    print(
        f"{len(texts)} STS-B sentences, batch {args.batch_size}, best of {args.repeats} interleaved rounds\n"
    )
    print("| run | sentences/s | speed vs sentence-transformers | cost vs full pass | target cost |")
    print("|---|---|---|---|---|")
    for name, seconds in times.items():
        layer = name.split()[-1].split("/")[0] if name.startswith("esrag") else None
        target = f"≤ {int(layer) / encoder.num_layers + 0.1:.2f}" if layer else ""
        cost = f"{seconds / full:.2f}" if layer else ""
        print(f"| {name} | {len(texts) / seconds:.0f} | {st / seconds:.2f}× | {cost} | {target} |")


if __name__ == "__main__":
    main()
