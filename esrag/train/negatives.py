"""Hard negatives mined with the base model (``hard_negatives=True``).

For each (anchor, positive) row of a pair source without negatives: rank the source's
documents (a BEIR corpus, else its distinct positives) by the base model's full-view cosine
to the anchor, drop the first ``skip`` ranks (near-duplicates and unjudged positives sit
there), drop every document known to be right for the anchor (its positives and judged
documents of any grade), and pick one of the rest of the top ``depth`` at random (seeded per
source). Rows with nothing left get a random document that is not right for them.

Mining runs once, before training, and only on training rows (held-out queries are split off
first); the picks are document positions, saved in checkpoints so a resumed run trains on
the same triplets without mining again.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from esrag.encoder import EspressoEncoder, View
from esrag.train.examples import Examples

__all__ = ["apply_negatives", "mine_negatives", "negative_pool", "wants_negatives"]

logger = logging.getLogger(__name__)


def wants_negatives(examples: Examples) -> bool:
    """Whether mining applies: a pair source without a negative column."""
    return not examples.scored and examples.negatives is None


def negative_pool(examples: Examples) -> list[str]:
    """The documents negatives are drawn from: the corpus, else the distinct positives."""
    texts = examples.corpus if examples.corpus is not None else examples.positives
    return list(dict.fromkeys(texts))


def mine_negatives(
    encoder: EspressoEncoder,
    examples: Examples,
    *,
    skip: int,
    depth: int,
    seed: int,
    batch_size: int = 32,
    doc_vectors: np.ndarray | None = None,
) -> tuple[list[int], np.ndarray]:
    """(one document position in :func:`negative_pool` per row, the pool's full-view vectors).

    ``doc_vectors``: the pool already encoded (sources sharing a corpus encode it once).
    """
    pool = negative_pool(examples)
    if len(pool) < 2:
        raise ValueError(f"{examples.source}: {len(pool)} document(s) to mine hard negatives from; need 2")
    full = [View(encoder.num_layers, encoder.hidden_size)]
    anchors = list(dict.fromkeys(examples.anchors))
    logger.info(
        "%s: mining hard negatives for %d anchors among %d documents",
        examples.source,
        len(anchors),
        len(pool),
    )
    docs = doc_vectors if doc_vectors is not None else encoder.encode(pool, full, batch_size=batch_size)[0]
    queries = encoder.encode(anchors, full, batch_size=batch_size)[0]
    position = {text: i for i, text in enumerate(pool)}
    relevant = examples.relevant()
    rng = random.Random(seed)
    top = min(depth, len(pool))
    ranked: dict[str, list[int]] = {}
    for start in range(0, len(anchors), 256):
        scores = queries[start : start + 256] @ docs.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
        for anchor, row in zip(anchors[start : start + 256], order, strict=True):
            known = {position[t] for t in relevant.get(anchor, ()) if t in position}
            ranked[anchor] = [int(j) for j in row[skip:] if int(j) not in known]
    picks: list[int] = []
    fallback = 0
    for anchor in examples.anchors:
        choices = ranked[anchor]
        if choices:
            picks.append(rng.choice(choices))
            continue
        fallback += 1
        known = {position[t] for t in relevant.get(anchor, ()) if t in position}
        free = [j for j in range(len(pool)) if j not in known] or list(range(len(pool)))
        picks.append(rng.choice(free))
    if fallback:
        logger.warning(
            "%s: %d row(s) had no candidate in ranks %d..%d; a random document was used",
            examples.source,
            fallback,
            skip,
            depth,
        )
    return picks, docs


def apply_negatives(examples: Examples, picks: Sequence[int]) -> Examples:
    """``examples`` with the picked documents as their negative column."""
    pool = negative_pool(examples)
    if len(picks) != len(examples) or any(not 0 <= p < len(pool) for p in picks):
        raise ValueError(
            f"{examples.source}: saved hard negatives do not fit the data ({len(picks)} picks for "
            f"{len(examples)} rows over {len(pool)} documents); the data changed since the run started"
        )
    return replace(examples, negatives=[pool[p] for p in picks])
