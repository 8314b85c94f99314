"""Markdown tables of the ESE training benchmarks from their JSON results (for the README).

Usage: python benchmarks/report.py [--results benchmarks/results]

Reads ``train_scifact_default*.json``, ``train_scifact_compress*.json`` and
``train_scifact_peer_{st,angle}*.json`` (the current trainer, its ``--compress`` variant and
its peers, per seed; ``benchmarks/train_scifact.py``, ``peer_st.py``, ``peer_angle.py``),
then the earlier recipe's ``train_sts.json`` (and its ablations ``train_sts_no_express.json``,
``train_sts_no_compress.json``) and ``train_scifact.json`` (with ``train_scifact_no_*.json``),
written by ``benchmarks/train_sts.py`` and the earlier ``benchmarks/train_scifact.py``; a
missing file is skipped. Nothing is computed here beyond ratios and means of the stored figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LAYERS = (1, 2, 3, 4, 5, 6)
VARIANTS = (
    ("", "ESE (express + compress)"),
    ("_no_express", "no learn-to-express"),
    ("_no_compress", "no learn-to-compress"),
)


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def sts_table(run: dict[str, Any]) -> list[str]:
    before, after = run["before"], run["after"]
    lines = [
        "| layer | Spearman (384 dims) | % of the full view | 128 dims | % of the full view |",
        "|---|---|---|---|---|",
    ]
    for layer in LAYERS:
        cells = []
        for dim in (384, 128):
            b, a = before[f"{layer}:{dim}"], after[f"{layer}:{dim}"]
            cells.append(f"{b:.3f} → {a:.3f}")
            cells.append(f"{b / before['6:384']:.1%} → {a / after['6:384']:.1%}")
        lines.append(f"| L{layer} | " + " | ".join(cells) + " |")
    return lines


def _train_cost(run: dict[str, Any]) -> str:
    train = run.get("train", {})
    return f"{train.get('steps', '?')} steps, {train.get('seconds', float('nan')):.0f} s"


def ablation_table(folder: Path) -> list[str]:
    lines = [
        "| run | SciFact full nDCG@10 | L2/64 `prefix` cascade | L2/64 `adapter` cascade | L2/64 alone "
        "| STS-B full Spearman | L2/384 % of full | L2/128 % of full |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for suffix, label in VARIANTS:
        sci, sts = _load(folder, f"train_scifact{suffix}"), _load(folder, f"train_sts{suffix}")
        cells = [label]
        if sci:
            a = sci["after"]
            cells += [
                f"{a['6:384']['flat']:.3f}",
                f"{a['2:64']['retention']:.1%}",
                f"{a['2:64:adapter']['retention']:.1%}",
                f"{a['2:64']['flat']:.3f}",
            ]
        else:
            cells += ["—"] * 4
        if sts:
            a = sts["after"]
            cells += [f"{a['6:384']:.3f}", f"{a['2:384'] / a['6:384']:.1%}", f"{a['2:128'] / a['6:384']:.1%}"]
        else:
            cells += ["—"] * 3
        lines.append("| " + " | ".join(cells) + " |")
    sci0 = _load(folder, "train_scifact")
    sts0 = _load(folder, "train_sts")
    if sci0 and sts0:
        b, s = sci0["before"], sts0["before"]
        lines.append(
            f"| untrained | {b['6:384']['flat']:.3f} | {b['2:64']['retention']:.1%} | "
            f"{b['2:64:adapter']['retention']:.1%} | {b['2:64']['flat']:.3f} | {s['6:384']:.3f} | "
            f"{s['2:384'] / s['6:384']:.1%} | {s['2:128'] / s['6:384']:.1%} |"
        )
    return lines


# (label, lr, results file stem by seed): SciFact test, the same exported rows per seed
PEERS: tuple[tuple[str, str, dict[int, str]], ...] = (
    (
        "esrag, defaults (the README recipe)",
        "1e-4",
        {42: "train_scifact_default", 43: "train_scifact_default_seed43", 44: "train_scifact_default_seed44"},
    ),
    (
        "esrag, defaults + `--compress`",
        "1e-4",
        {42: "train_scifact_compress", 43: "train_scifact_compress_seed43"},
    ),
    ("esrag, defaults + `--compress --kl-weight 0`", "1e-4", {42: "train_scifact_kl0"}),
    ("esrag, defaults + `--layers 2` (only layer 2 trained)", "1e-4", {43: "train_scifact_layers2_seed43"}),
    ("sentence-transformers: MNRL in Matryoshka2dLoss", "5e-5", {42: "train_scifact_peer_st"}),
    ("sentence-transformers: MNRL in Matryoshka2dLoss", "1e-4", {43: "train_scifact_peer_st_seed43"}),
    ("angle_emb AngleESETrainer (ESE, compression 64)", "5e-5", {42: "train_scifact_peer_angle"}),
    ("angle_emb AngleESETrainer (ESE, compression 64)", "1e-4", {43: "train_scifact_peer_angle_seed43"}),
)
HEADLINE = ("full", "l2_64_flat", "l2_64_prefix_retention", "l2_64_adapter_retention")


def _timing(folder: Path, stem: str, run: dict[str, Any]) -> str:
    """CPU-s per step, wall s and CPU-s of the training (a peer's from ``<stem>_timing.json``)."""
    train = run.get("train") or _load(folder, f"{stem}_timing") or {}
    per_step = train.get("cpu_seconds_per_step")
    wall = train.get("wall_seconds", train.get("seconds"))
    cpu = train.get("process_cpu_seconds", train.get("cpu_seconds"))
    cells = [
        "—" if per_step is None else f"{per_step:.1f}",
        "—" if wall is None else f"{wall:.0f}",
        "—" if cpu is None else f"{cpu:.0f}",
    ]
    return " | ".join(cells)


def _cells(values: dict[str, float]) -> str:
    return (
        f"{values['full']:.3f} | {values['l2_64_flat']:.3f} | {values['l2_64_prefix_retention']:.1%} | "
        f"{values['l2_64_adapter_retention']:.1%}"
    )


def peer_table(folder: Path) -> list[str]:
    """SciFact test: base, esrag's default run and the peers on the same rows, steps and batch,
    one row per seed (the seed of the held-out split, the mined negatives and the batches) and
    the mean over seeds where a recipe ran on several."""
    lines = [
        "| run | lr | seed | full nDCG@10 | L2/64 alone | L2/64 `prefix` cascade | L2/64 `adapter` cascade "
        "| CPU-s / step | wall s | CPU-s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = next((r for _, _, stems in PEERS for stem in stems.values() if (r := _load(folder, stem))), None)
    if first is not None:
        lines.append(f"| base (untrained) | | | {_cells(first['headline']['before'])} | — | — | — |")
    for label, lr, stems in PEERS:
        runs = {seed: run for seed, stem in stems.items() if (run := _load(folder, stem))}
        if not runs:
            lines.append(f"| {label} | {lr} | | not run | | | | | | |")
            continue
        for seed, run in runs.items():
            timing = _timing(folder, stems[seed], run)
            lines.append(f"| {label} | {lr} | {seed} | {_cells(run['headline']['after'])} | {timing} |")
        if len(runs) > 1:
            mean = {k: sum(r["headline"]["after"][k] for r in runs.values()) / len(runs) for k in HEADLINE}
            lines.append(f"| {label}: mean | {lr} | {len(runs)} seeds | {_cells(mean)} | | | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    print("SciFact test, esrag's defaults vs its peers on the same budget:\n")
    print("\n".join(peer_table(args.results)) + "\n")
    sts = _load(args.results, "train_sts")
    if sts:
        print(f"STS-B test, before → after ({_train_cost(sts)}):\n")
        print("\n".join(sts_table(sts)) + "\n")
    print("Ablations (cascade = shortlist 100 by the view, reranked by L6/384 of the same model):\n")
    print("\n".join(ablation_table(args.results)))
    for suffix, label in VARIANTS:
        for name in ("train_scifact", "train_sts"):
            run = _load(args.results, name + suffix)
            if run:
                print(f"\n{name}{suffix} ({label}): {_train_cost(run)}")


if __name__ == "__main__":
    main()
