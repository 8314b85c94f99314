"""Progressive cascade search: the coarse search starts while the encoder's deeper layers run.

A cascade query needs its coarse source vector (layer ``Lc``) for the coarse stage and its
fine vector (layer ``Ld``) for the rerank. When ``Lc < Ld`` the coarse vector exists after
``Lc`` of the pass's layers; the sequential cascade still waits for the whole pass. Here the
encoder reports each layer as it runs (``EspressoEncoder.encode_staged``): at layer ``Lc``
the coarse search is handed to a worker thread (FAISS releases the GIL) while the remaining
layers run, and the rerank waits for both. Every vector and every search call is the one the
sequential cascade makes (the same batch, the same matrices, the same functions of
:mod:`esrag.index.search`), so ids and scores are identical.

With an early-exit margin (:mod:`esrag.index.early_exit`) the coarse search runs at layer
``Lc`` on the calling thread instead (the decision needs its scores): when every query of the
pass exits, the pass stops there and no deeper layer runs.

Applies to a text search in ``cascade`` mode whose path is the cascade (not an exact filtered
search) and whose queries form one encoder batch (at most
:attr:`EmbedderAdapter.QUERY_BATCH`), so the coarse search sees the very matrix the sequential
one does; other searches run sequentially.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from esrag.encoder.views import View
from esrag.index.config import SearchMode
from esrag.index.early_exit import exits
from esrag.index.embedder import EmbedderAdapter
from esrag.index.query_pass import QueryPlan
from esrag.index.results import SearchResult
from esrag.index.search import (
    SearchPath,
    cascade_finish,
    cascade_shortlist,
    check_queries,
    filter_rows,
    rows_result,
    search_path,
)
from esrag.index.state import IndexState

__all__ = ["applies", "staged_search"]

Submit = Callable[..., "Future[Any]"]
"""``submit(fn, *args)`` of a worker pool (``ThreadPoolExecutor.submit``)."""


def applies(
    adapter: EmbedderAdapter | None,
    plan: QueryPlan | None,
    n_queries: int,
    progressive: bool,
    exit_margin: float | None,
) -> bool:
    """Whether a text search of ``n_queries`` can run staged (progressively or with early exit)."""
    return (
        adapter is not None
        and adapter.staged
        and plan is not None
        and plan.early_layer is not None
        and 0 < n_queries <= EmbedderAdapter.QUERY_BATCH
        and (progressive or exit_margin is not None)
    )


def staged_search(
    state: IndexState,
    adapter: EmbedderAdapter,
    plan: QueryPlan,
    texts: Sequence[str],
    *,
    k: int,
    shortlist: int,
    filter: Mapping[str, Any] | None,
    exit_margin: float | None,
    submit: Submit,
) -> SearchResult | None:
    """The cascade search of ``texts`` with the coarse stage started at the coarse layer
    (``None`` when the search's path is not the cascade: the caller searches sequentially).
    """
    candidates = filter_rows(state, filter)
    n_match = len(state) if candidates is None else candidates.size
    threshold = state.config.exact_filter_threshold
    if (
        len(state) == 0
        or search_path(SearchMode.CASCADE, n_match, candidates is not None, threshold, shortlist)
        is not SearchPath.CASCADE
    ):
        return None
    early = plan.early_layer
    assert early is not None
    seen: dict[View, np.ndarray] = {}
    got: dict[str, Any] = {}

    def on_layer(layer: int, positions: list[int], vectors: dict[View, np.ndarray]) -> bool:
        order = np.argsort(np.asarray(positions))  # the batch is every query: back to input order
        seen.update({view: array[order] for view, array in vectors.items()})
        if layer != early:
            return True
        source = plan.finish(seen, fine=False)[0]
        source = check_queries(source, None, SearchMode.COARSE, state.source_dim, state.fine_dim)[0]
        got["source"] = source
        if exit_margin is None:
            got["coarse"] = submit(cascade_shortlist, state, source, shortlist, candidates)
            return True
        coarse = cascade_shortlist(state, source, shortlist, candidates)
        got["coarse"], got["exited"] = coarse, exits(coarse[0], exit_margin)
        return not bool(got["exited"].all())

    adapter.encode_staged(texts, plan.views, on_layer, EmbedderAdapter.QUERY_BATCH)
    coarse = got["coarse"]
    if isinstance(coarse, Future):
        coarse = coarse.result()
    exited = got.get("exited")
    fine_q = None
    if exited is None or not exited.all():
        source, fine = plan.finish(seen, fine=True)
        fine_q = check_queries(source, fine, SearchMode.CASCADE, state.source_dim, state.fine_dim)[1]
    result = rows_result(state, [cascade_finish(state, fine_q, coarse, k, candidates, exited)])
    if exited is None:
        return result
    return SearchResult(result.ids, result.scores, exited=[bool(e) for e in exited])
