"""Giving up a computation nobody waits for any more.

The worker path of synchronous requests runs an engine call on behalf of an HTTP client
that may hang up (or whose deadline may pass) while the worker computes. The worker sets
`keep_going` around the engine call; engines call `check_wanted()` between their passes
(each scale, each memory-bounded slice of a batch), which raises `Abandoned` once the
check says no. Outside such a block (jobs, the embedded path) `check_wanted` costs nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_check: ContextVar[Callable[[], bool] | None] = ContextVar("seam_keep_going", default=None)


class Abandoned(Exception):
    """Every request of this computation has been given up by its client."""


@contextmanager
def keep_going(check: Callable[[], bool]) -> Iterator[None]:
    """Inside the block, `check_wanted()` raises `Abandoned` once `check()` is False."""
    token = _check.set(check)
    try:
        yield
    finally:
        _check.reset(token)


def check_wanted() -> None:
    """Called by engines between passes (cheap: one Redis EXISTS on the worker path)."""
    check = _check.get()
    if check is not None and not check():
        raise Abandoned("the client gave up this request")
