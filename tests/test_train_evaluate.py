"""Held-out metrics used for checkpoint selection."""

from __future__ import annotations

import numpy as np
import pytest

from esrag.train.evaluate import mrr_at_10, spearman


def test_spearman_with_ties() -> None:
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1)
    # ties get average ranks: x ranks [1.5, 1.5, 3], y ranks [1, 2, 3] → rho = sqrt(3)/2
    assert spearman(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(np.sqrt(3) / 2)
    assert spearman(np.ones(4), np.arange(4.0)) == 0.0


def test_mrr_at_10() -> None:
    queries, docs = np.eye(3), np.eye(3)[[1, 0, 2]]
    # q0 → doc 1 at rank 1, q1 → doc 0 at rank 1, q2 → doc 0 at rank 2 (doc 2 first)
    assert mrr_at_10(queries, docs, [{1}, {0}, {0}]) == pytest.approx(2.5 / 3)
    assert mrr_at_10(queries, docs, [set(), set(), set()]) == 0.0
