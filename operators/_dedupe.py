"""`dedupe`: drop items whose key was seen among the last `window` distinct keys.

Hand-written rather than composed: `ops.distinct` keeps every key forever
(memory grows without bound, and it slows down as the set grows), and
`ops.filter` over a closure costs an extra Python call per item. A set plus a
FIFO ring keeps both memory and time per item constant.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Final, TypeVar

from reactivex import Observable, abc

__all__ = ["DUPLICATE", "dedupe_"]

_T = TypeVar("_T")

DUPLICATE: Final = "duplicate"
"""The `on_drop` reason for an item whose key was already seen."""

_NO_KEY: Final = object()


def dedupe_(
    key: Callable[[_T], Hashable],
    window: int = 1024,
    on_drop: Callable[[_T, str], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Implementation of `operators.dedupe` (documented there)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"dedupe window must be a positive int, got {window!r}")

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            emit = observer.on_next
            on_error = observer.on_error

            if window == 1:
                # One key to remember: a comparison beats set and ring upkeep.
                last: Hashable = _NO_KEY

                def on_next(value: _T) -> None:
                    nonlocal last
                    try:
                        k = key(value)
                        if k == last:
                            if on_drop is not None:
                                on_drop(value, DUPLICATE)
                            return
                    except Exception as exc:  # user callbacks fail into the stream
                        on_error(exc)
                        return
                    last = k
                    emit(value)

            else:
                seen: set[Hashable] = set()
                # Keys in first-seen order; the oldest leaves the set when the
                # ring outgrows the window. A repeat does not refresh its key:
                # the window counts distinct keys by first arrival.
                ring: deque[Hashable] = deque()
                add = seen.add
                remove = seen.remove
                push = ring.append
                pop_oldest = ring.popleft

                def on_next(value: _T) -> None:
                    try:
                        k = key(value)
                        if k in seen:
                            if on_drop is not None:
                                on_drop(value, DUPLICATE)
                            return
                    except Exception as exc:
                        on_error(exc)
                        return
                    add(k)
                    push(k)
                    if len(ring) > window:
                        remove(pop_oldest())
                    emit(value)

            return source.subscribe(on_next, on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
