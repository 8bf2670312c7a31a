"""`detect_gaps`: report missing final klines of one series as `Gap` events.

Hand-written: the state (the next open time expected) is shared between the
item path and an optional timer on the scheduler, which no composition of
stock operators expresses without a Subject and a second subscription.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from threading import RLock
from typing import Any, Final, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable

from operators.events import Gap, Kline

__all__ = ["DEFAULT_GRACE_MS", "detect_gaps_"]

_T = TypeVar("_T")

DEFAULT_GRACE_MS: Final = 10_000
"""How long after a candle's close its final kline may still arrive over the WebSocket."""

_EPOCH: Final = datetime.fromtimestamp(0, tz=UTC)
_MS: Final = timedelta(milliseconds=1)
_US: Final = timedelta(microseconds=1)


def _check_ms(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"detect_gaps {name} must be an int >= {minimum} (ms), got {value!r}")


def detect_gaps_(
    interval_ms: int,
    scheduler: abc.SchedulerBase | None = None,
    grace_ms: int = DEFAULT_GRACE_MS,
) -> Callable[[Observable[_T]], Observable[_T | Gap]]:
    """Implementation of `operators.detect_gaps` (documented there)."""
    _check_ms("interval_ms", interval_ms, 1)
    _check_ms("grace_ms", grace_ms, 0)

    def operator(source: Observable[_T]) -> Observable[_T | Gap]:
        def subscribe(
            observer: abc.ObserverBase[_T | Gap],
            subscribe_scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            emit = observer.on_next
            # The timer and the feed may run on different threads; the lock
            # is re-entrant because a subscriber reacting to a Gap may push a
            # backfill into the same source on the same thread.
            lock = RLock()
            symbol = ""
            interval = ""
            started = False
            # Every open time below `next_open` was either seen or reported.
            next_open = 0
            stopped = False
            timer = SerialDisposable()
            # Whether a deadline is scheduled. A final kline only moves
            # `next_open` (deadlines only move later); the pending deadline,
            # when it runs, re-arms for the current one. So no kline pays for
            # a cancel and a reschedule (~15 µs on an AsyncIOScheduler), and
            # the timer work happens between frames, once per interval.
            pending = False

            def arm() -> None:
                # Due when the candle opening at `next_open` has closed and
                # its final kline is `grace_ms` late.
                nonlocal pending
                if scheduler is not None:
                    pending = True
                    due = _EPOCH + (next_open + interval_ms + grace_ms) * _MS
                    timer.disposable = scheduler.schedule_absolute(due, on_deadline)

            def on_deadline(_: abc.SchedulerBase, __: Any = None) -> None:
                nonlocal next_open, pending
                assert scheduler is not None
                with lock:
                    pending = False
                    if stopped:
                        return
                    now = scheduler.now - _EPOCH
                    now_ms = now // _MS
                    # Candles whose close plus grace has passed by now.
                    overdue = (now_ms - grace_ms - next_open) // interval_ms
                    gap: Gap | None = None
                    if overdue > 0:
                        start = next_open
                        next_open += overdue * interval_ms
                        gap = Gap(symbol, interval, start, next_open, now // _US * 1000)
                    arm()
                    if gap is not None:
                        emit(gap)

            def on_next(value: _T) -> None:
                nonlocal symbol, interval, started, next_open
                if not isinstance(value, Kline) or not value.final:
                    emit(value)
                    return
                with lock:
                    if not started:
                        started = True
                        symbol = value.symbol
                        interval = value.interval
                        next_open = value.open_time + interval_ms
                        arm()
                    elif value.symbol == symbol and value.interval == interval:
                        open_time = value.open_time
                        if open_time >= next_open:
                            start = next_open
                            next_open = open_time + interval_ms
                            if not pending:
                                arm()
                            # State first, then emit: a backfill pushed in
                            # re-entrantly must already see the gap as reported.
                            if open_time > start:
                                emit(Gap(symbol, interval, start, open_time, value.t))
                    emit(value)

            def stop() -> None:
                nonlocal stopped
                with lock:
                    stopped = True
                timer.dispose()

            def on_error(error: Exception) -> None:
                stop()
                observer.on_error(error)

            def on_completed() -> None:
                stop()
                observer.on_completed()

            subscription = source.subscribe(
                on_next, on_error, on_completed, scheduler=subscribe_scheduler
            )
            return CompositeDisposable(subscription, timer)

        return Observable(subscribe)

    return operator
