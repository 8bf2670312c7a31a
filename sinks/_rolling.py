"""`RollingFrame`: the base every fixed-size frame shares (versioning, cache, publishing).

A subclass only says how one event changes its storage (`_apply`), how to copy that
storage out cheaply (`_snapshot`) and how to turn the copy into a Polars frame
(`_build`). Everything about reading, caching and subscribers lives here, once.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar, cast

import numpy.typing as npt
import polars as pl
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.scheduler import CurrentThreadScheduler
from reactivex.subject import Subject

from operators import conflate

__all__ = ["RollingFrame", "frame_from_columns"]

E = TypeVar("E")


def frame_from_columns(
    schema: pl.Schema, columns: Sequence[npt.NDArray[Any] | pl.Series | list[Any]]
) -> pl.DataFrame:
    """A frame from one column per schema entry, named and typed by `schema`, in its order.

    `pl.DataFrame(..., schema=...)` quietly casts and renames whatever it is given.
    Here a Python list is built strictly with its declared dtype; a NumPy array or
    a Series must already have it (passing `dtype=` for an array costs twice as
    much as this check), except that Int64 epoch milliseconds become the schema's
    `Datetime` (a relabelling, no copy).
    """
    if len(columns) != len(schema):
        raise ValueError(f"{len(columns)} columns for a schema of {len(schema)}: {schema.names()}")
    series = []
    for (name, dtype), values in zip(schema.items(), columns, strict=True):
        if isinstance(values, pl.Series):
            column = values.alias(name)
        elif isinstance(values, list):
            column = pl.Series(name, values, dtype=dtype, strict=True)
        else:
            column = pl.Series(name, values)
        if column.dtype != dtype:
            if not (isinstance(dtype, pl.Datetime) and column.dtype == pl.Int64):
                raise TypeError(
                    f"column {name!r} was built as {column.dtype}, the schema says {dtype}"
                )
            column = column.cast(dtype, strict=True)
        series.append(column)
    return pl.DataFrame(series)


class RollingFrame(ABC, Generic[E]):
    """A fixed number of rows kept from a stream of events, readable as a Polars frame.

    Writes go to columnar storage (no Polars work per event). The frame is built
    only when read, cached until the next change, and every read returns its own
    copy. `get` may run on any thread while one thread writes: writes take no
    lock (a sequence counter, odd while a write is under way, costs less than a
    mutex on every event); a reader copies the storage out and keeps the copy
    only if no write began or ran meanwhile, else copies again, so it always
    sees whole writes and never holds up the writer. Writes from several threads
    at once must be serialised by the caller (the feed writes from one).

    Attributes:
        name: the buffer name (`klines_1m`, `order_book`, ...).
        schema: the frame's columns and types (from `sinks.schemas`).
        capacity: the most rows kept.
        version: increases by one on every write that changed the frame.
    """

    def __init__(self, name: str, schema: pl.Schema, capacity: int) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(
                f"{name}: capacity must be a positive number of rows, got {capacity!r}"
            )
        self.name = name
        self.schema = schema
        self.capacity = capacity
        self.version = 0
        # Odd while a write is under way (see `write` and `_read_storage`).
        self._seq = 0
        # Guards the cache only: readers on several threads; writers never take it.
        self._lock = threading.Lock()
        # Version ticks; frames are built only when a subscriber's delivery runs.
        self._ticks: Subject[int] = Subject()
        self._cache: pl.DataFrame | None = None
        self._cache_version = -1

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _apply(self, event: E) -> bool:
        """Change the storage for `event`; False if it was a no-op."""

    @abstractmethod
    def _snapshot(self) -> Any:
        """A cheap copy of the storage that no later write can change.

        May run while a write is under way on another thread: the copy is then
        discarded (and an exception it raises ignored) and taken again.
        """

    @abstractmethod
    def _build(self, snapshot: Any) -> pl.DataFrame:
        """The frame for a non-empty `_snapshot()` (outside the lock)."""

    @abstractmethod
    def __len__(self) -> int:
        """Rows currently kept."""

    # ------------------------------------------------------------------ public API
    def write(self, event: E) -> bool:
        """Fold one event in; True if the frame changed, False if the event was a no-op."""
        self._seq += 1
        try:
            if not self._apply(event):
                return False
            self.version = version = self.version + 1
        finally:
            self._seq += 1
        if self._ticks.observers:  # an idle frame pays nothing for publishing
            self._ticks.on_next(version)
        return True

    def get(self) -> pl.DataFrame:
        """The current frame, a copy the caller may change freely.

        Built at most once per version: repeated reads between writes reuse the
        cached frame and hand out clones of it (cheap: Polars shares the buffers
        and copies on write, so changing a clone never reaches the cache).
        """
        return self._versioned_get()[1]

    def frames(self, scheduler: abc.SchedulerBase | None = None) -> Observable[pl.DataFrame]:
        """Every subscriber gets the current frame, then the latest one after writes, conflated.

        A write only sends a version tick to subscribers (nothing at all when
        there are none); `operators.conflate` keeps the latest tick and
        schedules one delivery on `scheduler` if none is pending, and the frame
        is read when that delivery runs. So writes never build frames or wait
        for subscribers, a subscriber that falls behind skips straight to the
        newest frame, and it never gets the same version twice. Each delivery
        is the subscriber's own copy (see `get`).

        `scheduler` defaults to the one given to `subscribe`, else reactivex's
        `CurrentThreadScheduler`: delivery then happens right after the write on
        the writing thread, or, when the write runs inside an action already on
        that thread's trampoline (e.g. `reactivex.from_iterable` feeding the
        frame), once that action returns, so a whole batch of writes yields one
        frame. A live pipeline should pass its event-loop scheduler, so that slow
        subscribers run between socket reads rather than inside them.

        A frame that cannot be built (e.g. a level that is not a decimal
        number) ends the subscription with that error.
        """

        def subscribe(
            observer: abc.ObserverBase[pl.DataFrame],
            subscribe_scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            delivery = scheduler or subscribe_scheduler or CurrentThreadScheduler.singleton()
            delivered = -1

            def latest(_version: int) -> pl.DataFrame | None:
                nonlocal delivered
                if self.version == delivered:
                    return None  # a tick that raced the previous delivery
                version, frame = self._versioned_get()
                if version == delivered:
                    return None
                delivered = version
                return frame

            fresh = self._current_and_later_versions().pipe(
                conflate(delivery),
                ops.map(latest),
                ops.filter(lambda frame: frame is not None),
            )
            return cast(Observable[pl.DataFrame], fresh).subscribe(
                observer, scheduler=subscribe_scheduler
            )

        return Observable(subscribe)

    def _current_and_later_versions(self) -> Observable[int]:
        def subscribe(
            observer: abc.ObserverBase[int], _scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            # Listen first, then announce the current version: a write in
            # between is then seen twice (harmless), never missed.
            subscription = self._ticks.subscribe(observer)
            observer.on_next(self.version)
            return subscription

        return Observable(subscribe)

    # ------------------------------------------------------------------ internals
    def _read_storage(self) -> tuple[int, Any]:
        """The version and `_snapshot()` (None when empty), copied while no write ran."""
        while True:
            seq = self._seq
            if not seq & 1:
                version = self.version
                try:
                    snapshot = self._snapshot() if len(self) else None
                except Exception:
                    if self._seq == seq:
                        raise
                    continue  # storage changed under the copy: a torn read, retried
                if self._seq == seq:
                    return version, snapshot
            # A write is under way on another thread: let it finish.
            time.sleep(0)

    def _versioned_get(self) -> tuple[int, pl.DataFrame]:
        with self._lock:
            cache = self._cache
            if cache is not None and self._cache_version == self.version:
                return self._cache_version, cache.clone()
        version, snapshot = self._read_storage()
        frame = pl.DataFrame(schema=self.schema) if snapshot is None else self._build(snapshot)
        with self._lock:
            if version > self._cache_version:
                self._cache = frame
                self._cache_version = version
        return version, frame.clone()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, rows={len(self)}, "
            f"capacity={self.capacity}, version={self.version})"
        )
