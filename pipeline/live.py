"""The live main job: preload over REST, keep WebSocket streams flowing, repair what was missed.

`LiveRun` wires a `RestClient` and a `WsSource` into one `Feed`:

1. The symbols are checked against exchangeInfo first: an unknown one raises
   `UnknownSymbolError` before anything is subscribed.
2. The WebSocket streams (`<s>@kline_1m`, `<s>@depth20@100ms`, `<s>@ticker`)
   are opened and their messages held while 1m/1h/1d klines are preloaded over
   REST (one row more than each frame keeps: the forming candle is dropped).
   The preload enters the feed first, then the held messages: the feed's dedupe
   and upsert make the seam neither miss nor double a kline.
3. 1h klines are polled every 60 s and 1d every 3600 s, symbols staggered.
4. After every reconnect (a socket opened after one closed) the 1m klines since
   the last final one kept are fetched; every `Gap` the feed reports is fetched
   exactly (both by `pipeline.repair.KlineRepairer`, shared with `DataManager`).

Every REST response reaches the feed as a `RawMessage` through
`RestClient.messages`, like a WebSocket frame, so a capture replays it all.

Persistence (both optional, both flushed every `flush_interval` seconds and
closed when the run ends):

- `capture`: a `CaptureWriter` records every message the feed is given, in the
  order it is given them (the WebSocket messages held during the preload after
  the preload's responses, as the feed saw them), so `pipeline.replay` of the
  capture folds the same frames.
- `store`: a `ParquetStore`. Before the preload the newest stored klines of each
  symbol and interval are written into the frames, and the preload asks REST only
  for the candles since the newest stored one (`startTime`). During the run every
  kline the feed keeps is appended (collected, then written once per flush, so a
  backfill of many rows is one file, not one per row); `store_books` adds the
  order-book snapshots and tickers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import polars as pl
from reactivex.scheduler.eventloop import AsyncIOScheduler

from operators import interval_ms
from operators.events import (
    KIND_OPEN,
    BookSnapshot,
    Event,
    Kline,
    RawMessage,
    Ticker,
)
from pipeline.book_snapshots import SnapshotFetcher, answer_resyncs
from pipeline.config import FeedConfig
from pipeline.errors import UsageError
from pipeline.fault_summary import faults_line
from pipeline.feed import KLINE_BUFFERS, Feed
from pipeline.local_book import LocalBooks
from pipeline.repair import Holdback, KlineRepairer, guarded
from pipeline.rest import RestClient
from pipeline.stats import RunStats
from pipeline.venues import BINANCE_US, Venue
from pipeline.ws import WsSource

if TYPE_CHECKING:
    from sinks.capture_writer import CaptureWriter
    from sinks.store import ParquetStore

__all__ = ["BOOK_STREAM_SUFFIX", "LiveCounters", "LiveRun", "streams_for"]

log = logging.getLogger(__name__)

STREAM_SUFFIXES: Final = ("@kline_1m", "@depth20@100ms", "@ticker")
BOOK_STREAM_SUFFIX: Final = "@depth@100ms"
"""The diff-depth stream the local book (`book=True`) adds for each symbol."""
POLL_PERIODS: Final = {"1h": 60.0, "1d": 3600.0}
"""Seconds between REST checks of the intervals the WebSocket does not carry."""
POLL_LIMIT: Final = 3
"""Rows a periodic check asks for: the forming candle, the one just closed, one spare."""
OPEN_TIMEOUT: Final = 10.0
"""Seconds to wait for the sockets before preloading anyway (the repairs cover the seam)."""
FLUSH_INTERVAL: Final = 1.0
"""Seconds between flushes of the capture and writes of new rows to the store."""
STORE_KEYS: Final = {"order_book": "update_id", "ticker": "event_id"}
"""The column whose newest stored value separates a book buffer's new rows from stored ones."""


