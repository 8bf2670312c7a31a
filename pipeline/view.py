"""The live terminal view of a `LiveRun`, and its one-line status for logs.

Three parts, so that what is shown is testable without a terminal:

- `collect(live, sampler, now)` reads a `LiveRun` (its feed's per-stream
  counters and frames, the REST and WebSocket counters) into a `ViewState`;
- `render(state)` and `status_line(state)` are pure: a state in, text out;
- `LiveView` runs beside the run on its event loop. It samples the counters
  every `sample` seconds and every `interval` seconds either redraws the view
  in place with ANSI escapes (`live` mode, for a terminal) or prints the status
  line (`lines` mode, for logs, pipes and CI).

Rates and ages cost the feed nothing: the feed already counts every stream's
messages, and the sampler notes when each count last moved. An age is so exact
to one sampling period (0.25 s); a rate is a count's change over the last
refresh window.

In `live` mode log records still reach the terminal: the view erases itself
before a record is written to its stream and redraws below it at the next
sample, so logs scroll above the view. The view never raises into the run: an
error while collecting, rendering or writing is logged once and switches the
view off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal, TextIO

if TYPE_CHECKING:
    from pipeline.feed import Feed
    from pipeline.live import LiveRun
    from sinks.rolling_frame import RollingFrame

__all__ = [
    "Candle",
    "LiveView",
    "Sampler",
    "StreamRow",
    "SymbolView",
    "TickerView",
    "Top",
    "ViewMode",
    "ViewState",
    "collect",
    "render",
    "status_line",
    "view_mode",
]

log = logging.getLogger(__name__)

ViewMode = Literal["live", "lines"]
"""`live`: redrawn in place (a terminal); `lines`: one status line now and then."""

SAMPLE_PERIOD: Final = 0.25
"""Seconds between looks at the counters: the resolution of a stream's age."""
REFRESH: Final = 1.0
"""Seconds between redraws of the live view (and its rate window)."""
STATUS_INTERVAL: Final = 10.0
"""Seconds between status lines when the view cannot redraw in place."""
WS_STREAMS: Final = ("kline_1m", "depth20", "ticker")
"""Each symbol's WebSocket streams, as the feed labels them after the symbol."""
REST: Final = "rest"
"""The row that sums a symbol's REST bodies (kline preloads, polls, repairs)."""
STARTUP: Final = ("checking symbols", "opening sockets", "preloading")
"""`LiveRun.phase` values before it runs, in order."""
KLINES_SHOWN: Final = 3
_BOOK_TAIL: Final = 100
"""Rows read from the end of `order_book` to find the newest snapshot (depth20: 40)."""

_FALLBACK_SIZE: Final = (100, 40)


# ---------------------------------------------------------------------- state
@dataclass(frozen=True, slots=True)
class StreamRow:
    """One stream of one symbol, as the view shows it."""

    name: str
    """`kline_1m`, `depth20`, `ticker`, `rest` (every REST body of the symbol), or another."""
    rate: float
    """Messages per second over the last refresh window."""
    messages: int
    kept: int
    """Events that changed a frame (for `rest`: kline rows kept)."""
    age: float | None
    """Seconds since its last message (to one sampling period); None: none yet."""
    rows: int = 0
    """Events its messages carried (a REST klines body carries many)."""


