"""`DataManager`: the user's original module, method for method, on the pipeline.

A drop-in replacement of the old `data_manager.DataManager` (change the import
to `from pipeline import DataManager`). Every method keeps its name, arguments
and defaults; underneath, one `Feed` folds every REST response and WebSocket
frame into the per-symbol frames, so buffers are bounded, deduplicated and
hold only final klines, as DESIGN.md describes.

Decisions the original left open:

- `exchange` selects the REST client: omitted (the manager's own venue and
  URLs), a preset name (`"binanceus"`, `"binance"`; `rest_url=` still applies),
  a `pipeline.venues.Venue` (used as given) or a `pipeline.rest.RestClient`
  (used as given and never closed here). Anything else, e.g. a ccxt exchange,
  raises `TypeError`. WebSocket streams always come from the manager's venue.
- `check_new_1h_kline`/`check_new_1d_kline` are long-running loops, as in the
  original: they fetch at once, then every `interval` seconds, and return
  (normally) when `close_websockets()` runs. Await them, or start them with
  `asyncio.create_task`: `close_websockets()` waits for them to end.
- `subscribe_*` check the symbol against exchangeInfo (once per symbol;
  `UnknownSymbolError`), then return once the stream is requested and a
  socket is open (at most `OPEN_TIMEOUT` seconds); the socket reconnects in
  the background. A periodic check of an unknown symbol raises too; its
  other failures are logged and the check goes on.
- WebSocket messages arriving while any preload runs are held and released
  after it, so history enters the frames before the live stream; dedupe and
  upsert handle the seam.
- For every symbol whose 1m klines are subscribed, the manager repairs what
  the stream missed, as the live job does (`pipeline.repair.KlineRepairer`,
  over the manager's own REST client): after a reconnect the 1m klines since
  the last final one kept, for a detected gap exactly its range. `counters`
  counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

import polars as pl
from reactivex import Observable, abc
from reactivex.scheduler.eventloop import AsyncIOScheduler

from operators.events import KIND_CLOSE, KIND_OPEN, Event, RawMessage
from pipeline.book_snapshots import SnapshotFetcher, answer_resyncs
from pipeline.config import FeedConfig
from pipeline.errors import PipelineError, UnknownSymbolError, UsageError
from pipeline.feed import Feed
from pipeline.live import BOOK_STREAM_SUFFIX, OPEN_TIMEOUT, POLL_LIMIT, STREAM_SUFFIXES
from pipeline.local_book import LocalBooks
from pipeline.repair import Holdback, KlineRepairer, RepairCounters
from pipeline.rest import RestClient
from pipeline.stats import RunStats
from pipeline.venues import BINANCE_US, Venue, get_venue
from pipeline.ws import WsSource
from sinks.schemas import SCHEMAS

__all__ = ["BUFFERS", "DataManager"]

log = logging.getLogger(__name__)

BUFFERS: Final = ("klines_1m", "klines_1h", "klines_1d", "order_book", "ticker", "book")
"""The buffers `get_buffer` and `frames` name (`book`: see `subscribe_local_book`)."""

_KLINE_1M, _DEPTH20, _TICKER = STREAM_SUFFIXES

Exchange = str | Venue | RestClient | None
"""What the `exchange` arguments take."""


class DataManager:
    """Market data for a trading bot: preload, poll and stream into bounded Polars frames.

    - `debug`: DEBUG logging of fetches, buffer updates and socket events
      (logger `pipeline`; a console handler is added when logging is not
      configured at all).
    - `buffer_sizes`: rows kept per buffer, e.g. `{"ticker": 5000}`.
    - `venue`: a preset name or a `Venue` (default Binance.US); `rest_url`,
      `ws_url` override its URLs (a fake exchange, a proxy).
    - `clock_ns`: the receive-time clock of the sources the manager makes (see
      `pipeline.live.LiveRun`; a sped-up fake market needs its own clock for the
      final-kline rule). A `RestClient` passed in keeps its own `clock_ns`.

    Call the async methods from one event loop; end with `close_websockets()`.
    """

    def __init__(
        self,
        debug: bool = False,
        *,
        buffer_sizes: Mapping[str, int] | None = None,
        venue: str | Venue = BINANCE_US,
        rest_url: str | None = None,
        ws_url: str | None = None,
        clock_ns: Callable[[], int] | None = None,
    ) -> None:
        self.debug = debug
        self.config = FeedConfig(capacities=dict(buffer_sizes or {}))
        base = get_venue(venue) if isinstance(venue, str) else venue
        if not isinstance(base, Venue):
            raise TypeError(
                f"venue must be a preset name or a pipeline.venues.Venue, not {venue!r}"
            )
        self._rest_url = rest_url
        self._ws_url = ws_url
        self.venue = base.with_urls(rest_url, ws_url)
        self._clock_ns = clock_ns or time.time_ns
        if debug:
            _enable_debug_logging()
        self._feed: Feed | None = None
        self.books = LocalBooks()
        """The local L2 books (`subscribe_local_book`), one per symbol."""
        self._snapshots: SnapshotFetcher | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._clients: dict[Venue, RestClient] = {}
        self._foreign: dict[int, abc.DisposableBase] = {}
        """Subscriptions to `RestClient`s the caller passed in (not ours to close)."""
        self._ws: WsSource | None = None
        self._opened = asyncio.Event()
        self._holdback = Holdback(lambda raw: self.feed.push(raw))
        self.counters = RepairCounters()
        """Reconnect backfills, gap repairs and their failed requests."""
        self._repairer: KlineRepairer | None = None
        self._streamed_1m: list[str] = []
        """Symbols whose 1m klines are subscribed: the ones the repairer backfills."""
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Future[None]] = set()
        self._checked: set[str] = set()
        """Symbols the venue's exchangeInfo lists (checked before subscribing)."""

    # ------------------------------------------------------------ wiring
    @property
    def feed(self) -> Feed:
        """The feed behind the buffers (made on first use, inside the event loop)."""
        if self._feed is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise UsageError(
                    "DataManager needs a running event loop here: call it from async code"
                ) from None
            self._scheduler = AsyncIOScheduler(loop)
            self._feed = Feed(self.config, self._scheduler, RunStats(), local_book=self.books)
        return self._feed

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise UsageError("this DataManager is closed (close_websockets ran); make a new one")

    def _on_rest(self, raw: RawMessage) -> None:
        self.feed.push(raw)

    def _on_ws(self, raw: RawMessage) -> None:
        if raw.kind == KIND_OPEN:
            self._opened.set()
            log.debug("socket %d open: %s", raw.conn, raw.url)
        elif raw.kind == KIND_CLOSE:
            log.debug("socket %d closed: %s", raw.conn, raw.data)
        self._holdback(raw)

    def _rest_for(self, exchange: Exchange) -> RestClient:
        self._check_open()
        if isinstance(exchange, RestClient):
            key = id(exchange)
            if key not in self._foreign:
                self._foreign[key] = exchange.messages.subscribe(self._on_rest)
            return exchange
        if exchange is None:
            venue = self.venue
        elif isinstance(exchange, str):
            venue = get_venue(exchange).with_urls(self._rest_url, self._ws_url)
        elif isinstance(exchange, Venue):
            venue = exchange
        else:
            raise TypeError(
                "exchange must be omitted, a venue name ('binanceus', 'binance'), a "
                f"pipeline.venues.Venue or a pipeline.rest.RestClient, not {exchange!r} "
                f"(a {type(exchange).__module__}.{type(exchange).__qualname__})"
            )
        client = self._clients.get(venue)
        if client is None:
            client = self._clients[venue] = RestClient(
                venue.rest_url, venue=venue, clock_ns=self._clock_ns
            )
            client.messages.subscribe(self._on_rest)
        return client

    def _source(self) -> WsSource:
        self._check_open()
        if self._ws is None:
            self._ws = WsSource(self.venue.ws_url, venue=self.venue, clock_ns=self._clock_ns)
            self._ws.messages.subscribe(self._on_ws)
        return self._ws

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ REST
    async def _preload(self, symbol: str, exchange: Exchange, interval: str, rows: int) -> None:
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise UsageError(f"{interval} preload length must be a positive integer, not {rows!r}")
        rest = self._rest_for(exchange)
        symbol = symbol.upper()
        self._holdback.hold()
        try:
            # One row more: the forming candle comes last and is not folded.
            task = self._spawn(rest.klines(symbol, interval, limit=rows + 1))
            await _settled(task)
            if task.cancelled():
                return  # close_websockets ran meanwhile
            fetched = task.result()
        finally:
            self._holdback.release()
        log.debug("preloaded %d %s klines of %s", len(fetched), interval, symbol)

    async def preload_1m_klines(
        self, symbol: str, exchange: Exchange = None, minutes: int = 60
    ) -> None:
        """Fetch the last `minutes` final 1m klines into `klines_1m`."""
        await self._preload(symbol, exchange, "1m", minutes)

    async def preload_1h_klines(
        self, symbol: str, exchange: Exchange = None, hours: int = 72
    ) -> None:
        """Fetch the last `hours` final 1h klines into `klines_1h`."""
        await self._preload(symbol, exchange, "1h", hours)

    async def preload_1d_klines(
        self, symbol: str, exchange: Exchange = None, days: int = 60
    ) -> None:
        """Fetch the last `days` final 1d klines into `klines_1d`."""
        await self._preload(symbol, exchange, "1d", days)

    async def _check(self, symbol: str, exchange: Exchange, interval: str, period: float) -> None:
        if not period > 0:
            raise UsageError(f"check interval must be a positive number of seconds, not {period!r}")
        rest = self._rest_for(exchange)
        symbol = symbol.upper()
        # Marks the loop's end, not its task's: an awaited check runs in the
        # caller's task, which close_websockets must not wait for.
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loops.add(ended)
        try:
            while not self._closed.is_set():
                task = self._spawn(rest.klines(symbol, interval, limit=POLL_LIMIT))
                await _settled(task)
                if task.cancelled():
                    return
                error = task.exception()
                if isinstance(error, UnknownSymbolError):
                    raise error
                if isinstance(error, PipelineError):
                    log.warning("check of %s %s klines failed: %s", symbol, interval, error)
                elif error is not None:
                    raise error
                else:
                    log.debug("checked %s %s klines", symbol, interval)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period):
                        await self._closed.wait()
        finally:
            self._loops.discard(ended)
            ended.set_result(None)

    async def check_new_1h_kline(
        self, symbol: str, exchange: Exchange = None, interval: float = 60
    ) -> None:
        """Fetch the newest 1h klines now and every `interval` seconds, until closed."""
        await self._check(symbol, exchange, "1h", interval)

    async def check_new_1d_kline(
        self, symbol: str, exchange: Exchange = None, interval: float = 3600
    ) -> None:
        """Fetch the newest 1d klines now and every `interval` seconds, until closed."""
        await self._check(symbol, exchange, "1d", interval)

    # ------------------------------------------------------------ WebSocket
    async def _subscribe(self, symbol: str, suffix: str) -> None:
        ws = self._source()
        symbol = symbol.upper()
        if symbol not in self._checked:
            # A stream of an unknown symbol would just stay silent: refuse it now.
            await self._rest_for(None).check_symbols([symbol])
            self._checked.add(symbol)
        self.feed.add_symbol(symbol)
        if suffix == _KLINE_1M:
            self._repair_1m(symbol)
        stream = symbol.lower() + suffix
        await ws.subscribe([stream])
        await ws.start()
        log.debug("subscribed to %s", stream)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OPEN_TIMEOUT):
                await self._opened.wait()

    def _repair_1m(self, symbol: str) -> None:
        if symbol not in self._streamed_1m:
            self._streamed_1m.append(symbol)
        if self._repairer is None:
            # The manager's own client: the streams come from its venue too.
            self._repairer = KlineRepairer(
                self._rest_for(None), self.feed, self.config, self.counters, self._spawn,
                symbols=lambda: self._streamed_1m, now_ms=self._now_ms,
            )  # fmt: skip
            self._repairer.attach()

    def _now_ms(self) -> int:
        return self._clock_ns() // 1_000_000

    async def subscribe_1m_klines(self, symbol: str, exchange: Exchange = None) -> None:
        """Stream 1m klines into `klines_1m` (finals only).

        `exchange` is checked like elsewhere; the stream comes from the manager's venue.
        """
        if exchange is not None:
            self._rest_for(exchange)
        await self._subscribe(symbol, _KLINE_1M)

    async def subscribe_order_book(self, symbol: str) -> None:
        """Stream the 20-level book (every 100 ms) into `order_book`."""
        await self._subscribe(symbol, _DEPTH20)

    async def subscribe_ticker(self, symbol: str) -> None:
        """Stream the 24h ticker into `ticker`."""
        await self._subscribe(symbol, _TICKER)

    async def subscribe_local_book(self, symbol: str) -> None:
        """Keep the full L2 book of `symbol` in `book` (beyond the original's buffers).

        Streams `<s>@depth@100ms` diffs and fetches a REST depth snapshot
        (`limit=1000`) whenever the book asks for one (its first diff, a gap, a
        reconnect), one at a time per symbol and spaced out. While it resyncs,
        `get_buffer("book")` keeps the last in-sync book and
        `books.get(symbol).stale` is True.
        """
        if self._snapshots is None:
            self._snapshots = answer_resyncs(self.books, lambda: self._rest_for(None), self._spawn)
        await self._subscribe(symbol, BOOK_STREAM_SUFFIX)

    # ------------------------------------------------------------ reading
    def _symbol(self, symbol: str | None) -> str:
        if symbol is not None:
            return symbol.upper()
        symbols = self._feed.symbols if self._feed is not None else []
        if not symbols:
            raise UsageError("no symbol yet: preload or subscribe one, or pass symbol=")
        return symbols[0]

    @staticmethod
    def _check_buffer(buffer_type: str) -> None:
        if buffer_type not in BUFFERS:
            raise UsageError(
                f"unknown buffer {buffer_type!r}: expected one of {', '.join(BUFFERS)}"
            )

    def get_buffer(self, buffer_type: str, symbol: str | None = None) -> pl.DataFrame:
        """A copy of one buffer of `symbol` (default: the first symbol used).

        Before any data (or for a symbol never used) it is an empty frame with
        the buffer's schema.
        """
        self._check_buffer(buffer_type)
        feed = self._feed
        if feed is None or (symbol is None and not feed.symbols):
            return pl.DataFrame(schema=SCHEMAS[buffer_type])
        name = self._symbol(symbol)
        if name not in feed.symbols:
            return pl.DataFrame(schema=SCHEMAS[buffer_type])
        return feed.frames(name)[buffer_type].get()

    def frames(self, buffer_type: str, symbol: str | None = None) -> Observable[pl.DataFrame]:
        """The buffer now, then after changes, conflated (delivered on the event loop)."""
        self._check_buffer(buffer_type)
        feed = self.feed
        name = self._symbol(symbol)
        feed.add_symbol(name)
        return feed.frames(name)[buffer_type].frames(self._scheduler)

    def events(self, symbol: str | None = None) -> Observable[Event]:
        """Events as they change a buffer (final klines, snapshots, tickers); None: all symbols."""
        return self.feed.events(symbol)

    # ------------------------------------------------------------ closing
    async def close_websockets(self) -> None:
        """End everything: periodic checks, fetches, sockets and REST sessions (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._repairer is not None:
            self._repairer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._loops:
            # The periodic checks return on their own once they see the close.
            await asyncio.wait(list(self._loops))
        if self._ws is not None:
            await self._ws.close()
        for client in self._clients.values():
            await client.close()
        for subscription in self._foreign.values():
            subscription.dispose()
        self._foreign.clear()
        if self._feed is not None:
            self._holdback.release(everything=True)
            self._feed.complete()
        log.debug("data manager closed")


async def _settled(task: asyncio.Task[Any]) -> None:
    """Wait for `task` to end in any way; cancelling the waiter cancels the task too."""
    # Not `await task`: close_websockets cancelling the fetch must not look
    # like the caller itself was cancelled.
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        task.cancel()
        raise


def _enable_debug_logging() -> None:
    logger = logging.getLogger("pipeline")
    logger.setLevel(logging.DEBUG)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
