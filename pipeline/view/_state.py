"""What the view shows: a `LiveRun`'s counters and frames, sampled into a `ViewState`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from pipeline.feed import Feed
    from pipeline.live import LiveRun
    from sinks.rolling_frame import RollingFrame


ViewMode = Literal["live", "lines"]
"""`live`: redrawn in place (a terminal); `lines`: one status line now and then."""

WS_STREAMS: Final = ("kline_1m", "depth20", "ticker")
"""Each symbol's WebSocket streams, as the feed labels them after the symbol."""
REST: Final = "rest"
"""The row that sums a symbol's REST bodies (kline preloads, polls, repairs)."""
STARTUP: Final = ("checking symbols", "opening sockets", "preloading")
"""`LiveRun.phase` values before it runs, in order."""
KLINES_SHOWN: Final = 3
_BOOK_TAIL: Final = 100
"""Rows read from the end of `order_book` to find the newest snapshot (depth20: 40)."""


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