@dataclass(frozen=True, slots=True)
class Candle:
    """One closed kline."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Top:
    """The best levels of the newest order-book snapshot (None: that side is empty)."""

    bid: float | None
    bid_qty: float | None
    ask: float | None
    ask_qty: float | None


@dataclass(frozen=True, slots=True)
class TickerView:
    """The newest 24h ticker."""

    last_price: float
    volume_24h: float
    quote_volume_24h: float


@dataclass(frozen=True, slots=True)
class SymbolView:
    """Everything shown for one symbol."""

    symbol: str
    streams: tuple[StreamRow, ...] = ()
    klines_1m: tuple[Candle, ...] = ()
    """The newest closed 1m klines, oldest first."""
    last_1h: Candle | None = None
    last_1d: Candle | None = None
    top: Top | None = None
    ticker: TickerView | None = None
    fill: tuple[tuple[str, int, int], ...] = ()
    """(buffer, rows kept, capacity) of each frame."""


@dataclass(frozen=True, slots=True)
class ViewState:
    """A snapshot of a run for `render` and `status_line`."""

    phase: str
    """`starting`, one of `STARTUP`, `running`, `stopping` or `stopped`."""
    elapsed: float
    """Seconds since the view started."""
    venue: str = ""
    remaining: float | None = None
    """Seconds until the run's deadline (None: it runs until stopped)."""
    symbols: tuple[SymbolView, ...] = ()
    sockets_open: int = 0
    reconnects: int = 0
    gaps_seen: int = 0
    gaps_repaired: int = 0
    reconnect_backfills: int = 0
    retries: int = 0
    bad: int = 0
    failed_requests: int = 0
    rest_in_flight: int = 0
    """REST requests sent and not answered yet (preloads, polls, backfills, repairs)."""
    preload_requests: int = 0
    preload_answered: int = 0
    rest_rows: int = 0
    """Kline rows the REST bodies carried."""
    used_weight: int = 0
    weight_limit: int = 0


# ---------------------------------------------------------------------- sampling
class Sampler:
    """Follows message counts: when each last moved, and its rate over the refresh window."""

    def __init__(self, now: float) -> None:
        self._counts: dict[str, int] = {}
        self._moved: dict[str, float] = {}
        self._window_start = now
        self._window_base: dict[str, int] = {}
        self._rates: dict[str, float] = {}

    def sample(self, counts: Mapping[str, int], now: float) -> None:
        """Note the counts at `now` (a count not seen before starts from 0)."""
        last, moved = self._counts, self._moved
        for key, n in counts.items():
            if last.get(key, 0) != n:
                last[key] = n
                moved[key] = now

    def roll(self, now: float) -> None:
        """End the refresh window at `now`: the rates become the counts' change over it."""
        span = now - self._window_start
        if span <= 0:
            return
        base = self._window_base
        self._rates = {key: (n - base.get(key, 0)) / span for key, n in self._counts.items()}
        self._window_base = dict(self._counts)
        self._window_start = now

    def rate(self, key: str) -> float:
        """Messages per second of `key` over the last closed window."""
        return self._rates.get(key, 0.0)

    def age(self, key: str, now: float) -> float | None:
        """Seconds since `key`'s count last moved; None if it never has."""
        moved = self._moved.get(key)
        return None if moved is None else max(0.0, now - moved)


def stream_counts(feed: Feed, symbols: list[str]) -> dict[str, tuple[int, int, int]]:
    """`"<SYMBOL> <stream>"` -> (messages, kept, events) from the feed's counters.

    A symbol's REST streams (`... (rest)`) are summed into `"<SYMBOL> rest"`.
    """
    out: dict[str, tuple[int, int, int]] = {}
    streams = feed.stats.streams
    for symbol in symbols:
        prefix = symbol + " "
        rest = [0, 0, 0]
        for label, c in streams.items():
            if not label.startswith(prefix):
                continue
            if label.endswith("(rest)"):
                rest[0] += c.read - c.extra
                rest[1] += c.kept
                rest[2] += c.read
            else:
                out[label] = (c.read - c.extra, c.kept, c.read)
        out[prefix + REST] = (rest[0], rest[1], rest[2])
    return out


