"""Peer on the same budget: the seed's own ESE trainer (``angle_emb``'s ``AngleESETrainer``).

Trains all-MiniLM-L6-v2 on exactly the rows esrag's run trained on (``train_scifact.py
--export-data``: the held-out split and the mined hard negatives included), for the same
steps, batch size, learning rate, warmup and max length, with ESE on (``apply_ese=True``,
compression size 64, KL temperature 1) and mean pooling (the model's own). angle_emb is not a
dependency of esrag: run this in its own virtual environment::

    python3.11 -m venv /work/venvs/angle && /work/venvs/angle/bin/pip install torch==2.13.0 angle-emb
    /work/venvs/angle/bin/python benchmarks/peer_angle.py --rows runs/scifact-rows.json \
        --base MODEL_DIR --output runs/scifact-angle

then evaluate the saved model with the same SciFact test code as esrag's run::

    python benchmarks/train_scifact.py --skip-train --output runs/scifact-angle --pooling mean \
        --results benchmarks/results/train_scifact_peer_angle.json

``AngleE.fit`` wraps the backbone in ``torch.compile``; ``--no-compile`` (default) replaces it
with the identity, which changes nothing but the speed of the first steps on CPU. Wall time
and CPU-seconds of the training are written to ``<output>/peer_timing.json``.
"""

from __future__ import annotations

import sys

from _peers import parser, read_rows, timed


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__.split("\n\n")[0])
    options.add_argument("--compile", action="store_true", help="keep AnglE's torch.compile")
    args = options.parse_args(argv)

    import torch
    from angle_emb import AnglE
    from datasets import Dataset

    if not args.compile:
        torch.compile = lambda model, *a, **k: model  # type: ignore[assignment]
    info, columns = read_rows(args.rows, ("query", "positive", "negative"))
    dataset = Dataset.from_dict(columns)
    torch.manual_seed(42)
    angle = AnglE(args.base, max_length=info["max_length"], pooling_strategy="avg", device="cpu")
    fit = lambda: angle.fit(  # noqa: E731
        train_ds=dataset,
        output_dir=args.output,
        batch_size=info["batch_size"],
        learning_rate=info["lr"],
        warmup_steps=info["warmup_steps"],
        logging_steps=10,
        save_strategy="no",
        argument_kwargs={"max_steps": info["steps"], "report_to": [], "seed": 42},
        trainer_kwargs={"ese_compression_size": 64, "ese_kl_temperature": 1.0},
        apply_ese=True,
    )
    timed(info["steps"], args.output, fit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
