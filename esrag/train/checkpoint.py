"""Atomic, pickle-free training checkpoints: write, find the latest, read back.

A checkpoint folder ``<checkpoint_dir>/step-00000042/`` holds ``model/`` (an encoder saved
with :meth:`EspressoEncoder.save`), ``state.pt`` (optimizer, scheduler, grad scaler, RNG and
running-PCA tensors; read with ``torch.load(weights_only=True)``) and ``state.json`` (step,
config, history, best score). Each folder is written through :func:`esrag._io.atomic_folder`,
so an interruption leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from esrag._io import atomic_folder, atomic_write_json, recover_folder

__all__ = [
    "BEST",
    "checkpoint_steps",
    "is_checkpoint_folder",
    "is_checkpoint_folder_member",
    "latest_checkpoint",
    "prune_checkpoints",
    "read_checkpoint",
    "repair_best",
    "write_best",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

BEST = "best"
_STEP = re.compile(r"^step-(\d{8})$")
# What a checkpoint folder may hold: step folders, best/, and atomic_folder's temporary and
# moved-aside siblings of those (".step-00000042.tmp-abc", ".best.old-xyz").
_MEMBER = re.compile(r"^(step-\d{8}|best|\.(step-\d{8}|best)\.(tmp|old)-.+)$")


def step_folder(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def checkpoint_steps(root: Path) -> list[int]:
    """Steps of the complete checkpoints under ``root``, ascending."""
    if not root.is_dir():
        return []
    steps = []
    for child in root.iterdir():
        match = _STEP.match(child.name)
        if match and (child / "state.json").is_file() and (child / "state.pt").is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def is_checkpoint_folder_member(name: str) -> bool:
    """True for the names :func:`write_checkpoint` and :func:`write_best` create in a
    checkpoint folder (and the temporary siblings :func:`esrag._io.atomic_folder` makes)."""
    return _MEMBER.match(name) is not None


def is_checkpoint_folder(root: Path) -> bool:
    """True when ``root`` is a folder holding only checkpoint-folder members (an empty folder
    counts): safe to delete when starting over."""
    return root.is_dir() and all(is_checkpoint_folder_member(child.name) for child in root.iterdir())


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder, after cleaning up interrupted writes."""
    if not root.is_dir():
        return None
    for stale in root.glob(".step-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for child in list(root.glob(".step-*.old-*")):
        recover_folder(root / child.name.split(".old-")[0].lstrip("."))
    steps = checkpoint_steps(root)
    return step_folder(root, steps[-1]) if steps else None


def write_checkpoint(folder: Path, encoder: Any, tensors: dict[str, Any], state: dict[str, Any]) -> Path:
    """Atomically write ``folder`` with the model, ``tensors`` (state.pt) and ``state``."""
    with atomic_folder(folder) as tmp:
        encoder.save(tmp / "model")
        torch.save(tensors, tmp / "state.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    logger.debug("checkpoint written: %s", folder)
    return folder


def read_checkpoint(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, state) of a checkpoint; tensors are loaded with ``weights_only=True``."""
    tensors = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    state = json.loads((folder / "state.json").read_text())
    return tensors, state


def write_best(root: Path, source: Path, info: dict[str, Any]) -> None:
    """Copy a checkpoint's model to ``<root>/best`` (atomically) with ``best.json``."""
    with atomic_folder(root / BEST) as tmp:
        shutil.copytree(source / "model", tmp / "model")
        atomic_write_json(tmp / "best.json", info)


def repair_best(root: Path, best: dict[str, Any]) -> None:
    """Re-copy ``best`` if an interruption fell between its checkpoint and its copy."""
    info = root / BEST / "best.json"
    recorded = json.loads(info.read_text()).get("step") if info.is_file() else None
    source = step_folder(root, int(best["step"]))
    if recorded != best["step"] and (source / "model").is_dir():
        logger.warning("restoring %s from %s", root / BEST, source)
        write_best(root, source, best)


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest step folders."""
    for step in checkpoint_steps(root)[:-keep]:
        shutil.rmtree(step_folder(root, step), ignore_errors=True)
