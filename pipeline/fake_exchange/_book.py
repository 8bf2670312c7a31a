"""The synthetic order book: a pure function of the 100 ms book tick.

The book at tick `j` (market time `j * 100` ms) sits around the tape's trade of
that second; each price level's quantity is a hash of (level, epoch), where every
level has its own period, so a few levels change at every tick. Because any tick's
book can be rebuilt alone:
- the REST snapshot, the partial-depth frames and the diff stream all describe
  the same book;
- a diff from tick `j0` to `j1` is the exact difference of the two books, with
  `U = update_id(j0) + 1` and `u = update_id(j1)`: diffs are contiguous across
  ticks, connections and reconnects, as Binance documents them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from pipeline.fake_exchange._symbols import decimal_text, stable_hash
from pipeline.fake_exchange._tape import Tape

__all__ = ["BOOK_TICK_MS", "Book", "BookModel", "Levels"]

BOOK_TICK_MS: Final = 100
_MASK64: Final = (1 << 64) - 1
_EMPTY_PERCENT: Final = 8
_IDS_PER_TICK: Final = 8

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Levels = list[list[str]]


def _mix(x: U64) -> U64:
    """splitmix64's finaliser over an array (uint64 arithmetic wraps, as intended)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    """The same finaliser on a Python int (NumPy scalars would warn on overflow)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Book(NamedTuple):
    """One side-by-side book: price ticks and quantity lots, best first, no empty level."""

    update_id: int
    bid_prices: I64
    bid_lots: I64
    ask_prices: I64
    ask_lots: I64


class BookModel:
    """The order book of one symbol, rebuilt on demand for any tick."""

    def __init__(self, tape: Tape, levels: int = 1000) -> None:
        self.tape = tape
        self.levels = levels
        p = tape.profile
        self._price_decimals = p.price_decimals
        self._qty_decimals = p.qty_decimals
        self._salt = stable_hash("book", p.symbol, tape.seed)
        self._first_tick = p.listed_ms // BOOK_TICK_MS
        self._max_lots = max(10, int(p.lots_per_second * 4))
        self._offsets = np.arange(levels + levels // 4 + 8, dtype=np.int64)
        self._cache: OrderedDict[int, Book] = OrderedDict()

    def update_id(self, j: int) -> int:
        """`lastUpdateId` of the book at tick `j`: strictly increasing with `j`."""
        return (j - self._first_tick) * _IDS_PER_TICK + _mix_int(self._salt ^ j) % _IDS_PER_TICK

    def book(self, j: int) -> Book:
        """The book at tick `j` (`j = market_ms // 100`)."""
        cache = self._cache
        hit = cache.get(j)
        if hit is not None:
            return hit
        second = self.tape.second(j * BOOK_TICK_MS // 1000)
        spread = 1 + (_mix_int(self._salt ^ (j // 10) ^ 0x5EED) % 4 == 0)
        if second.buyer_is_maker:
            best_bid = second.price
            best_ask = second.price + spread
        else:
            best_ask = second.price
            best_bid = max(1, second.price - spread)
        bid_prices = best_bid - self._offsets
        bid_prices = bid_prices[bid_prices > 0]
        ask_prices = best_ask + self._offsets
        bid_lots = self._quantities(bid_prices, j, side=1)
        ask_lots = self._quantities(ask_prices, j, side=2)
        book = Book(
            self.update_id(j),
            *self._non_empty(bid_prices, bid_lots),
            *self._non_empty(ask_prices, ask_lots),
        )
        cache[j] = book
        if len(cache) > 16:
            cache.popitem(last=False)
        return book

    def _quantities(self, prices: I64, j: int, side: int) -> I64:
        key = _mix(prices.astype(np.uint64) ^ np.uint64((self._salt << 2 | side) & _MASK64))
        period = np.uint64(5) + key % np.uint64(200)
        phase = (key >> np.uint64(16)) % period
        epoch = (np.uint64(j) + phase) // period
        r = _mix(key ^ (epoch * np.uint64(0x9E3779B97F4A7C15)))
        lots = (np.uint64(1) + (r >> np.uint64(8)) % np.uint64(self._max_lots)).astype(np.int64)
        # Some levels stand empty for a while; the best level never does.
        lots[(r % np.uint64(100)).astype(np.int64) < _EMPTY_PERCENT] = 0
        if len(lots):
            lots[0] = max(int(lots[0]), 1)
        return lots

    def _non_empty(self, prices: I64, lots: I64) -> tuple[I64, I64]:
        keep = lots > 0
        return prices[keep][: self.levels], lots[keep][: self.levels]

    # ---------------------------------------------------------------- payloads
    def levels_text(self, prices: I64, lots: I64, limit: int) -> Levels:
        """Up to `limit` levels as Binance's `[["price", "qty"], ...]`."""
        pd, qd = self._price_decimals, self._qty_decimals
        return [
            [decimal_text(p, pd), decimal_text(q, qd)]
            for p, q in zip(prices[:limit].tolist(), lots[:limit].tolist(), strict=True)
        ]

    def snapshot(self, j: int, limit: int) -> dict[str, object]:
        """A `/api/v3/depth` body or a partial-depth frame: `{"lastUpdateId", "bids", "asks"}`."""
        b = self.book(j)
        return {
            "lastUpdateId": b.update_id,
            "bids": self.levels_text(b.bid_prices, b.bid_lots, limit),
            "asks": self.levels_text(b.ask_prices, b.ask_lots, limit),
        }

    def diff(self, j0: int, j1: int) -> tuple[int, int, Levels, Levels]:
        """`(U, u, bids, asks)` taking the book at tick `j0` to the book at tick `j1`."""
        b0, b1 = self.book(j0), self.book(j1)
        return (
            b0.update_id + 1,
            b1.update_id,
            self._side_diff(b0.bid_prices, b0.bid_lots, b1.bid_prices, b1.bid_lots, best_high=True),
            self._side_diff(
                b0.ask_prices, b0.ask_lots, b1.ask_prices, b1.ask_lots, best_high=False
            ),
        )

    def _side_diff(self, p0: I64, q0: I64, p1: I64, q1: I64, *, best_high: bool) -> Levels:
        before = dict(zip(p0.tolist(), q0.tolist(), strict=True))
        after = dict(zip(p1.tolist(), q1.tolist(), strict=True))
        changed = [(p, q) for p, q in after.items() if before.get(p) != q]
        changed.extend((p, 0) for p in before if p not in after)
        # Best first: bids descending, asks ascending.
        changed.sort(reverse=best_high)
        pd, qd = self._price_decimals, self._qty_decimals
        return [[decimal_text(p, pd), decimal_text(q, qd)] for p, q in changed]