# ---------------------------------------------------------------------- collect
def collect(live: LiveRun, sampler: Sampler, now: float, started: float) -> ViewState:
    """Read `live` into a `ViewState` (`now`, `started`: the sampler's clock).

    Samples the counters and ends the sampler's rate window first, so the ages
    are as fresh as this call and the rates cover the time since the last call.
    """
    feed, rest, ws, counters = live.feed, live.rest, live.ws, live.counters
    symbols: list[SymbolView] = []
    rest_rows = bad = gaps = answered = 0
    if feed is not None:
        counts = stream_counts(feed, live.symbols)
        sampler.sample({k: v[0] for k, v in counts.items()}, now)
        sampler.roll(now)
        known = set(feed.symbols)
        for symbol in live.symbols:
            symbols.append(_symbol_view(feed, symbol, counts, sampler, now, symbol in known))
            rest_rows += counts[f"{symbol} {REST}"][2]
        bad = feed.stats.bad
        gaps = len(feed.stats.gaps)
        # Preload responses are the first REST klines bodies (polls start after it);
        # a body with no rows is counted apart.
        answered = sum(v[0] for k, v in counts.items() if k.endswith(" " + REST))
        empty = feed.stats.streams.get("rest /api/v3/klines")
        answered += empty.read if empty is not None else 0
    else:
        symbols = [SymbolView(s) for s in live.symbols]
    rest_stats = rest.stats if rest is not None else None
    in_flight = 0
    if rest_stats is not None:
        done = rest_stats.responses + rest_stats.timeouts + rest_stats.connection_errors
        in_flight = max(0, rest_stats.requests - done)
    deadline = live.deadline
    return ViewState(
        phase=live.phase,
        elapsed=now - started,
        venue=live.venue.name,
        remaining=None if deadline is None else max(0.0, deadline - time.monotonic()),
        symbols=tuple(symbols),
        sockets_open=ws.connection_count if ws is not None else 0,
        reconnects=ws.stats.reconnects if ws is not None else 0,
        gaps_seen=gaps,
        gaps_repaired=counters.gaps_repaired,
        reconnect_backfills=counters.reconnect_backfills,
        retries=rest_stats.retries if rest_stats is not None else 0,
        bad=bad,
        failed_requests=counters.failed_requests,
        rest_in_flight=in_flight,
        preload_requests=counters.preload_requests,
        preload_answered=min(answered, counters.preload_requests),
        rest_rows=rest_rows,
        used_weight=rest_stats.used_weight if rest_stats is not None else 0,
        weight_limit=live.venue.weight_limit,
    )


def _symbol_view(
    feed: Feed,
    symbol: str,
    counts: Mapping[str, tuple[int, int, int]],
    sampler: Sampler,
    now: float,
    known: bool,
) -> SymbolView:
    prefix = symbol + " "
    names = [*WS_STREAMS, REST]
    # Other streams of the symbol (a local book's diffs) once they carry something.
    for key, (messages, _, _) in counts.items():
        name = key.removeprefix(prefix)
        if messages and key.startswith(prefix) and name not in names:
            names.append(name)
    rows = []
    for name in names:
        key = prefix + name
        messages, kept, events = counts.get(key, (0, 0, 0))
        rate = sampler.rate(key)
        rows.append(StreamRow(name, rate, messages, kept, sampler.age(key, now), events))
    if not known:
        return SymbolView(symbol, tuple(rows))
    frames = feed.frames(symbol)
    return SymbolView(
        symbol,
        tuple(rows),
        klines_1m=_candles(frames["klines_1m"], KLINES_SHOWN),
        last_1h=_last(_candles(frames["klines_1h"], 1)),
        last_1d=_last(_candles(frames["klines_1d"], 1)),
        top=_top(frames["order_book"]),
        ticker=_ticker(frames["ticker"]),
        fill=tuple((name, len(frame), frame.capacity) for name, frame in frames.items()),
    )


def _last(candles: tuple[Candle, ...]) -> Candle | None:
    return candles[-1] if candles else None


def _candles(frame: RollingFrame[object], n: int) -> tuple[Candle, ...]:
    if not len(frame):
        return ()
    df = frame.get().tail(n)
    opens = df["timestamp"].dt.epoch("ms").to_list()
    values = df.select("open", "high", "low", "close", "volume").iter_rows()
    return tuple(Candle(t, *row) for t, row in zip(opens, values, strict=True))


