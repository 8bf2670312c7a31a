"""REST request weights and the per-IP weight limit, 429 then 418.

Weights follow each venue's documentation: Binance.US (`rest-api.md`, 2023-09)
and Binance spot, which charges more for the same endpoints. A client over its
limit gets 429 with `Retry-After` (seconds to the end of the window); one that
keeps asking before then is banned: 418 with `Retry-After`, the ban doubling for
repeat offenders (2 minutes up to 3 days, as the docs say).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple, TypeAlias

__all__ = ["Venue", "Verdict", "WeightLimiter", "default_weight_limit", "request_weight"]

Venue: TypeAlias = Literal["binanceus", "binance"]
_MAX_BAN_S: Final = 3 * 24 * 3600

# path -> (weight with `symbol`, weight without) for the flat endpoints.
_FLAT: Final[dict[Venue, dict[str, tuple[int, int]]]] = {
    "binanceus": {
        "/api/v3/ping": (1, 1),
        "/api/v3/time": (1, 1),
        "/api/v3/exchangeInfo": (10, 10),
        "/api/v3/klines": (1, 1),
        "/api/v3/ticker/bookTicker": (1, 2),
        "/api/v3/ticker/price": (1, 2),
    },
    "binance": {
        "/api/v3/ping": (1, 1),
        "/api/v3/time": (1, 1),
        "/api/v3/exchangeInfo": (20, 20),
        "/api/v3/klines": (2, 2),
        "/api/v3/ticker/bookTicker": (2, 4),
        "/api/v3/ticker/price": (2, 4),
    },
}
# depth: (largest limit, weight) steps.
_DEPTH: Final[dict[Venue, tuple[tuple[int, int], ...]]] = {
    "binanceus": ((100, 1), (500, 5), (1000, 10), (5000, 50)),
    "binance": ((100, 5), (500, 25), (1000, 50), (5000, 250)),
}
# ticker/24hr: (one symbol or up to 20, 21-100 symbols, more or all).
_TICKER_24HR: Final[dict[Venue, tuple[int, int, int]]] = {
    "binanceus": (1, 20, 40),
    "binance": (2, 40, 80),
}
_DEFAULT_LIMIT: Final[dict[Venue, int]] = {"binanceus": 1200, "binance": 6000}


def default_weight_limit(venue: Venue) -> int:
    """REQUEST_WEIGHT per minute the venue allows one IP."""
    return _DEFAULT_LIMIT[venue]


def request_weight(venue: Venue, path: str, query: Mapping[str, str]) -> int:
    """The weight `venue` charges for a GET of `path` with `query` (1 for unknown paths)."""
    if path == "/api/v3/depth":
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            limit = 100
        for top, weight in _DEPTH[venue]:
            if limit <= top:
                return weight
        return _DEPTH[venue][-1][1]
    if path == "/api/v3/ticker/24hr":
        one, some, many = _TICKER_24HR[venue]
        if "symbol" in query:
            return one
        if "symbols" in query:
            n = query["symbols"].count(",") + 1
            return one if n <= 20 else some if n <= 100 else many
        return many
    with_symbol, without = _FLAT[venue].get(path, (1, 1))
    return with_symbol if "symbol" in query else without


class Verdict(NamedTuple):
    """The limiter's answer for one request."""

    status: Literal[200, 429, 418]
    used: int
    """Weight used in the current window, this request included."""
    retry_after: int
    """Seconds to wait (429: to the window's end; 418: to the ban's end); 0 when allowed."""
    banned_until_ms: int = 0


@dataclass
class _Ip:
    window: int = -1
    used: int = 0
    warned: bool = False
    bans: int = 0
    banned_until: float = 0.0


class WeightLimiter:
    """Request weight per IP in fixed windows (a minute by default), on the wall clock."""

    def __init__(
        self,
        limit: int,
        *,
        window_s: float = 60.0,
        ban_s: float = 120.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.ban_s = ban_s
        self._now = now
        self._ips: dict[str, _Ip] = {}

    def used(self, ip: str) -> int:
        """Weight `ip` has used in the current window."""
        st = self._ips.get(ip)
        if st is None or st.window != int(self._now() // self.window_s):
            return 0
        return st.used

    def charge(self, ip: str, weight: int) -> Verdict:
        """Count `weight` against `ip` and say whether the request may be served."""
        now = self._now()
        st = self._ips.setdefault(ip, _Ip())
        window = int(now // self.window_s)
        if window != st.window:
            st.window, st.used, st.warned = window, 0, False
        if st.banned_until > now:
            return Verdict(
                418, st.used, math.ceil(st.banned_until - now), int(st.banned_until * 1000)
            )
        st.used += weight
        if st.used <= self.limit:
            return Verdict(200, st.used, 0)
        if not st.warned:
            st.warned = True
            return Verdict(429, st.used, max(1, math.ceil((window + 1) * self.window_s - now)))
        # Asked again after a 429, before the window ended: banned, longer each time.
        st.bans += 1
        ban = min(self.ban_s * 2 ** (st.bans - 1), _MAX_BAN_S)
        st.banned_until = now + ban
        return Verdict(418, st.used, math.ceil(ban), int(st.banned_until * 1000))
