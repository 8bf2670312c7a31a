"""The synthetic trade tape: one aggregated trade a second, a pure function of (seed, symbol, time).

Every candle, ticker and book the synthetic market shows is read off this tape,
so a candle is the same whoever asks and whenever: REST now, REST later, the
WebSocket's final frame. Nothing is stateful, nothing depends on the order of
requests.

How the tape is built, and why:
- the log price at each UTC midnight is a mean-reverting random walk over days
  (generated once per symbol), so the price stays near the symbol's usual level;
- inside a day, the per-second log price is a Brownian bridge between two
  midnights, drawn from a generator seeded by (seed, symbol, day): any day can
  be produced alone, without the days before it;
- prices are integer ticks and volumes integer lots, so sums are exact and do not
  depend on how a range is split.

A day costs about 5 ms to draw; the last few days drawn are kept, and per-minute
and per-day summaries are cached so long candles (1d, 1w, 1M) cost little.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final, Generic, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from pipeline.fake_exchange._symbols import SymbolProfile, stable_hash

__all__ = ["DAY_S", "TRADE_ID_STRIDE", "Agg", "Second", "Tape", "merge_aggs"]

DAY_S: Final = 86_400
MINUTE_S: Final = 60
TRADE_ID_STRIDE: Final = 8
"""Trade ids of second `s` are `s * 8 + k`: unique, increasing, computable alone."""
_MAX_TRADES_A_SECOND: Final = TRADE_ID_STRIDE
_ANCHOR_YEARS: Final = 50
_MEAN_REVERSION: Final = 0.02

I64 = npt.NDArray[np.int64]
K = TypeVar("K")
V = TypeVar("V")


class Agg(NamedTuple):
    """Trades of a time range, summarised: what a candle or a 24h ticker shows."""

    open: int
    """Ticks."""
    high: int
    low: int
    close: int
    lots: int
    quote: int
    """Quote volume in tick × lot units."""
    trades: int
    taker_lots: int
    taker_quote: int
    first_id: int
    last_id: int
    last_lots: int
    """Lots of the range's last second (the ticker's last quantity)."""


class Second(NamedTuple):
    """The aggregated trade of one second."""

    price: int
    lots: int
    trades: int
    taker_lots: int
    buyer_is_maker: bool


def merge_aggs(parts: Iterable[Agg]) -> Agg | None:
    """Summaries of consecutive ranges, in time order, merged into one."""
    it = iter(parts)
    first = next(it, None)
    if first is None:
        return None
    o, h, lo, c = first.open, first.high, first.low, first.close
    lots, quote, trades = first.lots, first.quote, first.trades
    tl, tq, fid, lid, ll = (
        first.taker_lots, first.taker_quote, first.first_id, first.last_id, first.last_lots,
    )  # fmt: skip
    for a in it:
        h = max(h, a.high)
        lo = min(lo, a.low)
        c, lid, ll = a.close, a.last_id, a.last_lots
        lots += a.lots
        quote += a.quote
        trades += a.trades
        tl += a.taker_lots
        tq += a.taker_quote
    return Agg(o, h, lo, c, lots, quote, trades, tl, tq, fid, lid, ll)


class _Lru(Generic[K, V]):
    """A small least-recently-used cache (per instance, unlike functools.lru_cache)."""

    def __init__(self, size: int, make: Callable[[K], V]) -> None:
        self._size = size
        self._make = make
        self._items: OrderedDict[K, V] = OrderedDict()

    def __call__(self, key: K) -> V:
        items = self._items
        if key in items:
            items.move_to_end(key)
            return items[key]
        value = items[key] = self._make(key)
        if len(items) > self._size:
            items.popitem(last=False)
        return value


class _Day(NamedTuple):
    """One day's seconds, as arrays of 86 400."""

    start_s: int
    price: I64
    lots: I64
    trades: I64
    taker_lots: I64


class _Minutes(NamedTuple):
    """One day's minutes, as arrays of 1 440."""

    start_s: int
    open: I64
    high: I64
    low: I64
    close: I64
    lots: I64
    quote: I64
    trades: I64
    taker_lots: I64
    taker_quote: I64
    last_trades: I64
    last_lots: I64


_WHOLE_DAYS: dict[tuple[SymbolProfile, int, int], Agg] = {}
"""(profile, seed, day) -> that day's candle, shared by every tape of the process.

A day's candle is drawn from its 86,400 seconds (some 20 ms); a 1d preload asks
for 61 of them, and every market a test or demo builds would draw them again.
The tape is a pure function of (profile, seed), so one entry serves them all.
"""


