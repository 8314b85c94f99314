"""The folders a training run replaces, and the checks that it only ever replaces its own.

``output`` is replaced only when it is missing, empty or an esrag encoder folder; a
checkpoint folder is deleted (to start over) only when it holds nothing but esrag
checkpoints. :func:`write_output` puts the trained model there atomically.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from esrag._io import atomic_folder, atomic_write_json
from esrag.encoder.config import ENCODER_CONFIG_FILE
from esrag.train.checkpoint import is_checkpoint_folder, is_checkpoint_folder_member

__all__ = ["TRAIN_MANIFEST", "check_checkpoint_dir", "check_output", "write_output"]

TRAIN_MANIFEST = "esrag_train.json"


def check_output(output: Path) -> None:
    """Refuse to replace an ``output`` that is not empty and not an esrag encoder folder."""
    if not output.exists():
        return
    if not output.is_dir():
        raise ValueError(
            f"{output}: output exists and is not a folder; refusing to replace it with the "
            "trained model (choose another --output)"
        )
    if (output / ENCODER_CONFIG_FILE).is_file() or not any(output.iterdir()):
        return
    raise ValueError(
        f"{output}: output exists and is not an esrag encoder folder (no {ENCODER_CONFIG_FILE}); "
        "refusing to replace it with the trained model (choose another --output, or remove it)"
    )


def check_checkpoint_dir(folder: Path, *, resume: bool) -> None:
    """With resume off the checkpoint folder is deleted: only ever delete our own."""
    if resume or not folder.exists() or is_checkpoint_folder(folder):
        return
    if folder.is_dir():
        foreign = sorted(c.name for c in folder.iterdir() if not is_checkpoint_folder_member(c.name))
        what = f"it holds {', '.join(map(repr, foreign[:3]))}" + (" ..." if len(foreign) > 3 else "")
    else:
        what = "it is a file"
    raise ValueError(
        f"{folder}: checkpoint folder exists and is not an esrag checkpoint folder ({what}); "
        "refusing to delete it to start over (choose another --checkpoint-dir, or remove it)"
    )


def write_output(output: Path, model: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``output`` with a copy of the ``model`` folder plus ``manifest``
    (as ``esrag_train.json``), after :func:`check_output`.
    """
    check_output(output)
    with atomic_folder(output) as tmp:
        shutil.copytree(model, tmp, dirs_exist_ok=True)
        atomic_write_json(tmp / TRAIN_MANIFEST, manifest)
