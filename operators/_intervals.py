"""Kline interval names (as Binance spells them) and their lengths in milliseconds.

Only fixed-length intervals are listed: gap detection adds the interval to an
open time, which a calendar month (`1M`, 28 to 31 days) does not allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["INTERVAL_MS", "interval_ms", "interval_name"]

_SECOND: Final = 1_000
_MINUTE: Final = 60 * _SECOND
_HOUR: Final = 60 * _MINUTE
_DAY: Final = 24 * _HOUR

INTERVAL_MS: Final[Mapping[str, int]] = MappingProxyType(
    {
        # 1s exists on binance.com only; harmless to know elsewhere.
        "1s": _SECOND,
        "1m": _MINUTE,
        "3m": 3 * _MINUTE,
        "5m": 5 * _MINUTE,
        "15m": 15 * _MINUTE,
        "30m": 30 * _MINUTE,
        "1h": _HOUR,
        "2h": 2 * _HOUR,
        "4h": 4 * _HOUR,
        "6h": 6 * _HOUR,
        "8h": 8 * _HOUR,
        "12h": 12 * _HOUR,
        "1d": _DAY,
        "3d": 3 * _DAY,
        "1w": 7 * _DAY,
    }
)
"""Every fixed-length Binance kline interval, name to milliseconds."""

_NAMES: Final[Mapping[int, str]] = MappingProxyType({ms: n for n, ms in INTERVAL_MS.items()})
_KNOWN: Final = ", ".join(INTERVAL_MS)


def interval_ms(interval: str) -> int:
    """Return the length of a kline interval in milliseconds: `interval_ms("1m") == 60_000`.

    Raises:
        ValueError: `interval` is `1M` (a month has no fixed length) or not a
            Binance interval name at all; the message names the value.
    """
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        if interval == "1M":
            raise ValueError(
                "kline interval '1M' (one month) is not supported: a month is 28 to 31 "
                "days long, so its candles have no fixed length in milliseconds"
            ) from None
        raise ValueError(f"unknown kline interval {interval!r}: expected one of {_KNOWN}") from None


def interval_name(ms: int) -> str:
    """Return the Binance name of an interval length: `interval_name(3_600_000) == "1h"`.

    Raises:
        ValueError: no fixed-length Binance interval lasts `ms` milliseconds.
    """
    try:
        return _NAMES[ms]
    except KeyError:
        raise ValueError(
            f"no kline interval lasts {ms!r} ms: expected one of "
            + ", ".join(f"{v} ({n})" for n, v in INTERVAL_MS.items())
        ) from None
