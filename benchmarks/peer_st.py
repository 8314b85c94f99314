"""Peer on the same budget: sentence-transformers' own training of a 2D-Matryoshka model.

``MultipleNegativesRankingLoss`` (in-batch negatives plus the hard negative column) wrapped
in ``Matryoshka2dLoss`` (``AdaptiveLayerLoss`` over the layers × ``MatryoshkaLoss`` over
dims 384/256/128/64) or, with ``--loss adaptive``, in ``AdaptiveLayerLoss`` alone; the
``NO_DUPLICATES`` batch sampler; on exactly the rows esrag's run trained on
(``train_scifact.py --export-data``), for its steps, batch size, learning rate, warmup and
max length. It needs ``accelerate`` and ``datasets``, which esrag does not, so run it in its
own virtual environment::

    python3.11 -m venv /work/venvs/st
    /work/venvs/st/bin/pip install torch==2.13.0 sentence-transformers==6.2.0 accelerate datasets
    /work/venvs/st/bin/python benchmarks/peer_st.py --rows runs/scifact-rows.json \
        --base MODEL_DIR --output runs/scifact-st

then evaluate with ``train_scifact.py --skip-train --output runs/scifact-st``. Wall time and
CPU-seconds of the training are written to ``<output>/peer_timing.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", required=True, help="train_scifact.py --export-data output")
    parser.add_argument("--base", required=True, help="the base model folder")
    parser.add_argument("--output", required=True)
    parser.add_argument("--loss", choices=["2d", "adaptive"], default="2d")
    args = parser.parse_args(argv)

    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import (
        AdaptiveLayerLoss,
        Matryoshka2dLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.training_args import BatchSamplers

    info = json.loads(Path(args.rows).read_text())
    rows = info["rows"]
    columns = {"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]}
    if all("negative" in r for r in rows):
        columns["negative"] = [r["negative"] for r in rows]
    dataset = Dataset.from_dict(columns)
    torch.manual_seed(42)
    model = SentenceTransformer(args.base, device="cpu")
    model.max_seq_length = info["max_length"]
    base = MultipleNegativesRankingLoss(model)
    if args.loss == "2d":
        loss = Matryoshka2dLoss(model, base, matryoshka_dims=[384, 256, 128, 64])
    else:
        loss = AdaptiveLayerLoss(model, base)
    training = SentenceTransformerTrainingArguments(
        output_dir=str(Path(args.output) / "trainer"),
        max_steps=info["steps"],
        per_device_train_batch_size=info["batch_size"],
        learning_rate=info["lr"],
        warmup_steps=info["warmup_steps"],
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        logging_steps=10,
        report_to=[],
        seed=42,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=training, train_dataset=dataset, loss=loss)
    started, cpu = time.perf_counter(), _cpu_seconds()
    trainer.train()
    timing = {
        "steps": info["steps"],
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": _cpu_seconds() - cpu,
    }
    timing["seconds_per_step"] = timing["wall_seconds"] / info["steps"]
    model.save(args.output)
    (Path(args.output) / "peer_timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(json.dumps(timing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
