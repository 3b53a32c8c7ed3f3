"""The cut-offs every ranking metric is reported at unless asked otherwise.

A module of its own without imports: the commands read it for their help without loading torch.
"""

from __future__ import annotations

from collections.abc import Iterable

CUTOFFS: tuple[int, ...] = (1, 5, 10, 20)


def with_metric(metric: str, cutoffs: Iterable[int] = CUTOFFS) -> tuple[int, ...]:
    """`cutoffs` and the cut-off of `metric` ("mrr@50" adds 50), sorted and distinct."""
    _name, _, cutoff = metric.partition("@")
    extra = {int(cutoff)} if cutoff.isdigit() else set()
    return tuple(sorted({*cutoffs, *extra}))


def spelled(cutoffs: Iterable[int] = CUTOFFS) -> str:
    """ "1,5,10,20": as the command line takes them."""
    return ",".join(str(k) for k in cutoffs)


__all__ = ["CUTOFFS", "spelled", "with_metric"]