def _top(frame: RollingFrame[object]) -> Top | None:
    if not len(frame):
        return None
    df = frame.get()
    # The newest snapshot is the last rows (bids by level, then asks); a Polars
    # filter over the whole frame costs several times this walk over its tail.
    tail = df.tail(_BOOK_TAIL)
    if tail.height < df.height and tail["update_id"][0] == tail["update_id"][-1]:
        tail = df  # a snapshot deeper than the tail
    ids, sides, levels, prices, qtys = (
        tail[name].to_list() for name in ("update_id", "side", "level", "price", "quantity")
    )
    best: dict[str, tuple[float, float]] = {}
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] != ids[-1]:
            break
        if levels[i] == 0:
            best[sides[i]] = (prices[i], qtys[i])
    bid, ask = best.get("bid"), best.get("ask")
    return Top(
        bid[0] if bid else None,
        bid[1] if bid else None,
        ask[0] if ask else None,
        ask[1] if ask else None,
    )


def _ticker(frame: RollingFrame[object]) -> TickerView | None:
    if not len(frame):
        return None
    row = frame.get().select("last_price", "volume_24h", "quote_volume_24h").row(-1)
    return TickerView(*row)


# ---------------------------------------------------------------------- render (pure)
def render(state: ViewState) -> list[str]:
    """The live view of `state`, one string a line, no escapes (pure)."""
    lines = [_header(state)]
    if state.phase == "starting" or state.phase in STARTUP:
        lines.extend(_progress(state))
    lines.extend(_streams(state))
    lines.append("  " + _run_counters(state))
    for s in state.symbols:
        lines.extend(_market(s))
    return lines


def status_line(state: ViewState) -> str:
    """The state in one line, for logs where the view cannot redraw (pure)."""
    parts = [f"{_clock(state.elapsed)} {state.phase}"]
    if state.phase in STARTUP:
        parts.append(_preload_text(state) or f"{state.sockets_open} sockets open")
    for s in state.symbols:
        streams = ", ".join(
            f"{r.name} {r.rate:.1f}/s {_age(r.age)}" for r in s.streams if r.name != REST
        )
        text = f"{s.symbol} {streams}"
        if s.ticker is not None:
            text += f", last {_price(s.ticker.last_price)}"
        if s.top is not None and s.top.bid is not None and s.top.ask is not None:
            text += f", bid/ask {_price(s.top.bid)}/{_price(s.top.ask)}"
        parts.append(text)
    parts.append(_run_counters(state))
    return " | ".join(parts)


def _header(state: ViewState) -> str:
    names = ", ".join(s.symbol for s in state.symbols)
    text = f"hbar-data {state.venue} {names}: {state.phase}, {_clock(state.elapsed)}".replace(
        "  ", " "
    )
    if state.remaining is not None and state.phase != "stopping":
        text += f" (stops in {_clock(state.remaining)})"
    return text


def _progress(state: ViewState) -> Iterator[str]:
    current = STARTUP.index(state.phase) if state.phase in STARTUP else -1
    details = {
        "checking symbols": ", ".join(s.symbol for s in state.symbols),
        "opening sockets": f"{state.sockets_open} open",
        "preloading": _preload_text(state),
    }
    for i, step in enumerate(STARTUP):
        mark = "x" if i < current else ">" if i == current else " "
        detail = details[step] if i <= current else ""
        yield f"  [{mark}] {step:<17} {detail}".rstrip()


def _preload_text(state: ViewState) -> str:
    if not state.preload_requests:
        return ""
    return (
        f"{state.preload_answered} of {state.preload_requests} REST requests answered, "
        f"{state.rest_rows} rows loaded"
    )


def _streams(state: ViewState) -> Iterator[str]:
    if not any(s.streams for s in state.symbols):
        return
    yield f"  {'stream':<22}{'msgs/s':>8}{'msgs':>9}{'kept':>9}  last msg"
    for s in state.symbols:
        for r in s.streams:
            label = f"{s.symbol} {r.name}"
            extra = f"  ({r.rows} rows)" if r.name == REST and r.rows else ""
            yield (
                f"  {label:<22}{r.rate:>8.1f}{r.messages:>9}{r.kept:>9}  {_age(r.age):>8}{extra}"
            )


