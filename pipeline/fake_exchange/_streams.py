"""Kline intervals and WebSocket stream names, as Binance spells them.

`parse_stream` decides what a subscription means: a stream the fake exchange
produces, a well-formed stream it accepts but never feeds (Binance answers a
subscription to an unknown symbol with `result: null` and then silence), or an
invalid name (Binance answers `{"code": 2, "msg": "Invalid request: invalid stream"}`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias

__all__ = [
    "INTERVAL_MS",
    "REST_INTERVALS",
    "StreamKind",
    "StreamSpec",
    "candle_close",
    "candle_open",
    "next_open",
    "parse_stream",
]

_S: Final = 1000
_M: Final = 60 * _S
_H: Final = 60 * _M
_D: Final = 24 * _H
_WEEK_ORIGIN: Final = 4 * _D
"""1970-01-01 was a Thursday; weekly candles open on Mondays (1970-01-05)."""

INTERVAL_MS: Final[dict[str, int]] = {
    "1s": _S,
    "1m": _M, "3m": 3 * _M, "5m": 5 * _M, "15m": 15 * _M, "30m": 30 * _M,
    "1h": _H, "2h": 2 * _H, "4h": 4 * _H, "6h": 6 * _H, "8h": 8 * _H, "12h": 12 * _H,
    "1d": _D, "3d": 3 * _D, "1w": 7 * _D,
    "1M": 31 * _D,  # nominal: months are calendar months, see candle_open
}  # fmt: skip
"""Every interval the streams accept; the value is the length (the longest for `1M`)."""

REST_INTERVALS: Final = frozenset(INTERVAL_MS) - {"1s"}
"""Binance.US documents `/api/v3/klines` intervals from `1m` up."""


def candle_open(interval: str, t_ms: int) -> int:
    """Open time of the `interval` candle that contains `t_ms`."""
    if interval == "1M":
        d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
        return int(datetime(d.year, d.month, 1, tzinfo=UTC).timestamp() * 1000)
    length = INTERVAL_MS[interval]
    if interval == "1w":
        return (t_ms - _WEEK_ORIGIN) // length * length + _WEEK_ORIGIN
    return t_ms // length * length


def next_open(interval: str, open_ms: int) -> int:
    """Open time of the candle after the one opening at `open_ms`."""
    if interval == "1M":
        d = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    return open_ms + INTERVAL_MS[interval]


def candle_close(interval: str, open_ms: int) -> int:
    """Close time as Binance prints it: the last millisecond of the candle."""
    return next_open(interval, open_ms) - 1


StreamKind: TypeAlias = Literal[
    "kline", "depth", "diff", "ticker", "miniTicker", "bookTicker", "aggTrade", "silent"
]


@dataclass(frozen=True)
class StreamSpec:
    """A parsed stream name."""

    name: str
    symbol: str
    """Upper case (`HBARUSDT`); empty for all-market streams."""
    kind: StreamKind
    """`silent`: well-formed, accepted, never fed by the synthetic market."""
    interval: str = ""
    levels: int = 0
    period_ms: int = 0
    """How often the stream pushes (kline 2 s, depth 100 or 1000 ms, ticker 1 s; 0: per trade)."""


_STREAM: Final = re.compile(
    r"^(?P<sym>[a-z0-9]+)@(?:"
    r"kline_(?P<interval>\w+)"
    r"|depth(?P<levels>5|10|20)?(?:@(?P<speed>100ms|1000ms))?"
    r"|(?P<simple>ticker|miniTicker|bookTicker|aggTrade)"
    r"|(?P<other>trade|avgPrice|ticker_(?:1h|4h|1d))"
    r")$"
)
_PERIODS: Final[dict[str, int]] = {
    "ticker": 1000,
    "miniTicker": 1000,
    # Real time on Binance; here the book changes every 100 ms and trades every second.
    "bookTicker": 100,
    "aggTrade": 1000,
}
_ALL_MARKET: Final = frozenset(
    {"!ticker@arr", "!miniTicker@arr", "!bookTicker", "!ticker_1h@arr", "!ticker_4h@arr"}
)


def parse_stream(name: str) -> StreamSpec | None:
    """What `name` subscribes to; None when Binance would call it an invalid stream."""
    if name in _ALL_MARKET:
        return StreamSpec(name, "", "silent")
    m = _STREAM.match(name)
    if m is None:
        return None
    symbol = m["sym"].upper()
    if m["interval"] is not None:
        if m["interval"] not in INTERVAL_MS:
            return None
        period = 1000 if m["interval"] == "1s" else 2000
        return StreamSpec(name, symbol, "kline", interval=m["interval"], period_ms=period)
    if m["simple"] is not None:
        kind: StreamKind = m["simple"]  # type: ignore[assignment]
        return StreamSpec(name, symbol, kind, period_ms=_PERIODS[kind])
    if m["other"] is not None:
        return StreamSpec(name, symbol, "silent")
    period = 100 if m["speed"] == "100ms" else 1000
    if m["levels"] is not None:
        return StreamSpec(name, symbol, "depth", levels=int(m["levels"]), period_ms=period)
    return StreamSpec(name, symbol, "diff", period_ms=period)
