"""Comparing two rankings of the same sessions made along different paths (threads,
batches, processes, an index), where float32 rounding may swap near-tied items."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl


def assert_same_ranking(got: pl.DataFrame, want: pl.DataFrame, session: str) -> None:
    """`got` ranks as `want` does up to float32 rounding, which another summation order
    (threads, batches, processes, an index) may change: the same sessions and ranks, scores
    equal rank by rank (1e-5 relative), and the same item at every rank whose score is more
    than 1e-4 (relative) from its neighbours'. Items of near-tied scores, whose order that
    rounding may swap, match as a set; a session's last rank, and the ranks tied with it, are
    not compared, as they may tie with items below rank k."""
    got, want = got.sort(session, "rank"), want.sort(session, "rank")
    assert got[session].to_list() == want[session].to_list()
    assert got["rank"].to_list() == want["rank"].to_list()
    scores = want["score"].to_numpy()
    np.testing.assert_allclose(got["score"].to_numpy(), scores, rtol=1e-5, atol=1e-5)
    keys = want[session].to_numpy()
    new_session = keys[1:] != keys[:-1]
    apart = np.abs(np.diff(scores)) > 1e-4 * np.maximum(1.0, np.abs(scores[1:]))
    starts = np.flatnonzero(np.concatenate(([True], new_session | apart)))
    ends = np.append(starts[1:], len(scores))
    got_items, want_items = got["item_id"].to_list(), want["item_id"].to_list()
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        if end == len(scores) or new_session[end - 1]:
            continue  # the session's last run
        mine, theirs = Counter(got_items[start:end]), Counter(want_items[start:end])
        assert mine == theirs, (keys[start], want["rank"][start], mine, theirs)


__all__ = ["assert_same_ranking"]
