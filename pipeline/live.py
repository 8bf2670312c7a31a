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
   exactly.

Every REST response reaches the feed as a `RawMessage` through
`RestClient.messages`, like a WebSocket frame, so a capture replays it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Final

from reactivex.scheduler.eventloop import AsyncIOScheduler

from operators import interval_ms
from operators.events import KIND_OPEN, Connected, Disconnected, Gap, RawMessage
from pipeline.config import FeedConfig
from pipeline.errors import PipelineError, UsageError
from pipeline.feed import KLINE_BUFFERS, Feed
from pipeline.rest import MAX_KLINES_PER_REQUEST, RestClient
from pipeline.stats import RunStats
from pipeline.venues import BINANCE_US, Venue
from pipeline.ws import WsSource

__all__ = ["LiveCounters", "LiveRun", "streams_for"]

log = logging.getLogger(__name__)

STREAM_SUFFIXES: Final = ("@kline_1m", "@depth20@100ms", "@ticker")
POLL_PERIODS: Final = {"1h": 60.0, "1d": 3600.0}
"""Seconds between REST checks of the intervals the WebSocket does not carry."""
POLL_LIMIT: Final = 3
"""Rows a periodic check asks for: the forming candle, the one just closed, one spare."""
OPEN_TIMEOUT: Final = 10.0
"""Seconds to wait for the sockets before preloading anyway (the repairs cover the seam)."""


def streams_for(symbols: Sequence[str]) -> list[str]:
    """The WebSocket streams the live job subscribes for `symbols`."""
    return [f"{s.lower()}{suffix}" for s in symbols for suffix in STREAM_SUFFIXES]


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


class LiveRun:
    """The main job for `symbols` on one venue, until `stop()` or `duration` seconds.

    `rest_url`/`ws_url` override the venue's (a fake exchange). `deadline` is a
    `time.monotonic()` value (the CLI passes process start + `--duration`).
    `clock_ns` restamps every received message (default: the sources' wall
    clock): a sped-up fake market needs receive times on its own clock, or the
    REST final-kline rule would compare market close times with wall time.
    `rest_options`/`ws_options` are passed to `RestClient`/`WsSource`.
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
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[RawMessage] | None = []
        self._opened = asyncio.Event()
        self._closed_since_open = False
        self._closing = False

    # ------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the run to end (safe from a signal handler)."""
        self._stop.set()

    async def run(self) -> Feed:
        """Check, subscribe, preload, then keep the frames live until stopped; returns the feed.

        Sockets and the REST session are closed on the way out, whatever happens.
        """
        loop = asyncio.get_running_loop()
        feed = self.feed = Feed(self.config, AsyncIOScheduler(loop), RunStats())
        rest = self.rest = RestClient(
            self.venue.rest_url,
            venue=self.venue,
            **self._rest_options,  # type: ignore[arg-type]
        )
        ws = self.ws = WsSource(
            self.venue.ws_url,
            streams_for(self.symbols),
            venue=self.venue,
            **self._ws_options,  # type: ignore[arg-type]
        )
        rest.messages.subscribe(self._stamp(feed.push))
        ws.messages.subscribe(self._stamp(self._on_ws))
        feed.connections().subscribe(self._on_connection)
        feed.gaps().subscribe(self._on_gap)
        work = asyncio.ensure_future(self._work(feed, rest, ws))
        stop = asyncio.ensure_future(self._stop.wait())
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
            for task in (work, stop):
                task.cancel()
            await asyncio.gather(work, stop, return_exceptions=True)
            self._closing = True
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await ws.close()
            await rest.close()
            self._release()
            feed.complete()
        return feed

    async def _work(self, feed: Feed, rest: RestClient, ws: WsSource) -> None:
        await rest.check_symbols(self.symbols)
        for symbol in self.symbols:
            feed.add_symbol(symbol)
        await ws.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OPEN_TIMEOUT):
                await self._opened.wait()
        await self._preload()
        self._release()
        self.ready.set()
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
    def _stamp(self, push: Callable[[RawMessage], None]) -> Callable[[RawMessage], None]:
        clock = self._clock_ns
        if clock is None:
            return push

        def restamped(raw: RawMessage) -> None:
            push(raw._replace(t=clock()))

        return restamped

    def _on_ws(self, raw: RawMessage) -> None:
        if raw.kind == KIND_OPEN:
            self._opened.set()
        held = self._held
        if held is not None:
            held.append(raw)
        else:
            assert self.feed is not None
            self.feed.push(raw)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held and self.feed is not None:
            log.debug("releasing %d WebSocket messages held during the preload", len(held))
            for raw in held:
                self.feed.push(raw)

    # ------------------------------------------------------------ REST work
    async def _preload(self) -> None:
        rest = self.rest
        assert rest is not None
        jobs = []
        for symbol in self.symbols:
            for interval, buffer in KLINE_BUFFERS.items():
                limit = self.config.capacity(buffer) + 1
                jobs.append(rest.klines(symbol, interval, limit=limit))
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
            await self._guarded(rest.klines(symbol, interval, limit=POLL_LIMIT), "poll")
            await asyncio.sleep(period)

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        if self._closing:
            # A gap or reconnect seen while shutting down: no session left to fetch with.
            work.close()
            return
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, request: Awaitable[object], what: str) -> bool:
        try:
            await request
        except PipelineError as exc:
            self.counters.failed_requests += 1
            log.warning("%s failed: %s", what, exc)
            return False
        return True

    def _on_connection(self, event: Connected | Disconnected) -> None:
        if isinstance(event, Disconnected):
            self._closed_since_open = True
        elif self._closed_since_open:
            self._closed_since_open = False
            if self._held is None:
                self._spawn(self._backfill_after_reconnect())

    async def _backfill_after_reconnect(self) -> None:
        rest, feed = self.rest, self.feed
        assert rest is not None
        assert feed is not None
        self.counters.reconnect_backfills += 1
        for symbol in self.symbols:
            frame = feed.frames(symbol)["klines_1m"].get()
            if frame.is_empty():
                limit = self.config.capacity("klines_1m") + 1
                request = rest.klines(symbol, "1m", limit=limit)
            else:
                last = frame["timestamp"].dt.epoch("ms").max()
                assert isinstance(last, int)
                request = rest.klines(
                    symbol, "1m", limit=MAX_KLINES_PER_REQUEST, start_time=last + 1
                )
            await self._guarded(request, f"1m backfill of {symbol} after a reconnect")

    def _on_gap(self, gap: Gap) -> None:
        self._spawn(self._repair(gap))

    async def _repair(self, gap: Gap) -> None:
        rest = self.rest
        assert rest is not None
        step = interval_ms(gap.interval)
        rows = max(1, (gap.end - gap.start + step - 1) // step)
        request = rest.klines(
            gap.symbol, gap.interval, limit=rows, start_time=gap.start, end_time=gap.end - 1
        )
        if await self._guarded(request, f"repair of {gap.symbol} {gap.interval} gap"):
            self.counters.gaps_repaired += 1

    # ------------------------------------------------------------ summary
    def summary(self) -> str:
        """The feed's summary plus the REST, WebSocket and repair counters."""
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
        return "\n".join(lines)
