"""The local L2 book of each symbol, plugged into a `Feed` (the `book` buffer).

`LocalBooks` is the feed's `local_book=` factory: for every symbol the feed
sees it makes a `SymbolBook`, which runs `operators.local_book` over the depth
traffic the feed hands it and folds the result into a `sinks.BookFrame`. Each
symbol has its own operator state: a gap or a bad diff resyncs that symbol
only, and its frame keeps serving the last in-sync book, marked stale, until
the new snapshot is applied.

The book asks for REST depth snapshots by emitting `BookResync`; `LocalBooks`
gathers them in `resyncs`, the one place the book's owner listens: a live run
answers each with `GET /api/v3/depth` (see `pipeline.book_snapshots`), whose
response enters the feed like any other message, so a capture records it and
a replay answers the book from the capture. A replay has nobody to ask:
whatever snapshots the capture holds are what the book gets.

Bounded: the operator keeps at most `max_buffered` diffs while out of sync,
and the frame at most `depth` levels per side.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Final

import polars as pl
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

from operators import BookEvent, BookResync, BookUpdate, local_book
from operators.events import BookSnapshot, DepthDiff, Disconnected
from sinks.book_frame import DEFAULT_BOOK_DEPTH, BookFrame

__all__ = ["BOOK_BUFFER", "DEFAULT_MAX_BUFFERED", "LocalBooks", "SymbolBook"]

log = logging.getLogger(__name__)

BOOK_BUFFER: Final = "book"
"""The buffer name of the local book's frame."""
DEFAULT_MAX_BUFFERED: Final = 1000
"""Diffs kept per symbol while out of sync: 100 s of `@depth@100ms`."""

BookInput = DepthDiff | BookSnapshot | Disconnected


def _ignore(_: object) -> None:
    return None