def _run_counters(state: ViewState) -> str:
    parts = [
        f"reconnects {state.reconnects}",
        f"gaps repaired {state.gaps_repaired}/{state.gaps_seen}",
        f"retries {state.retries}",
        f"bad {state.bad}",
    ]
    if state.failed_requests:
        parts.append(f"failed requests {state.failed_requests}")
    if state.reconnect_backfills:
        parts.append(f"backfills {state.reconnect_backfills}")
    if state.rest_in_flight and state.phase not in STARTUP:
        parts.append(f"REST in flight {state.rest_in_flight}")
    if state.weight_limit:
        parts.append(f"weight {state.used_weight}/{state.weight_limit}")
    return ", ".join(parts)


def _market(s: SymbolView) -> Iterator[str]:
    if s.ticker is None and s.top is None and not s.klines_1m and s.last_1h is None:
        return
    head = f"  {s.symbol}"
    if s.ticker is not None:
        t = s.ticker
        head += (
            f"  last {_price(t.last_price)}  24h volume {_amount(t.volume_24h)}"
            f" (quote {_amount(t.quote_volume_24h)})"
        )
    yield head
    if s.top is not None:
        yield "    book  " + _book(s.top)
    cells = [
        [_price(k.open), _price(k.high), _price(k.low), _price(k.close), _amount(k.volume)]
        for k in s.klines_1m
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(5)] if cells else []
    for i, (k, row) in enumerate(zip(s.klines_1m, cells, strict=True)):
        o, h, lo, c, v = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        lead = "    1m    " if i == 0 else "          "
        yield f"{lead}{_minute(k.open_ms)}  o {o}  h {h}  l {lo}  c {c}  v {v}".rstrip()
    closes = []
    if s.last_1h is not None:
        closes.append(f"1h {_hour(s.last_1h.open_ms)} close {_price(s.last_1h.close)}")
    if s.last_1d is not None:
        closes.append(f"1d {_day(s.last_1d.open_ms)} close {_price(s.last_1d.close)}")
    if closes:
        yield "    " + "    ".join(closes)
    if s.fill:
        yield "    rows  " + "  ".join(
            f"{b.removeprefix('klines_')} {n}/{cap}" for b, n, cap in s.fill
        )


def _book(top: Top) -> str:
    bid = "-" if top.bid is None else f"{_price(top.bid)} x {_amount(top.bid_qty or 0.0)}"
    ask = "-" if top.ask is None else f"{_price(top.ask)} x {_amount(top.ask_qty or 0.0)}"
    text = f"bid {bid}  ask {ask}"
    if top.bid is not None and top.ask is not None:
        spread = top.ask - top.bid
        mid = (top.ask + top.bid) / 2
        text += f"  spread {_price(spread)}"
        if mid > 0:
            text += f" ({spread / mid * 10_000:.1f} bp)"
    return text


def _price(x: float) -> str:
    # Fixed-point, as the exchange writes prices: `1e-05` would hide a spread's size.
    return f"{x:.8f}".rstrip("0").rstrip(".")


def _amount(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.6g}"


def _age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 1:
        return "<1s"
    return _clock(age)


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _minute(ms: int) -> str:
    return _utc(ms).strftime("%H:%M")


def _hour(ms: int) -> str:
    return _utc(ms).strftime("%m-%d %H:00")


def _day(ms: int) -> str:
    return _utc(ms).strftime("%Y-%m-%d")


# ---------------------------------------------------------------------- the driver
def view_mode(option: bool | None, stream: TextIO | None = None) -> ViewMode | None:
    """The mode for `--view` (True), `--no-view` (False) or neither (None, by `stream`)."""
    if option is False:
        return None
    if option is True:
        return "live"
    if os.environ.get("TERM") == "dumb":  # no cursor movement there
        return "lines"
    stream = stream if stream is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        tty = False
    return "live" if tty else "lines"


