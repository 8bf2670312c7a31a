"""`conflate`: hand a slow subscriber the latest value, never a backlog.

Hand-written: no stock operator has these semantics. `observe_on` queues every
value (the backlog a slow subscriber must not build), `debounce` starves a
subscriber while the feed never pauses, and `sample` polls on a fixed period
even when nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import RLock
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

__all__ = ["conflate_"]

_T = TypeVar("_T")


def conflate_(scheduler: abc.SchedulerBase) -> Callable[[Observable[_T]], Observable[_T]]:
    """Implementation of `operators.conflate` (documented there)."""

    def operator(source: Observable[_T]) -> Observable[_T]:
        def subscribe(
            observer: abc.ObserverBase[_T], subscribe_scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            lock = RLock()
            latest: Any = None
            has_latest = False
            # True from the moment a delivery is scheduled until it has
            # finished: one delivery at a time, so the subscriber is never
            # called concurrently, even on a thread-pool scheduler.
            busy = False
            terminal: Callable[[], None] | None = None
            disposed = False
            # Only for cancelling on disposal: a delivery that runs anyway
            # checks `disposed` first, so a stale handle here is harmless.
            # (A SerialDisposable would be wrong: replacing it from the feed
            # thread could cancel a delivery just scheduled by the scheduler's.)
            handle: abc.DisposableBase | None = None

            def deliver(_: abc.SchedulerBase, __: Any = None) -> None:
                nonlocal latest, has_latest
                with lock:
                    if disposed:
                        return
                    value, send = latest, has_latest
                    latest, has_latest = None, False
                if send:
                    observer.on_next(value)
                finish = next_step()
                if finish is not None:
                    finish()

            def next_step() -> Callable[[], None] | None:
                # After a delivery: go round again, or end the stream, or idle.
                nonlocal busy, handle
                with lock:
                    if disposed:
                        return None
                    if has_latest:
                        # More arrived while the subscriber was busy: go
                        # round again through the scheduler, not a loop here,
                        # so other work on it is not starved.
                        handle = scheduler.schedule(deliver)
                        return None
                    busy = False
                    return terminal

            def on_next(value: _T) -> None:
                nonlocal latest, has_latest, busy, handle
                with lock:
                    latest = value
                    has_latest = True
                    if busy:
                        return
                    busy = True
                handle = scheduler.schedule(deliver)

            def on_terminal(finish: Callable[[], None]) -> None:
                nonlocal busy, terminal, handle
                with lock:
                    terminal = finish
                    if busy:
                        return  # the pending delivery finishes with it
                    busy = True
                handle = scheduler.schedule(deliver)

            def on_error(error: Exception) -> None:
                on_terminal(lambda: observer.on_error(error))

            def on_completed() -> None:
                on_terminal(observer.on_completed)

            def dispose() -> None:
                nonlocal disposed, latest
                with lock:
                    disposed = True
                    latest = None
                    pending = handle
                if pending is not None:
                    pending.dispose()

            subscription = source.subscribe(
                on_next, on_error, on_completed, scheduler=subscribe_scheduler
            )
            return CompositeDisposable(subscription, Disposable(dispose))

        return Observable(subscribe)

    return operator
