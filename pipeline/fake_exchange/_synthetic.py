"""The synthetic market: candles, books and tickers read off a deterministic trade tape.

Everything is a function of (seed, symbol, market time), so REST and WebSocket
agree by construction: the final (`x: true`) kline frame of a candle and the
REST row of that candle are built by the same call over the same seconds, and
depth diffs are exact differences between the books that snapshots show.

Time rules (the tape's trade of second `s` happens at `s * 1000` ms):
- a candle at market time `t` covers its seconds up to and including `t`'s
  second; once `t` reaches its close it is final;
- frames are pushed on ticks aligned to their period in market time (kline
  every 2 s, depth every 100 or 1000 ms, ticker every 1 s), and carry the tick
  as event time, so a frame is the same whichever connection receives it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Final

import orjson

from pipeline.fake_exchange._book import BOOK_TICK_MS, BookModel
from pipeline.fake_exchange._clock import Clock
from pipeline.fake_exchange._market import RecordedResponse
from pipeline.fake_exchange._streams import StreamSpec, candle_open, next_open
from pipeline.fake_exchange._symbols import (
    SYMBOL_PATTERN,
    SymbolProfile,
    decimal_text,
    exchange_symbol_entry,
    profile_for,
)
from pipeline.fake_exchange._tape import DAY_S, TRADE_ID_STRIDE, Agg, Tape

__all__ = ["SyntheticMarket"]

_MAX_CATCH_UP: Final = 1000
"""Final kline frames sent at most after the clock jumps over many candles."""


class _Symbol:
    """The tape and book of one symbol, and the payloads built from them."""

    def __init__(self, profile: SymbolProfile, seed: int, book_levels: int) -> None:
        self.profile = profile
        self.tape = Tape(profile, seed)
        self.book = BookModel(self.tape, book_levels)
        self.pd = profile.price_decimals
        self.qd = profile.qty_decimals

    def price(self, ticks: int) -> str:
        return decimal_text(ticks, self.pd)

    def qty(self, lots: int) -> str:
        return decimal_text(lots, self.qd)

    def quote(self, units: int) -> str:
        return decimal_text(units, self.pd + self.qd)

    def candle(self, interval: str, open_ms: int, now_ms: int) -> tuple[Agg, int] | None:
        """The candle opening at `open_ms` as it stands at `now_ms`, and its close time."""
        close_ms = next_open(interval, open_ms)
        end_s = min(close_ms // 1000, now_ms // 1000 + 1)
        agg = self.tape.aggregate(open_ms // 1000, end_s)
        return None if agg is None else (agg, close_ms - 1)

    def kline_row(self, open_ms: int, agg: Agg, close_ms: int) -> list[object]:
        return [
            open_ms,
            self.price(agg.open),
            self.price(agg.high),
            self.price(agg.low),
            self.price(agg.close),
            self.qty(agg.lots),
            close_ms,
            self.quote(agg.quote),
            agg.trades,
            self.qty(agg.taker_lots),
            self.quote(agg.taker_quote),
            "0",
        ]

    def kline_event(
        self, interval: str, open_ms: int, agg: Agg, close_ms: int, event_ms: int, final: bool
    ) -> dict[str, object]:
        symbol = self.profile.symbol
        return {
            "e": "kline",
            "E": event_ms,
            "s": symbol,
            "k": {
                "t": open_ms,
                "T": close_ms,
                "s": symbol,
                "i": interval,
                "f": agg.first_id,
                "L": agg.last_id,
                "o": self.price(agg.open),
                "c": self.price(agg.close),
                "h": self.price(agg.high),
                "l": self.price(agg.low),
                "v": self.qty(agg.lots),
                "n": agg.trades,
                "x": final,
                "q": self.quote(agg.quote),
                "V": self.qty(agg.taker_lots),
                "Q": self.quote(agg.taker_quote),
                "B": "0",
            },
        }

    def window(self, now_ms: int) -> tuple[Agg, int, int] | None:
        """The rolling 24 h: its trades, the price before it, and its open time."""
        end_s = now_ms // 1000 + 1
        start_s = end_s - DAY_S
        agg = self.tape.aggregate(start_s, end_s)
        if agg is None:
            return None
        before = start_s - 1
        prev = self.tape.second(before).price if before >= self.tape.listed_s else agg.open
        return agg, prev, now_ms - DAY_S * 1000

    def ticker_fields(self, now_ms: int) -> dict[str, object]:
        """The 24h statistics under their REST names."""
        window = self.window(now_ms)
        top = self.book.book(now_ms // BOOK_TICK_MS)
        bid, bid_lots = int(top.bid_prices[0]), int(top.bid_lots[0])
        ask, ask_lots = int(top.ask_prices[0]), int(top.ask_lots[0])
        if window is None:
            zero = self.price(0)
            return {
                "priceChange": zero, "priceChangePercent": "0.000", "weightedAvgPrice": zero,
                "prevClosePrice": zero, "lastPrice": zero, "lastQty": self.qty(0),
                "bidPrice": self.price(bid), "bidQty": self.qty(bid_lots),
                "askPrice": self.price(ask), "askQty": self.qty(ask_lots),
                "openPrice": zero, "highPrice": zero, "lowPrice": zero,
                "volume": self.qty(0), "quoteVolume": self.quote(0),
                "openTime": now_ms - DAY_S * 1000, "closeTime": now_ms,
                "firstId": -1, "lastId": -1, "count": 0,
            }  # fmt: skip
        agg, prev, open_ms = window
        change = agg.close - agg.open
        # Weighted average price, eight decimals: quote units are ticks × lots.
        weighted = agg.quote * 10 ** (8 - self.pd) // agg.lots if self.pd <= 8 else 0
        return {
            "priceChange": self.price(change),
            "priceChangePercent": f"{change * 100 / agg.open:.3f}",
            "weightedAvgPrice": decimal_text(weighted, 8),
            "prevClosePrice": self.price(prev),
            "lastPrice": self.price(agg.close),
            "lastQty": self.qty(agg.last_lots),
            "bidPrice": self.price(bid),
            "bidQty": self.qty(bid_lots),
            "askPrice": self.price(ask),
            "askQty": self.qty(ask_lots),
            "openPrice": self.price(agg.open),
            "highPrice": self.price(agg.high),
            "lowPrice": self.price(agg.low),
            "volume": self.qty(agg.lots),
            "quoteVolume": self.quote(agg.quote),
            "openTime": open_ms,
            "closeTime": now_ms,
            "firstId": agg.first_id,
            "lastId": agg.last_id,
            "count": agg.trades,
        }


# REST name -> WebSocket letter, in the order Binance sends a 24hrTicker event.
_TICKER_LETTERS: Final = (
    ("p", "priceChange"), ("P", "priceChangePercent"), ("w", "weightedAvgPrice"),
    ("x", "prevClosePrice"), ("c", "lastPrice"), ("Q", "lastQty"),
    ("b", "bidPrice"), ("B", "bidQty"), ("a", "askPrice"), ("A", "askQty"),
    ("o", "openPrice"), ("h", "highPrice"), ("l", "lowPrice"),
    ("v", "volume"), ("q", "quoteVolume"), ("O", "openTime"), ("C", "closeTime"),
    ("F", "firstId"), ("L", "lastId"), ("n", "count"),
)  # fmt: skip
_MINI_LETTERS: Final = (
    ("c", "lastPrice"), ("o", "openPrice"), ("h", "highPrice"), ("l", "lowPrice"),
    ("v", "volume"), ("q", "quoteVolume"),
)  # fmt: skip


class SyntheticMarket:
    """A deterministic synthetic market for any symbol (see the module docstring).

    `symbols` are listed by `exchangeInfo`; other symbols are unknown (REST
    -1121, WebSocket silence) unless `any_symbol` is set, which makes every
    well-formed symbol exist. `seed` picks the random walk; the same seed gives the
    same candles in every run.
    """

    def __init__(
        self,
        symbols: Iterable[str] = ("HBARUSDT",),
        *,
        clock: Clock | None = None,
        seed: int = 0,
        any_symbol: bool = False,
        book_levels: int = 1000,
        profiles: Iterable[SymbolProfile] = (),
    ) -> None:
        self.clock = clock if clock is not None else Clock()
        self.seed = seed
        self.any_symbol = any_symbol
        self.book_levels = book_levels
        self._listed = [s.upper() for s in symbols]
        self._profiles = {p.symbol: p for p in profiles}
        self._symbols: dict[str, _Symbol] = {}

    # ------------------------------------------------------------------ symbols
    def listed_symbols(self) -> list[str]:
        return list(self._listed)

    def has_symbol(self, symbol: str) -> bool:
        if symbol in self._listed or symbol in self._profiles:
            return True
        return self.any_symbol and SYMBOL_PATTERN.match(symbol) is not None

    def _sym(self, symbol: str) -> _Symbol:
        sym = self._symbols.get(symbol)
        if sym is None:
            profile = self._profiles.get(symbol) or profile_for(symbol)
            sym = self._symbols[symbol] = _Symbol(profile, self.seed, self.book_levels)
        return sym

    def profile(self, symbol: str) -> SymbolProfile:
        """The traits (tick, lot, usual price) the market gives `symbol`."""
        return self._sym(symbol).profile

    def symbol_entry(self, symbol: str) -> dict[str, object]:
        return exchange_symbol_entry(self._sym(symbol).profile)

    # --------------------------------------------------------------------- REST
    def klines(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[object]]:
        sym = self._sym(symbol)
        now = self.clock.now_ms()
        first = candle_open(interval, sym.profile.listed_ms)
        last = candle_open(interval, now)
        if end_ms is not None:
            last = min(last, candle_open(interval, end_ms))
        opens: list[int] = []
        if start_ms is not None:
            o = candle_open(interval, start_ms)
            o = max(first, o if o >= start_ms else next_open(interval, o))
            while o <= last and len(opens) < limit:
                opens.append(o)
                o = next_open(interval, o)
        else:
            o = last
            while o >= first and len(opens) < limit:
                opens.append(o)
                o = candle_open(interval, o - 1)
            opens.reverse()
        rows = []
        for o in opens:
            candle = sym.candle(interval, o, now)
            if candle is not None:
                rows.append(sym.kline_row(o, *candle))
        return rows

    def depth(self, symbol: str, limit: int) -> dict[str, object]:
        return self._sym(symbol).book.snapshot(self.clock.now_ms() // BOOK_TICK_MS, limit)

    def ticker_24hr(self, symbol: str) -> dict[str, object]:
        return {"symbol": symbol, **self._sym(symbol).ticker_fields(self.clock.now_ms())}

    def book_ticker(self, symbol: str) -> dict[str, object]:
        sym = self._sym(symbol)
        b = sym.book.book(self.clock.now_ms() // BOOK_TICK_MS)
        return {
            "symbol": symbol,
            "bidPrice": sym.price(int(b.bid_prices[0])),
            "bidQty": sym.qty(int(b.bid_lots[0])),
            "askPrice": sym.price(int(b.ask_prices[0])),
            "askQty": sym.qty(int(b.ask_lots[0])),
        }

    def recorded_rest(self, path: str, query: Mapping[str, str]) -> RecordedResponse | None:
        return None

    # ---------------------------------------------------------------- WebSocket
    def stream(self, spec: StreamSpec) -> AsyncIterator[bytes] | None:
        if spec.kind == "silent" or not self.has_symbol(spec.symbol):
            return None
        sym = self._sym(spec.symbol)
        if spec.kind == "kline":
            return self._klines(sym, spec.interval, spec.period_ms)
        if spec.kind == "depth":
            return self._partial_depth(sym, spec.levels, spec.period_ms)
        if spec.kind == "diff":
            return self._diffs(sym, spec.period_ms)
        if spec.kind == "bookTicker":
            return self._book_tickers(sym)
        if spec.kind == "aggTrade":
            return self._agg_trades(sym)
        return self._tickers(sym, mini=spec.kind == "miniTicker")

    async def _ticks(self, period_ms: int) -> AsyncIterator[int]:
        """Market times aligned to `period_ms`, one per period (skipping any the clock jumped)."""
        clock = self.clock
        tick = (clock.now_ms() // period_ms + 1) * period_ms
        while True:
            await clock.sleep_until(tick)
            now = clock.now_ms()
            tick = max(tick, now // period_ms * period_ms)
            yield tick
            tick += period_ms

    async def _klines(self, sym: _Symbol, interval: str, period_ms: int) -> AsyncIterator[bytes]:
        clock = self.clock
        current = candle_open(interval, clock.now_ms())
        tick = (clock.now_ms() // period_ms + 1) * period_ms
        while True:
            closes_at = next_open(interval, current)
            await clock.sleep_until(min(tick, closes_at))
            now = clock.now_ms()
            sent = 0
            while closes_at <= now and sent < _MAX_CATCH_UP:
                # The candle closed: its final frame, built exactly as REST builds the row.
                candle = sym.candle(interval, current, closes_at)
                if candle is not None:
                    event = sym.kline_event(interval, current, *candle, closes_at, True)
                    yield orjson.dumps(event)
                current, closes_at, sent = closes_at, next_open(interval, closes_at), sent + 1
            current = candle_open(interval, now)
            if now >= tick:
                tick = now // period_ms * period_ms
                candle = sym.candle(interval, current, tick)
                if candle is not None:
                    yield orjson.dumps(sym.kline_event(interval, current, *candle, tick, False))
                tick += period_ms

    async def _partial_depth(
        self, sym: _Symbol, levels: int, period_ms: int
    ) -> AsyncIterator[bytes]:
        async for tick in self._ticks(period_ms):
            yield orjson.dumps(sym.book.snapshot(tick // BOOK_TICK_MS, levels))

    async def _diffs(self, sym: _Symbol, period_ms: int) -> AsyncIterator[bytes]:
        symbol = sym.profile.symbol
        last = self.clock.now_ms() // period_ms * period_ms // BOOK_TICK_MS
        async for tick in self._ticks(period_ms):
            j = tick // BOOK_TICK_MS
            if j <= last:
                continue
            first_id, final_id, bids, asks = sym.book.diff(last, j)
            if not bids and not asks:
                # Nothing changed: no event, and the next one starts where this would have.
                continue
            last = j
            event = {"e": "depthUpdate", "E": tick, "s": symbol, "U": first_id, "u": final_id}
            event["b"], event["a"] = bids, asks
            yield orjson.dumps(event)

    async def _tickers(self, sym: _Symbol, *, mini: bool) -> AsyncIterator[bytes]:
        symbol = sym.profile.symbol
        letters = _MINI_LETTERS if mini else _TICKER_LETTERS
        kind = "24hrMiniTicker" if mini else "24hrTicker"
        async for tick in self._ticks(1000):
            fields = sym.ticker_fields(tick)
            event: dict[str, object] = {"e": kind, "E": tick, "s": symbol}
            for letter, name in letters:
                event[letter] = fields[name]
            yield orjson.dumps(event)

    async def _book_tickers(self, sym: _Symbol) -> AsyncIterator[bytes]:
        symbol = sym.profile.symbol
        last: tuple[int, int, int, int] | None = None
        async for tick in self._ticks(BOOK_TICK_MS):
            b = sym.book.book(tick // BOOK_TICK_MS)
            top = (
                int(b.bid_prices[0]),
                int(b.bid_lots[0]),
                int(b.ask_prices[0]),
                int(b.ask_lots[0]),
            )
            if top == last:
                continue
            last = top
            yield orjson.dumps(
                {
                    "u": b.update_id,
                    "s": symbol,
                    "b": sym.price(top[0]),
                    "B": sym.qty(top[1]),
                    "a": sym.price(top[2]),
                    "A": sym.qty(top[3]),
                }
            )

    async def _agg_trades(self, sym: _Symbol) -> AsyncIterator[bytes]:
        symbol = sym.profile.symbol
        listed_s = sym.tape.listed_s
        async for tick in self._ticks(1000):
            s = tick // 1000
            if s < listed_s:
                continue
            trade = sym.tape.second(s)
            yield orjson.dumps(
                {
                    "e": "aggTrade",
                    "E": tick,
                    "s": symbol,
                    "a": s - listed_s,
                    "p": sym.price(trade.price),
                    "q": sym.qty(trade.lots),
                    "f": s * TRADE_ID_STRIDE,
                    "l": s * TRADE_ID_STRIDE + trade.trades - 1,
                    "T": tick,
                    "m": trade.buyer_is_maker,
                    "M": True,
                }
            )