class Tape:
    """The deterministic per-second trades of one symbol."""

    def __init__(self, profile: SymbolProfile, seed: int = 0) -> None:
        self.profile = profile
        self.seed = seed
        self._key = stable_hash("tape", profile.symbol)
        self.listed_s = profile.listed_ms // 1000
        self._first_day = self.listed_s // DAY_S
        self._anchors = self._draw_anchors()
        self._days: _Lru[int, _Day] = _Lru(4, self._draw_day)
        self._minutes: _Lru[int, _Minutes] = _Lru(96, self._summarise_minutes)

    # ------------------------------------------------------------------ drawing
    def _draw_anchors(self) -> npt.NDArray[np.float64]:
        """Log price at every midnight from the listing on: a mean-reverting walk."""
        n = _ANCHOR_YEARS * 366 + 2
        rng = np.random.default_rng([self.seed, self._key, 0xA7C4])
        shocks = rng.standard_normal(n) * self.profile.daily_volatility
        mean = math.log(self.profile.base_price)
        out = np.empty(n)
        x = mean
        for i in range(n):
            out[i] = x
            x += _MEAN_REVERSION * (mean - x) + float(shocks[i])
        return out

    def _anchor(self, day: int) -> float:
        i = min(max(day - self._first_day, 0), len(self._anchors) - 1)
        return float(self._anchors[i])

    def _draw_day(self, day: int) -> _Day:
        p = self.profile
        rng = np.random.default_rng([self.seed, self._key, day])
        steps = rng.standard_normal(DAY_S, dtype=np.float32)
        u = rng.random((3, DAY_S), dtype=np.float32)
        # Brownian bridge from this midnight's anchor to the next one.
        walk = np.cumsum(steps, dtype=np.float64) * (p.daily_volatility / math.sqrt(DAY_S))
        start, end = self._anchor(day), self._anchor(day + 1)
        drift = (walk[-1] - (end - start)) / DAY_S
        x = np.empty(DAY_S)
        x[0] = 0.0
        x[1:] = walk[:-1]
        x += start - drift * np.arange(DAY_S)
        price = np.maximum(np.rint(np.exp(x) / p.tick), 1).astype(np.int64)
        trades = (1 + (u[0] < 0.35) + (u[0] < 0.12) + (u[0] < 0.03)).astype(np.int64)
        size = -np.log1p(-u[1].astype(np.float64)) * p.lots_per_second
        lots = (np.floor(size) + 1).astype(np.int64)
        taker = np.floor(lots * u[2]).astype(np.int64)
        assert int(trades.max()) <= _MAX_TRADES_A_SECOND
        return _Day(day * DAY_S, price, lots, trades, taker)

    def _summarise_minutes(self, day: int) -> _Minutes:
        d = self._days(day)
        shape = (DAY_S // MINUTE_S, MINUTE_S)
        price = d.price.reshape(shape)
        lots = d.lots.reshape(shape)
        taker = d.taker_lots.reshape(shape)
        trades = d.trades.reshape(shape)
        return _Minutes(
            d.start_s,
            price[:, 0].copy(),
            price.max(axis=1),
            price.min(axis=1),
            price[:, -1].copy(),
            lots.sum(axis=1),
            (price * lots).sum(axis=1),
            trades.sum(axis=1),
            taker.sum(axis=1),
            (price * taker).sum(axis=1),
            trades[:, -1].copy(),
            lots[:, -1].copy(),
        )

    # ------------------------------------------------------------------ reading
    def second(self, s: int) -> Second:
        """The aggregated trade of second `s` (Unix seconds)."""
        day, i = divmod(s, DAY_S)
        d = self._days(day)
        lots, taker = int(d.lots[i]), int(d.taker_lots[i])
        return Second(int(d.price[i]), lots, int(d.trades[i]), taker, taker * 2 < lots)

    def aggregate(self, s0: int, s1: int) -> Agg | None:
        """The trades of seconds `[s0, s1)`, summarised; None if none (before the listing)."""
        s0 = max(s0, self.listed_s)
        if s0 >= s1:
            return None
        parts: list[Agg] = []
        day = s0 // DAY_S
        while day * DAY_S < s1:
            start = day * DAY_S
            a, b = max(s0, start) - start, min(s1, start + DAY_S) - start
            parts.extend(self._day_parts(day, a, b))
            day += 1
        return merge_aggs(parts)

    def _day_parts(self, day: int, a: int, b: int) -> list[Agg]:
        if a == 0 and b == DAY_S:
            key = (self.profile, self.seed, day)
            whole = _WHOLE_DAYS.get(key)
            if whole is None:
                whole = _WHOLE_DAYS[key] = self._minute_range(day, 0, DAY_S // MINUTE_S)
            return [whole]
        m0, m1 = -(-a // MINUTE_S), b // MINUTE_S
        if m0 >= m1:
            return [self._second_range(day, a, b)]
        parts = []
        if a < m0 * MINUTE_S:
            parts.append(self._second_range(day, a, m0 * MINUTE_S))
        parts.append(self._minute_range(day, m0, m1))
        if m1 * MINUTE_S < b:
            parts.append(self._second_range(day, m1 * MINUTE_S, b))
        return parts

    def _minute_range(self, day: int, m0: int, m1: int) -> Agg:
        m = self._minutes(day)
        first_s = m.start_s + m0 * MINUTE_S
        last_s = m.start_s + m1 * MINUTE_S - 1
        return Agg(
            int(m.open[m0]),
            int(m.high[m0:m1].max()),
            int(m.low[m0:m1].min()),
            int(m.close[m1 - 1]),
            int(m.lots[m0:m1].sum()),
            int(m.quote[m0:m1].sum()),
            int(m.trades[m0:m1].sum()),
            int(m.taker_lots[m0:m1].sum()),
            int(m.taker_quote[m0:m1].sum()),
            first_s * TRADE_ID_STRIDE,
            last_s * TRADE_ID_STRIDE + int(m.last_trades[m1 - 1]) - 1,
            int(m.last_lots[m1 - 1]),
        )

    def _second_range(self, day: int, a: int, b: int) -> Agg:
        d = self._days(day)
        price, lots, taker = d.price[a:b], d.lots[a:b], d.taker_lots[a:b]
        return Agg(
            int(price[0]),
            int(price.max()),
            int(price.min()),
            int(price[-1]),
            int(lots.sum()),
            int((price * lots).sum()),
            int(d.trades[a:b].sum()),
            int(taker.sum()),
            int((price * taker).sum()),
            (d.start_s + a) * TRADE_ID_STRIDE,
            (d.start_s + b - 1) * TRADE_ID_STRIDE + int(d.trades[b - 1]) - 1,
            int(lots[-1]),
        )