class SymbolBook:
    """One symbol's local book: the `LocalBook` a `Feed` calls for its `book` buffer.

    `push` takes the symbol's `DepthDiff`s and REST `BookSnapshot`s and every
    `Disconnected`; `frame` is the book as a `BookFrame`. A `BookResync` goes to
    `on_resync` (`LocalBooks` passes its own collector).
    """

    def __init__(
        self,
        symbol: str,
        *,
        depth: int = DEFAULT_BOOK_DEPTH,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        on_resync: Callable[[BookResync], None] | None = None,
    ) -> None:
        self.symbol = symbol.upper()
        self.frame = BookFrame(self.symbol, depth)
        self.diffs = 0
        """Diffs pushed so far: 0 means the input never carried this symbol's diff stream."""
        self.snapshots = 0
        """REST snapshots pushed so far (answers to requests, late ones included)."""
        self.resyncs: Counter[str] = Counter()
        """Snapshot requests by `BookResync.reason`."""
        self.syncs = 0
        """Times the book (re)synced from a snapshot."""
        self.wants_snapshot = False
        """True from a request until the book is in sync again."""
        self._on_resync = on_resync or _ignore
        self._inlet: Callable[[BookInput], None] = _ignore

        def subscribe(
            observer: abc.ObserverBase[BookInput], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self._inlet = observer.on_next
            return Disposable(self._detach)

        source: Observable[BookInput] = Observable(subscribe)
        source.pipe(local_book(self.symbol, max_buffered)).subscribe(self._on_book)

    def _detach(self) -> None:
        self._inlet = _ignore

    @property
    def stale(self) -> bool:
        """True while the frame shows an out-of-sync book (or none yet)."""
        return self.frame.stale

    @property
    def update_id(self) -> int:
        """The last applied diff's `u` (0 if the book never synced)."""
        return self.frame.update_id

    def push(self, event: DepthDiff | BookSnapshot | Disconnected) -> bool:
        """Fold one event in; True if the frame changed (the feed counts it as kept).

        A diff buffered while the book waits for a snapshot changes nothing yet
        (counted as unchanged); it is applied when the snapshot arrives.
        """
        cls = type(event)
        if cls is DepthDiff:
            self.diffs += 1
        elif cls is BookSnapshot:
            self.snapshots += 1
        # The frame's version counts its changes, and stays right if a request
        # is answered synchronously from inside this push.
        before = self.frame.version
        self._inlet(event)
        return self.frame.version != before

    def _on_book(self, event: BookEvent) -> None:
        if type(event) is BookResync:
            self.resyncs[event.reason] += 1
            self.wants_snapshot = True
            log.info("%s book needs a snapshot (%s)", self.symbol, event.reason)
            self._on_resync(event)
            return
        assert isinstance(event, BookUpdate)
        if event.reset:
            self.wants_snapshot = False
            self.syncs += 1
            log.debug("%s book in sync at update %d", self.symbol, event.update_id)
        elif not event.synced:
            log.info("%s book out of sync after update %d", self.symbol, event.update_id)
        self.frame.write(event)

    def describe(self) -> str:
        """One line for a run's summary."""
        if self.frame.update_id == 0:
            state = "never in sync"
        elif self.stale:
            state = f"stale since update {self.frame.update_id}"
        else:
            state = f"in sync at update {self.frame.update_id}"
        asked = ", ".join(f"{reason} {n}" for reason, n in self.resyncs.items()) or "none"
        return (
            f"book {self.symbol}: {state}, {len(self.frame)} levels; {self.diffs} diffs, "
            f"{self.snapshots} snapshots, {self.syncs} syncs; snapshot requests: {asked}"
        )


class LocalBooks:
    """The `local_book=` factory of a `Feed`: one `SymbolBook` per symbol, one request stream.

        books = LocalBooks()
        feed = Feed(config, scheduler, stats, local_book=books)
        books.resyncs.subscribe(...)  # fetch a REST depth snapshot for request.symbol

    `depth`: levels per side in each frame; `max_buffered`: diffs kept per
    symbol while out of sync.
    """

    def __init__(
        self, *, depth: int = DEFAULT_BOOK_DEPTH, max_buffered: int = DEFAULT_MAX_BUFFERED
    ) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"book depth must be a positive number of levels, not {depth!r}")
        if isinstance(max_buffered, bool) or not isinstance(max_buffered, int) or max_buffered < 1:
            raise ValueError(
                f"book max_buffered must be a positive number of diffs, not {max_buffered!r}"
            )
        self.depth = depth
        self.max_buffered = max_buffered
        self._books: dict[str, SymbolBook] = {}
        self._resyncs: Subject[BookResync] = Subject()

    def __call__(self, symbol: str, scheduler: abc.SchedulerBase | None = None) -> SymbolBook:
        """Make (or return) `symbol`'s book; the scheduler is unused (no timers)."""
        symbol = symbol.upper()
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = SymbolBook(
                symbol,
                depth=self.depth,
                max_buffered=self.max_buffered,
                on_resync=self._resyncs.on_next,
            )
        return book

    @property
    def resyncs(self) -> Observable[BookResync]:
        """Every book's snapshot requests, as they happen (hot)."""
        return self._resyncs

    def get(self, symbol: str) -> SymbolBook | None:
        """`symbol`'s book, if the feed made one."""
        return self._books.get(symbol.upper())

    def wants_snapshot(self, symbol: str) -> bool:
        """Whether `symbol`'s book asked for a snapshot and is not in sync yet."""
        book = self._books.get(symbol.upper())
        return book is not None and book.wants_snapshot

    def __iter__(self) -> Iterator[SymbolBook]:
        return iter(self._books.values())

    def used(self, symbol: str) -> bool:
        """Whether `symbol`'s book ever saw a diff (a capture without diff depth: never)."""
        book = self._books.get(symbol.upper())
        return book is not None and book.diffs > 0

    def drop_unused(
        self, frames: Mapping[str, Mapping[str, pl.DataFrame]]
    ) -> dict[str, dict[str, pl.DataFrame]]:
        """`frames` (a `Feed.snapshot()`) without the `book` of symbols that never saw a diff.

        So a dump has a `book.parquet` exactly where the input carried a diff-depth stream.
        """
        return {
            symbol: {
                buffer: frame
                for buffer, frame in buffers.items()
                if buffer != BOOK_BUFFER or self.used(symbol)
            }
            for symbol, buffers in frames.items()
        }

    def render(self) -> str:
        """One line per book that saw diffs (empty when none did)."""
        return "\n".join(book.describe() for book in self._books.values() if book.diffs)
