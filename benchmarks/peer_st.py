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

import sys
from pathlib import Path

from _peers import parser, read_rows, timed


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__.split("\n\n")[0])
    options.add_argument("--loss", choices=["2d", "adaptive"], default="2d")
    args = options.parse_args(argv)

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

    info, columns = read_rows(args.rows, ("anchor", "positive", "negative"))
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
    timed(info["steps"], args.output, trainer.train)
    model.save(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