def streams_for(symbols: Sequence[str], *, book: bool = False) -> list[str]:
    """The WebSocket streams the live job subscribes for `symbols` (`book`: diff depth too)."""
    suffixes = (*STREAM_SUFFIXES, BOOK_STREAM_SUFFIX) if book else STREAM_SUFFIXES
    return [f"{s.lower()}{suffix}" for s in symbols for suffix in suffixes]


@dataclass
class LiveCounters:
    """What the live job did beyond the sources' own counters (for the summary)."""

    preload_requests: int = 0
    polls: int = 0
    reconnect_backfills: int = 0
    gaps_repaired: int = 0
    """Gaps whose range was fetched over REST."""
    failed_requests: int = 0
    """Polls, backfills and repairs that raised (logged; the run goes on)."""
    store_loaded: int = 0
    """Klines loaded from the store into the frames at the start."""
    store_rows: int = 0
    """Rows appended to the store during the run."""
    store_failures: int = 0
    """Store writes that raised (logged; the run goes on, the rows are retried)."""


class LiveRun:
    """The main job for `symbols` on one venue, until `stop()` or `duration` seconds.

    `rest_url`/`ws_url` override the venue's (a fake exchange). `deadline` is a
    `time.monotonic()` value (the CLI passes process start + `--duration`).
    `clock_ns` is the receive-time clock both sources stamp messages with
    (default: the wall clock): a sped-up fake market needs receive times on its
    own clock, or the REST final-kline rule would compare market close times
    with wall time.
    `rest_options`/`ws_options` are passed to `RestClient`/`WsSource`.
    `capture`, `store` and `store_books`: see the module doc; the run flushes and
    closes both when it ends, whatever ends it.
    `book`: also keep each symbol's local L2 book (the `book` buffer, in
    `books`): `<s>@depth@100ms` is subscribed too, and a REST depth snapshot is
    fetched whenever a book asks for one (its first diff, a gap, a reconnect),
    at most one in flight per symbol and spaced out (`pipeline.book_snapshots`).
    """

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        venue: Venue = BINANCE_US,
        rest_url: str | None = None,
        ws_url: str | None = None,
        config: FeedConfig | None = None,
        deadline: float | None = None,
        clock_ns: Callable[[], int] | None = None,
        poll_periods: dict[str, float] | None = None,
        rest_options: dict[str, object] | None = None,
        ws_options: dict[str, object] | None = None,
        capture: CaptureWriter | None = None,
        store: ParquetStore | None = None,
        store_books: bool = False,
        flush_interval: float = FLUSH_INTERVAL,
        book: bool = False,
    ) -> None:
        if not symbols:
            raise UsageError("no symbol given: name at least one, e.g. --symbol HBARUSDT")
        self.symbols = list(dict.fromkeys(s.upper() for s in symbols))
        self.venue = venue.with_urls(rest_url, ws_url)
        self.config = config or FeedConfig()
        self.deadline = deadline
        self._clock_ns = clock_ns
        self._poll_periods = dict(POLL_PERIODS if poll_periods is None else poll_periods)
        self._rest_options = rest_options or {}
        self._ws_options = ws_options or {}
        self.counters = LiveCounters()
        self.feed: Feed | None = None
        self.rest: RestClient | None = None
        self.ws: WsSource | None = None
        self.ready = asyncio.Event()
        """Set once the preload is in the feed and the held messages are released."""
        self.phase = "starting"
        """For progress displays: `starting`, `checking symbols`, `opening sockets`,
        `preloading`, `running`, `stopping`."""
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._holdback: Holdback | None = None
        """Holds the WebSocket messages until the preload is in the feed."""
        self.repairer: KlineRepairer | None = None
        self._opened = asyncio.Event()
        self._closing = False
        self.capture = capture
        self.store = store
        self._store_books = store_books
        self._flush_interval = flush_interval
        self.books: LocalBooks | None = LocalBooks() if book else None
        """The local books (`book=True`): the `book` buffer of each symbol."""
        self.snapshots: SnapshotFetcher | None = None
        self._dirty: dict[tuple[str, str], int] = {}
        """(symbol, buffer) -> the oldest open time kept since the last store write."""
        self._stored_keys: dict[tuple[str, str], int] = {}
        """(symbol, book buffer) -> the newest key value stored (see STORE_KEYS)."""

    # ------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the run to end (safe from a signal handler)."""
        self._stop.set()

    async def run(self) -> Feed:
        """Check, subscribe, preload, then keep the frames live until stopped; returns the feed.

        Sockets and the REST session are closed on the way out, whatever happens.
        """
        loop = asyncio.get_running_loop()
        feed = self.feed = Feed(
            self.config, AsyncIOScheduler(loop), RunStats(), local_book=self.books
        )
        clock_ns = self._clock_ns or time.time_ns
        rest = self.rest = RestClient(
            self.venue.rest_url,
            venue=self.venue,
            clock_ns=clock_ns,
            **self._rest_options,  # type: ignore[arg-type]
        )
        ws = self.ws = WsSource(
            self.venue.ws_url,
            streams_for(self.symbols, book=self.books is not None),
            venue=self.venue,
            clock_ns=clock_ns,
            **self._ws_options,  # type: ignore[arg-type]
        )
        self._push = self._recorded(feed.push)
        self._holdback = Holdback(self._push, held=True)
        rest.messages.subscribe(self._push)
        ws.messages.subscribe(self._on_ws)
        repairer = self.repairer = KlineRepairer(
            rest, feed, self.config, self.counters, self._spawn,
            symbols=lambda: self.symbols, now_ms=self._now_ms,
        )  # fmt: skip
        repairer.attach()
        if self.books is not None:
            # Snapshots go out only when a book asks (its first diff, a gap, a
            # reconnect), spaced out per symbol; the answers enter the feed as messages.
            self.snapshots = answer_resyncs(self.books, rest, self._spawn)
        if self.store is not None:
            feed.events().subscribe(self._on_event)
        work = asyncio.ensure_future(self._work(feed, rest, ws))
        stop = asyncio.ensure_future(self._stop.wait())
        flusher = asyncio.ensure_future(self._flush_periodically())
        try:
            # A stop during the start-up (a venue that does not answer) ends it too.
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            else:
                work.result()
        finally:
            for task in (work, stop, flusher):
                task.cancel()
            await asyncio.gather(work, stop, flusher, return_exceptions=True)
            self._closing = True
            self._enter("stopping")
            repairer.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await ws.close()
            await rest.close()
            self._release()
            feed.complete()
            self._close_sinks()
        return feed

    def _enter(self, phase: str) -> None:
        self.phase = phase
        log.debug("live run: %s", phase)

    async def _work(self, feed: Feed, rest: RestClient, ws: WsSource) -> None:
        self._enter("checking symbols")
        await rest.check_symbols(self.symbols)
        for symbol in self.symbols:
            feed.add_symbol(symbol)
        stored = self._load_store(feed)
        self._enter("opening sockets")
        await ws.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OPEN_TIMEOUT):
                await self._opened.wait()
        self._enter("preloading")
        await self._preload(stored)
        self._release()
        self.ready.set()
        self._enter("running")
        self._start_polls()
        await self._wait_until_done()

    async def _wait_until_done(self) -> None:
        if self.deadline is None:
            await self._stop.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, self.deadline - time.monotonic())):
                await self._stop.wait()

    # ------------------------------------------------------------ messages
    def _recorded(self, push: Callable[[RawMessage], None]) -> Callable[[RawMessage], None]:
        capture = self.capture
        if capture is None:
            return push
        write = capture.on_next

        def recorded(raw: RawMessage) -> None:
            # Recorded as the feed is given it, so a replay folds the same sequence.
            write(raw)
            push(raw)

        return recorded

    def _on_ws(self, raw: RawMessage) -> None:
        if raw.kind == KIND_OPEN:
            self._opened.set()
        assert self._holdback is not None
        self._holdback(raw)

    def _release(self) -> None:
        if self._holdback is not None:
            self._holdback.release(everything=True)

    # ------------------------------------------------------------ persistence
    def _load_store(self, feed: Feed) -> dict[tuple[str, str], int]:
        """Write the newest stored klines into the frames; (symbol, interval) -> newest open ms."""
        store = self.store
        newest: dict[tuple[str, str], int] = {}
        if store is None:
            return newest
        now_ms = self._now_ms()
        for symbol in self.symbols:
            frames = feed.frames(symbol)
            for interval, buffer in KLINE_BUFFERS.items():
                rows = store.latest(symbol, buffer, self.config.capacity(buffer))
                if rows.is_empty():
                    continue
                step = interval_ms(interval)
                write = frames[buffer].write
                columns = rows.with_columns(pl.col("timestamp").dt.epoch("ms"))
                # A candle still open now cannot have been stored final: a store written
                # against another clock (a sped-up demo market). Such rows are left out.
                closed = columns.filter(pl.col("timestamp") + step <= now_ms)
                if closed.height < columns.height:
                    log.warning(
                        "store: %d %s rows of %s are not closed yet by this clock; not loaded",
                        columns.height - closed.height, buffer, symbol,
                    )  # fmt: skip
                    columns = closed
                    if columns.is_empty():
                        continue
                for t, o, h, lo, c, v in columns.iter_rows():
                    end = t + step - 1
                    write(Kline(symbol, interval, t, end, o, h, lo, c, v, True, 0, "store"))
                last = columns["timestamp"].max()
                assert isinstance(last, int)
                newest[symbol, interval] = last
                self.counters.store_loaded += columns.height
                log.info("loaded %d %s rows of %s from the store", columns.height, buffer, symbol)
        return newest

    def _now_ms(self) -> int:
        return (self._clock_ns or time.time_ns)() // 1_000_000

    def _on_event(self, event: Event) -> None:
        cls = type(event)
        if cls is Kline:
            assert isinstance(event, Kline)
            buffer = KLINE_BUFFERS.get(event.interval)
            if buffer is not None:
                key = (event.symbol, buffer)
                known = self._dirty.get(key)
                if known is None or event.open_time < known:
                    self._dirty[key] = event.open_time
        elif self._store_books and (cls is BookSnapshot or cls is Ticker):
            assert isinstance(event, BookSnapshot | Ticker)
            # The rows are picked from the frame by key at the next write.
            self._dirty.setdefault((event.symbol, "ticker" if cls is Ticker else "order_book"), 0)

    def _write_store(self) -> None:
        store, feed = self.store, self.feed
        if store is None or feed is None or not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        for (symbol, buffer), oldest in dirty.items():
            frame = feed.frames(symbol)[buffer].get()
            key = STORE_KEYS.get(buffer)
            if key is None:
                rows = frame.filter(pl.col("timestamp").dt.epoch("ms") >= oldest)
            else:
                after = self._stored_keys.get((symbol, buffer))
                rows = frame if after is None else frame.filter(pl.col(key) > after)
            if rows.is_empty():
                continue
            try:
                store.append(symbol, buffer, rows)
            except (OSError, pl.exceptions.PolarsError) as exc:
                self.counters.store_failures += 1
                log.warning("store write of %s %s failed: %s", symbol, buffer, exc)
                # Tried again at the next write (keys make a repeat harmless).
                previous = self._dirty.get((symbol, buffer))
                self._dirty[symbol, buffer] = oldest if previous is None else min(previous, oldest)
                continue
            if key is not None:
                newest = rows[key].max()
                assert isinstance(newest, int)
                self._stored_keys[symbol, buffer] = newest
            self.counters.store_rows += rows.height

    def _flush(self) -> None:
        if self.capture is not None:
            self.capture.flush()
        self._write_store()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                self._flush()
            except OSError as exc:
                # A full disk: the run goes on, the capture's next flush tries again.
                log.warning("flushing the capture failed: %s", exc)

    def _close_sinks(self) -> None:
        capture, store = self.capture, self.store
        try:
            if capture is not None:
                capture.close()
        finally:
            if store is not None:
                try:
                    self._write_store()
                finally:
                    store.close()

    # ------------------------------------------------------------ REST work
    async def _preload(self, stored: dict[tuple[str, str], int]) -> None:
        rest = self.rest
        assert rest is not None
        now_ms = self._now_ms()
        jobs = []
        for symbol in self.symbols:
            for interval, buffer in KLINE_BUFFERS.items():
                limit = self.config.capacity(buffer) + 1
                last = stored.get((symbol, interval))
                if last is None:
                    jobs.append(rest.klines(symbol, interval, limit=limit))
                    continue
                # Candles opened since the newest stored one, the forming one included,
                # plus one spare in case this clock is behind the exchange's.
                missing = max(0, (now_ms - last) // interval_ms(interval)) + 1
                if missing >= limit:  # the store is too old to help: a full preload
                    jobs.append(rest.klines(symbol, interval, limit=limit))
                else:
                    jobs.append(rest.klines(symbol, interval, limit=missing, start_time=last + 1))
        self.counters.preload_requests += len(jobs)
        await asyncio.gather(*jobs)

    def _start_polls(self) -> None:
        n = len(self.symbols)
        for interval, period in self._poll_periods.items():
            for i, symbol in enumerate(self.symbols):
                # Staggered so the symbols' requests spread over the period.
                self._spawn(self._poll(symbol, interval, period, period * i / n))

    async def _poll(self, symbol: str, interval: str, period: float, offset: float) -> None:
        rest = self.rest
        assert rest is not None
        await asyncio.sleep(period + offset)
        while True:
            self.counters.polls += 1
            await guarded(rest.klines(symbol, interval, limit=POLL_LIMIT), "poll", self.counters)
            await asyncio.sleep(period)

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        if self._closing:
            # A gap or reconnect seen while shutting down: no session left to fetch with.
            work.close()
            return
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ summary
    def summary(self) -> str:
        """The feed's summary, the REST, WebSocket and repair counters, and a `faults:` line."""
        lines = []
        if self.feed is not None:
            lines.append(self.feed.stats.render())
        if self.rest is not None:
            s = self.rest.stats
            lines.append(
                f"rest: {s.requests} requests, {s.responses} responses, {s.retries} retries, "
                f"{s.rate_limited} rate limited (429), {s.banned} banned (418), "
                f"{s.server_errors} server errors, {s.timeouts} timeouts, "
                f"max weight {s.max_used_weight}"
            )
        if self.ws is not None:
            w = self.ws.stats
            lines.append(
                f"ws: {w.connects} connects, {w.reconnects} reconnects, "
                f"{w.disconnects} disconnects, {w.silence_timeouts} silence timeouts, "
                f"{w.frames} frames"
            )
        c = self.counters
        lines.append(
            f"live: {c.preload_requests} preload requests, {c.polls} polls, "
            f"{c.reconnect_backfills} reconnect backfills, {c.gaps_repaired} gaps repaired, "
            f"{c.failed_requests} failed requests"
        )
        if self.store is not None:
            lines.append(
                f"store: {c.store_loaded} klines loaded, {c.store_rows} rows written, "
                f"{c.store_failures} failed writes"
            )
        if self.capture is not None:
            lines.append(f"capture: {self.capture.messages} messages to {self.capture.paths[-1]}")
        if self.books is not None:
            lines.extend(book.describe() for book in self.books)
        if self.snapshots is not None:
            lines.append(self.snapshots.render())
        lines.append(
            faults_line(
                self.symbols,
                self.counters,
                self.feed.stats if self.feed is not None else None,
                self.rest.stats if self.rest is not None else None,
                self.ws.stats if self.ws is not None else None,
            )
        )
        return "\n".join(lines)
