"""Checkpoint folders: atomic writes, latest selection, stale temp cleanup, best repair."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import pytest
import torch

from esrag.train import TrainConfig
from esrag.train import checkpoint as ckpt
from esrag.train.checkpoint import Best, RngState, TrainState
from esrag.train.objective import lr_factor


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


def _config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(train=(str(tmp_path / "pairs.jsonl"),), output=str(tmp_path / "out"), lr=1e-3)


def _train_state(tmp_path: Path, *, cuda: bool = True) -> TrainState:
    """A state with every part filled in: a real AdamW/LambdaLR after one step, fake RNG."""
    weight = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, warmup=1, total=4))
    (weight**2).sum().backward()
    optimizer.step()
    scheduler.step()
    best = Best(2, 0.5, {"score": 0.5, "src @ 2:8": 0.25})
    return TrainState(
        step=3,
        total_steps=4,
        config=_config(tmp_path),
        history=({"step": 2, "loss": 1.25, "lr": 0.001, "eval": 0.5}, {"step": 3, "loss": 1.0, "lr": 0.0005}),
        best=best,
        last_eval={"score": 0.5, "src @ 2:8": 0.25},
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=torch.amp.GradScaler("cuda", enabled=False).state_dict(),
        rng=RngState(torch.get_rng_state(), (torch.arange(4, dtype=torch.uint8),) if cuda else None),
        pca={"1.mean": torch.randn(8), "1.cov": torch.randn(8, 8), "1.updates": torch.tensor(5)},
    )


def _assert_same(left: object, right: object, where: str = "state") -> None:
    """Deep equality where tensors compare bitwise (dataclass == cannot compare tensors)."""
    if isinstance(left, torch.Tensor):
        assert isinstance(right, torch.Tensor) and left.dtype == right.dtype, where
        assert torch.equal(left, right), where
    elif dataclasses.is_dataclass(left) and not isinstance(left, type | TrainConfig):
        assert type(left) is type(right), where
        for item in dataclasses.fields(left):
            _assert_same(getattr(left, item.name), getattr(right, item.name), f"{where}.{item.name}")
    elif isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys(), where
        for key in left:
            _assert_same(left[key], right[key], f"{where}[{key!r}]")
    elif isinstance(left, list | tuple):
        assert type(left) is type(right) and len(left) == len(right), where
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert left == right, where


def test_train_state_round_trips_with_its_tensors(tmp_path: Path) -> None:
    state = _train_state(tmp_path)
    folder = ckpt.write_state(ckpt.step_folder(tmp_path / "ckpt", 3), FakeEncoder("three"), state)
    assert ckpt.checkpoint_steps(tmp_path / "ckpt") == [3]
    again = ckpt.read_state(folder)
    _assert_same(state, again)
    assert again.config == state.config and again.last_loss == 1.0
    # without CUDA generators and without a best, too
    bare = dataclasses.replace(_train_state(tmp_path, cuda=False), best=None, last_eval=None, pca={})
    _assert_same(bare, ckpt.read_state(ckpt.write_state(tmp_path / "bare", FakeEncoder("b"), bare)))


def test_write_state_keeps_the_file_layout(tmp_path: Path) -> None:
    folder = ckpt.write_state(tmp_path / "step-00000003", FakeEncoder("three"), _train_state(tmp_path))
    assert sorted(p.name for p in folder.iterdir()) == ["model", "state.json", "state.pt"]
    tensors, record = ckpt.read_checkpoint(folder)
    assert sorted(tensors) == ["optimizer", "pca", "rng_cpu", "rng_cuda", "scaler", "scheduler"]
    assert sorted(record) == ["best", "config", "history", "last_eval", "step", "total_steps"]
    assert record["best"] == {"step": 2, "score": 0.5, "eval": {"score": 0.5, "src @ 2:8": 0.25}}
    assert TrainConfig.from_json(record["config"]) == _config(tmp_path)
    assert isinstance(tensors["rng_cuda"], list) and record["step"] == 3


def test_read_state_of_a_checkpoint_written_as_loose_dicts(tmp_path: Path) -> None:
    """The dicts the trainer assembled before TrainState (no scaler, PCA or CUDA RNG in the
    oldest ones) read back as a TrainState."""
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([weight])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    rng = torch.get_rng_state()
    record = {
        "step": 4,
        "total_steps": 6,
        "config": _config(tmp_path).to_json(),
        "history": [{"step": 4, "loss": 2.5, "lr": 0.001}],
        "best": {"step": 4, "score": 0.75, "eval": {"score": 0.75}},
        "last_eval": {"score": 0.75},
    }
    tensors = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng_cpu": rng}
    folder = ckpt.write_checkpoint(tmp_path / "step-00000004", FakeEncoder("four"), tensors, record)
    state = ckpt.read_state(folder)
    assert (state.step, state.total_steps, state.config) == (4, 6, _config(tmp_path))
    assert state.history == ({"step": 4, "loss": 2.5, "lr": 0.001},) and state.last_loss == 2.5
    assert state.best == Best(4, 0.75, {"score": 0.75}) and state.last_eval == {"score": 0.75}
    assert state.scaler is None and state.pca == {} and state.rng.cuda is None
    assert torch.equal(state.rng.cpu, rng) and state.scheduler["lr_lambdas"] == [None]


def test_read_state_names_what_is_missing(tmp_path: Path) -> None:
    folder = ckpt.write_checkpoint(tmp_path / "step-00000001", FakeEncoder("one"), {}, {"step": 1})
    with pytest.raises(ValueError, match=r"state\.json: not an esrag checkpoint state \(no 'total_steps'"):
        ckpt.read_state(folder)
    record = {"step": 1, "total_steps": 2, "config": _config(tmp_path).to_json()}
    folder = ckpt.write_checkpoint(tmp_path / "step-00000002", FakeEncoder("two"), {}, record)
    with pytest.raises(
        ValueError, match=r"state\.pt: not an esrag checkpoint state \(no 'optimizer' entry\)"
    ):
        ckpt.read_state(folder)


def test_best_is_written_and_repaired_from_its_typed_form(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    best = Best(2, 0.5, {"score": 0.5})
    assert Best.from_json(best.to_json()) == best and Best.from_json({"step": 1, "score": 0.1}).scores == {}
    ckpt.write_checkpoint(ckpt.step_folder(root, 2), FakeEncoder("two"), {}, {"step": 2})
    ckpt.repair_best(root, best)  # no best/ yet: copied from step 2
    assert json.loads((root / "best" / "best.json").read_text()) == best.to_json()
    assert (root / "best" / "model" / "weights.txt").read_text() == "two"


def test_rng_state_captures_and_restores() -> None:
    saved = RngState.capture()
    first = torch.rand(3)
    saved.restore()
    assert torch.equal(torch.rand(3), first)
