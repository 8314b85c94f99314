"""What a benchmark ran on, printed beside its figures (machines here are shared and noisy)."""

from __future__ import annotations

import os
import platform


def environment() -> str:
    """One line: Python, torch, faiss, CPU model, cores and threads, GPU if any."""
    import numpy
    import torch

    try:
        import faiss

        faiss_version = faiss.__version__
    except ImportError:
        faiss_version = "missing"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {numpy.__version__}, faiss {faiss_version}; "
        f"cpu {cpu} x{os.cpu_count()}; gpu {gpu}; load average {os.getloadavg()[0]:.2f}"
    )
