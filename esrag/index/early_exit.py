"""Early exit: answer a query from its coarse shortlist when the shortlist is decisive.

The test is a score margin on the coarse shortlist ``s_1 >= s_2 >= ... >= s_L`` (the coarse
scores of the ``L = shortlist`` candidates, best first):

    margin = (s_1 - s_2) / (s_1 - s_L)

the gap between the best and the second-best candidate as a share of the shortlist's whole
spread. It lies in ``[0, 1]`` whatever the coarse transform's scale (PCA, prefix and adapter
scores differ in range), so one margin carries over between settings and corpora better than
a raw gap. A shortlist of fewer than two candidates is decisive (``margin = 1``); a flat one
(``s_1 = s_L``) is not (``margin = 0``).

A query exits when ``margin >= exit_margin``: ``exit_margin = 0`` exits every query, any value
above 1 (``inf``) none. An exited query is answered with the shortlist's first ``k``
candidates and their coarse scores (what ``mode="coarse"`` returns), and its encoder pass
stops at the coarse layer. ``esrag sweep``/``tune`` calibrate the margin for a target
retention (:mod:`esrag.evaluation.exit_calibration`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["coarse_margins", "exits"]


def coarse_margins(scores: np.ndarray) -> np.ndarray:
    """The normalised top-1 margin (float64, ``(Q,)``) of each row of coarse shortlist scores
    (``(Q, L)``, best first, ``-inf`` where a candidate is missing).
    """
    scores = np.asarray(scores, dtype=np.float64)
    out = np.ones(scores.shape[0], dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        return out
    finite = np.isfinite(scores)
    count = finite.sum(axis=1)
    rows = np.flatnonzero(count >= 2)
    if rows.size == 0:
        return out
    top, second = scores[rows, 0], scores[rows, 1]
    last = scores[rows, count[rows] - 1]
    spread = top - last
    gap = top - second
    safe = np.where(spread > 0, spread, 1.0)
    out[rows] = np.where(spread > 0, gap / safe, 0.0)
    return out


def exits(scores: np.ndarray, exit_margin: float | None) -> np.ndarray:
    """Which queries exit (bool ``(Q,)``): their :func:`coarse_margins` reach ``exit_margin``
    (``None``: none exit).
    """
    scores = np.asarray(scores)
    if exit_margin is None:
        return np.zeros(scores.shape[0], dtype=bool)
    return coarse_margins(scores) >= exit_margin