class LiveView:
    """Shows a `LiveRun` on `stream` (default: `sys.stderr` at the time) while it runs.

    `async with LiveView(live, "live"):` around `live.run()`, or `start()` and
    `await stop()`. `stop()` leaves the last view on screen once the run got
    ready (erases it otherwise) and restores the cursor; nothing is written
    after it, so the run's summary follows cleanly.
    """

    def __init__(
        self,
        live: LiveRun,
        mode: ViewMode,
        *,
        stream: TextIO | None = None,
        interval: float | None = None,
        sample: float = SAMPLE_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live = live
        self.mode: ViewMode = mode
        self._out = stream
        self.interval = interval if interval is not None else (
            REFRESH if mode == "live" else STATUS_INTERVAL
        )  # fmt: skip
        self._sample = sample
        self._clock = clock
        self._started = clock()
        self.sampler = Sampler(self._started)
        self.enabled = True
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._lines: list[str] = []
        self._drawn = 0
        self._filter = _EraseBeforeLog(self)
        self._filtered: list[logging.Handler] = []
        self._final = False

    @property
    def stream(self) -> TextIO:
        return self._out if self._out is not None else sys.stderr

    async def __aenter__(self) -> LiveView:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start refreshing (needs a running event loop)."""
        if self.mode == "live":
            self._guard(self._begin_live)
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop refreshing and leave the terminal clean; never raises."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.mode == "live":
            if self.enabled and self.live.ready.is_set():
                self._final = True
                self._guard(self._refresh, self._clock())
            else:
                self._guard(self._erase)
            self._guard(self._end_live)

    # ------------------------------------------------------------ internals
    async def _loop(self) -> None:
        next_draw = self._started if self.mode == "live" else self._started + self.interval
        while self.enabled:
            now = self._clock()
            if now >= next_draw:
                next_draw = now + self.interval
                self._guard(self._refresh, now)
            else:
                self._guard(self._sample_only, now)
            await asyncio.sleep(self._sample)

    def _sample_only(self, now: float) -> None:
        feed = self.live.feed
        if feed is not None:
            counts = stream_counts(feed, self.live.symbols)
            self.sampler.sample({k: v[0] for k, v in counts.items()}, now)
        if self.mode == "live" and not self._drawn and self._lines:
            self._draw(self._lines)  # erased by a log record: back below it

    def _refresh(self, now: float) -> None:
        state = collect(self.live, self.sampler, now, self._started)
        if self._final:
            state = replace(state, phase="stopped", remaining=None)
        if self.mode == "live":
            self._lines = render(state)
            self._draw(self._lines)
        else:
            self._write(f"hbar-data: {status_line(state)}\n")

    def _guard(self, action: Callable[..., None], *args: float) -> None:
        if not self.enabled:
            return
        try:
            action(*args)
        except Exception as exc:
            self.enabled = False
            self.error = exc
            log.warning(
                "live view switched off after an error: %r",
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            if self.mode == "live":
                with contextlib.suppress(Exception):
                    self._end_live()

    def _write(self, text: str) -> None:
        stream = self.stream
        stream.write(text)
        stream.flush()

    def _begin_live(self) -> None:
        self._write("\x1b[?25l")  # the cursor would flicker across the view
        stream = self.stream
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is stream:
                handler.addFilter(self._filter)
                self._filtered.append(handler)

    def _end_live(self) -> None:
        for handler in self._filtered:
            handler.removeFilter(self._filter)
        self._filtered.clear()
        self._write("\x1b[?25h")

    def _draw(self, lines: list[str]) -> None:
        columns, rows = _terminal_size(self.stream)
        # A wrapped or scrolled-off line would break the next cursor-up count.
        shown = [_fit(line, columns - 1) for line in lines[: max(1, rows - 1)]]
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self._write(up + "".join(line + "\x1b[K\n" for line in shown) + "\x1b[J")
        self._drawn = len(shown)

    def _erase(self) -> None:
        if self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0


class _EraseBeforeLog(logging.Filter):
    """On the view's stream's log handlers: clear the view before a record is written."""

    def __init__(self, view: LiveView) -> None:
        super().__init__()
        self._view = view

    def filter(self, record: logging.LogRecord) -> bool:
        view = self._view
        if view.enabled and view._drawn:
            try:
                view._erase()
            except Exception:  # the record matters more than the view
                view.enabled = False
        return True


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_SIZE
    return size.columns or _FALLBACK_SIZE[0], size.lines or _FALLBACK_SIZE[1]


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(0, width - 3)] + "..."
