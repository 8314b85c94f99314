"""Scaling out: encode a corpus across a Ray cluster into a sharded cascade index
(``pip install 'esrag[ray]'``; Ray is imported only when a build runs).
"""

from __future__ import annotations

from esrag.scale.ray_build import RayOptions, build_sharded

__all__ = ["RayOptions", "build_sharded"]
