"""What the peer trainers share: their command line, the exported rows, the timing record.

Imports nothing beyond the standard library, so each peer's own virtual environment can use it.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parser(description: str) -> argparse.ArgumentParser:
    """``--rows`` (train_scifact.py --export-data output), ``--base`` and ``--output``."""
    out = argparse.ArgumentParser(description=description)
    out.add_argument("--rows", required=True, help="train_scifact.py --export-data output")
    out.add_argument("--base", required=True, help="the base model folder")
    out.add_argument("--output", required=True)
    return out


def read_rows(path: str, names: tuple[str, str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(the export's settings, its rows as columns named ``names`` (anchor, positive, negative))."""
    info = json.loads(Path(path).read_text())
    rows = info.pop("rows")
    columns = {names[0]: [r["anchor"] for r in rows], names[1]: [r["positive"] for r in rows]}
    if all("negative" in r for r in rows):
        columns[names[2]] = [r["negative"] for r in rows]
    return info, columns


def timed(steps: int, output: str, train: Callable[[], None]) -> dict[str, float]:
    """Run ``train``; write and return its wall time, CPU-seconds and seconds per step."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, started = usage.ru_utime + usage.ru_stime, time.perf_counter()
    train()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    timing = {
        "steps": steps,
        "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu,
    }
    timing["seconds_per_step"] = timing["wall_seconds"] / steps
    timing["cpu_seconds_per_step"] = timing["cpu_seconds"] / steps
    Path(output).mkdir(parents=True, exist_ok=True)
    (Path(output) / "peer_timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(json.dumps(timing))
    return timing
