"""`final_only`: let final klines through, drop the candles still forming.

Hand-written rather than `ops.filter`: the pipeline runs every event through
it (order-book and ticker events included), and inlining the test saves the
predicate call `ops.filter` makes per item.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

from reactivex import Observable, abc

from operators.events import Kline

__all__ = ["NON_FINAL", "final_only_"]

_T = TypeVar("_T")

NON_FINAL: Final = "non-final"
"""The `on_drop` reason for a kline whose candle has not closed yet."""


def final_only_(
    on_drop: Callable[[Kline, str], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Implementation of `operators.final_only` (documented there)."""

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            emit = observer.on_next
            on_error = observer.on_error

            def on_next(value: _T) -> None:
                if isinstance(value, Kline) and not value.final:
                    if on_drop is not None:
                        try:
                            on_drop(value, NON_FINAL)
                        except Exception as exc:
                            on_error(exc)
                    return
                emit(value)

            return source.subscribe(on_next, on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
