"""Atomic, pickle-free training checkpoints: one typed state, written, found and read back.

A checkpoint folder ``<checkpoint_dir>/step-00000042/`` holds ``model/`` (an encoder saved
with :meth:`EspressoEncoder.save`), ``state.pt`` (optimizer, scheduler, grad scaler, RNG and
running-PCA tensors; read with ``torch.load(weights_only=True)``) and ``state.json`` (step,
config, history, best score). Each folder is written through :func:`esrag._io.atomic_folder`,
so an interruption leaves either the previous checkpoint or the new one, never half of one.
``<checkpoint_dir>/best/`` holds a copy of the best step's ``model/`` and ``best.json``.

:class:`TrainState` is everything a checkpoint holds besides the model; :func:`write_state`
and :func:`read_state` are the only places that know how it maps onto ``state.pt`` and
``state.json``. :func:`write_checkpoint` and :func:`read_checkpoint` are the file layer
underneath (the two files as plain dicts).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from esrag._io import atomic_folder, atomic_write_json, recover_folder
from esrag.train.config import TrainConfig
from esrag.train.selection import Selection

__all__ = [
    "BEST",
    "Best",
    "RngState",
    "TrainState",
    "checkpoint_steps",
    "is_checkpoint_folder",
    "is_checkpoint_folder_member",
    "latest_checkpoint",
    "prune_checkpoints",
    "read_checkpoint",
    "read_state",
    "repair_best",
    "resume_point",
    "step_folder",
    "write_best",
    "write_checkpoint",
    "write_state",
]

logger = logging.getLogger(__name__)

BEST = "best"
_STEP = re.compile(r"^step-(\d{8})$")
# What a checkpoint folder may hold: step folders, best/, and atomic_folder's temporary and
# moved-aside siblings of those (".step-00000042.tmp-abc", ".best.old-xyz").
_MEMBER = re.compile(r"^(step-\d{8}|best|\.(step-\d{8}|best)\.(tmp|old)-.+)$")


@dataclass(frozen=True)
class Best:
    """The best evaluation so far: its step, its score and every score (``best.json``)."""

    step: int
    score: float
    scores: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"step", "score", "eval"}``, as ``best.json`` and ``state.json`` store it."""
        return {"step": self.step, "score": self.score, "eval": dict(self.scores)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Best:
        """Read :meth:`to_json`'s form (``eval`` may be missing)."""
        return cls(int(data["step"]), float(data["score"]), dict(data.get("eval") or {}))


@dataclass(frozen=True)
class RngState:
    """torch's CPU generator state and, where CUDA is available, every device's."""

    cpu: torch.Tensor
    cuda: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def capture(cls) -> RngState:
        """The generators' state now."""
        cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        """Set the generators back to this state (CUDA only where both sides have it)."""
        torch.set_rng_state(self.cpu)
        if torch.cuda.is_available() and self.cuda is not None:
            torch.cuda.set_rng_state_all(list(self.cuda))


@dataclass(frozen=True)
class TrainState:
    """Everything a checkpoint holds besides the model, at the end of step ``step``.

    ``optimizer``, ``scheduler`` and ``scaler`` are the objects' ``state_dict()`` (``scaler``
    is None for a checkpoint written without one); ``pca`` is the running-PCA state of
    learn-to-compress (empty without it). ``history`` holds the run's logged records.
    ``selection`` is where held-out selection stands (base, best, early-stopping count),
    ``holdout`` the held-out anchors (None in checkpoints written before they were kept),
    ``negatives`` the mined hard negatives (document positions per source).
    """

    step: int
    total_steps: int
    config: TrainConfig
    history: tuple[dict[str, Any], ...]
    best: Best | None
    last_eval: dict[str, float] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: RngState
    pca: dict[str, torch.Tensor] = field(default_factory=dict)
    selection: Selection = field(default_factory=Selection)
    holdout: tuple[str, ...] | None = None
    negatives: dict[str, list[int]] = field(default_factory=dict)

    @property
    def last_loss(self) -> float | None:
        """The loss of the newest history record (None before any)."""
        return float(self.history[-1]["loss"]) if self.history else None


def step_folder(root: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives under ``root``."""
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
    checkpoint folder (and the temporary siblings :func:`esrag._io.atomic_folder` makes).
    """
    return _MEMBER.match(name) is not None


def is_checkpoint_folder(root: Path) -> bool:
    """True when ``root`` is a folder holding only checkpoint-folder members (an empty folder
    counts): safe to delete when starting over.
    """
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
    """Atomically write ``folder`` with the model, ``tensors`` (state.pt) and ``state``
    (state.json); the file layer under :func:`write_state`.
    """
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


def write_state(folder: Path, encoder: Any, state: TrainState) -> Path:
    """Atomically write the checkpoint ``folder``: ``encoder``'s model and ``state``."""
    tensors: dict[str, Any] = {
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "rng_cpu": state.rng.cpu,
        "pca": {name: value.cpu() for name, value in state.pca.items()},
    }
    if state.scaler is not None:
        tensors["scaler"] = state.scaler
    if state.rng.cuda is not None:
        tensors["rng_cuda"] = list(state.rng.cuda)
    record = {
        "step": state.step,
        "total_steps": state.total_steps,
        "config": state.config.to_json(),
        "history": list(state.history),
        "best": None if state.best is None else state.best.to_json(),
        "last_eval": state.last_eval,
    }
    # newer entries only when set, so a run without them writes the layout older versions read
    if state.selection != Selection():
        record["selection"] = state.selection.to_json()
    if state.holdout is not None:
        record["holdout"] = list(state.holdout)
    if state.negatives:
        record["negatives"] = state.negatives
    return write_checkpoint(folder, encoder, tensors, record)


def read_state(folder: Path) -> TrainState:
    """The :class:`TrainState` of the checkpoint ``folder`` (as :func:`write_state` wrote it)."""
    tensors, record = read_checkpoint(folder)
    tensors_at, record_at = folder / "state.pt", folder / "state.json"
    best, cuda = record.get("best"), tensors.get("rng_cuda")
    return TrainState(
        step=int(_need(record, "step", record_at)),
        total_steps=int(_need(record, "total_steps", record_at)),
        config=TrainConfig.from_json(_need(record, "config", record_at)),
        history=tuple(record.get("history") or ()),
        best=None if best is None else Best.from_json(best),
        last_eval=record.get("last_eval"),
        optimizer=_need(tensors, "optimizer", tensors_at),
        scheduler=_need(tensors, "scheduler", tensors_at),
        scaler=tensors.get("scaler"),
        rng=RngState(_need(tensors, "rng_cpu", tensors_at), None if cuda is None else tuple(cuda)),
        pca=dict(tensors.get("pca") or {}),
        selection=Selection.from_json(record.get("selection")),
        holdout=None if record.get("holdout") is None else tuple(record["holdout"]),
        negatives={str(k): [int(x) for x in v] for k, v in (record.get("negatives") or {}).items()},
    )


def resume_point(
    root: Path, config: TrainConfig, check: Callable[..., None]
) -> tuple[Path | None, TrainState | None]:
    """Where a run with ``config`` starts: nothing (``resume`` off: our old checkpoints under
    ``root`` are deleted after ``check(root, resume=False)`` passes) or the newest checkpoint
    and its state, whose config must match ``config``.
    """
    if not config.resume and root.exists():
        check(root, resume=config.resume)  # again, just before deleting: only ever delete our own
        logger.warning("resume is off: deleting old checkpoints in %s", root)
        shutil.rmtree(root)
    resume_from = latest_checkpoint(root) if config.resume else None
    if resume_from is None:
        return None, None
    saved = read_state(resume_from)
    changed = config.differences(saved.config)
    if changed:
        raise ValueError(
            f"{resume_from} was written with a different configuration "
            f"({', '.join(changed)} differ); use the same options to resume, another "
            f"--output, or resume=False (--no-resume) to start over"
        )
    return resume_from, saved


def _need(data: Mapping[str, Any], name: str, path: Path) -> Any:
    if name not in data:
        raise ValueError(f"{path}: not an esrag checkpoint state (no {name!r} entry)")
    return data[name]


def write_best(root: Path, source: Path, best: Best | Mapping[str, Any]) -> None:
    """Copy a checkpoint's model to ``<root>/best`` (atomically) with ``best.json``."""
    info = best.to_json() if isinstance(best, Best) else dict(best)
    with atomic_folder(root / BEST) as tmp:
        shutil.copytree(source / "model", tmp / "model")
        atomic_write_json(tmp / "best.json", info)


def repair_best(root: Path, best: Best | Mapping[str, Any]) -> None:
    """Re-copy ``best`` if an interruption fell between its checkpoint and its copy."""
    step = best.step if isinstance(best, Best) else int(best["step"])
    info = root / BEST / "best.json"
    recorded = json.loads(info.read_text()).get("step") if info.is_file() else None
    source = step_folder(root, step)
    if recorded != step and (source / "model").is_dir():
        logger.warning("restoring %s from %s", root / BEST, source)
        write_best(root, source, best)


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest step folders."""
    for step in checkpoint_steps(root)[:-keep]:
        shutil.rmtree(step_folder(root, step), ignore_errors=True)
