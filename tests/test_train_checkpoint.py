"""Checkpoint folders: atomic writes, latest selection, stale temp cleanup, best repair."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from esrag.train import checkpoint as ckpt


class FakeEncoder:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text(self.tag)
        return folder


def test_write_read_latest_prune_and_cleanup(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    assert ckpt.latest_checkpoint(root) is None
    for step in (2, 4, 6):
        ckpt.write_checkpoint(
            ckpt.step_folder(root, step), FakeEncoder(f"s{step}"), {"rng": torch.arange(3)}, {"step": step}
        )
    stale = root / ".step-00000008.tmp-abc"
    stale.mkdir()
    (root / "step-00000009").mkdir()  # incomplete: no state files
    latest = ckpt.latest_checkpoint(root)
    assert latest == ckpt.step_folder(root, 6) and not stale.exists()
    tensors, state = ckpt.read_checkpoint(latest)
    assert torch.equal(tensors["rng"], torch.arange(3)) and state == {"step": 6}
    ckpt.prune_checkpoints(root, keep=1)
    assert ckpt.checkpoint_steps(root) == [6]


def test_repair_best_after_interrupted_copy(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    ckpt.write_checkpoint(ckpt.step_folder(root, 2), FakeEncoder("two"), {}, {"step": 2})
    ckpt.write_best(root, ckpt.step_folder(root, 2), {"step": 2, "score": 0.1})
    ckpt.write_checkpoint(ckpt.step_folder(root, 4), FakeEncoder("four"), {}, {"step": 4})
    # the run died before copying step 4 to best/, but state.json already says best = 4
    ckpt.repair_best(root, {"step": 4, "score": 0.2})
    assert (root / "best" / "model" / "weights.txt").read_text() == "four"
    assert json.loads((root / "best" / "best.json").read_text())["step"] == 4
