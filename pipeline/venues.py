"""Binance-API venues: where they live and the limits they enforce.

A `Venue` is everything the live sources must know about an exchange that speaks
the Binance spot API: base URLs, the REST weight budget and what each request
costs, and the WebSocket limits. The numbers come from each venue's published
API documentation (rest-api.md "LIMITS" and the endpoint weights,
web-socket-streams.md "Websocket Limits"):

| | binanceus | binance |
| --- | --- | --- |
| REST | https://api.binance.us | https://api.binance.com |
| WebSocket | wss://stream.binance.us:9443 | wss://stream.binance.com:9443 |
| REQUEST_WEIGHT per minute | 1200 | 6000 |
| klines / ticker 24hr (one symbol) / time | 1 / 1 / 1 | 2 / 2 / 1 |
| exchangeInfo | 10 | 20 |
| depth, limit up to 100 / 500 / 1000 / 5000 | 1 / 5 / 10 / 50 | 5 / 25 / 50 / 250 |

Both take at most 5 incoming messages a second per connection (pings, pongs and
JSON requests alike), 1024 streams per connection, and drop every connection at
24 hours. The server's `X-MBX-USED-WEIGHT-1M` header stays the authority: the
table only lets the client predict a request's cost before sending it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from pipeline.errors import UsageError

__all__ = ["BINANCE", "BINANCE_US", "VENUES", "Venue", "get_venue"]


@dataclass(frozen=True)
class Venue:
    """One Binance-API exchange: endpoints, REST weights and WebSocket limits."""

    name: str
    rest_url: str
    """Base URL of the REST API, no trailing slash."""
    ws_url: str
    """Base URL of the market-data WebSocket, no path."""
    weight_limit: int
    """REQUEST_WEIGHT allowed per IP per minute."""
    klines_weight: int
    ticker_weight: int
    """`/api/v3/ticker/24hr` for a single symbol."""
    exchange_info_weight: int
    time_weight: int
    depth_weights: tuple[tuple[int, int], ...]
    """`(largest limit, weight)` tiers of `/api/v3/depth`, ascending."""
    ws_messages_per_second: int = 5
    """Incoming messages a connection may send the server per second (pongs count)."""
    ws_max_streams: int = 1024
    """Streams one connection may carry."""
    ws_lifetime: float = 86_400.0
    """Seconds after which the server drops a connection."""

    def depth_weight(self, limit: int) -> int:
        """Weight of `/api/v3/depth` with `limit` levels."""
        for largest, weight in self.depth_weights:
            if limit <= largest:
                return weight
        return self.depth_weights[-1][1]

    def request_weight(self, path: str, params: Mapping[str, object]) -> int:
        """Predicted weight of a GET of `path` with `params` (unknown paths weigh 1)."""
        if path == "/api/v3/klines":
            return self.klines_weight
        if path == "/api/v3/depth":
            limit = params.get("limit", 100)
            return self.depth_weight(limit if isinstance(limit, int) else 100)
        if path == "/api/v3/ticker/24hr":
            # Without a symbol the endpoint returns every market: the documented worst case.
            return self.ticker_weight if "symbol" in params else 40 * self.ticker_weight
        if path == "/api/v3/exchangeInfo":
            return self.exchange_info_weight
        if path == "/api/v3/time":
            return self.time_weight
        return 1

    def with_urls(self, rest_url: str | None = None, ws_url: str | None = None) -> Venue:
        """The same venue at other base URLs (a fake exchange, a proxy)."""
        return replace(
            self,
            rest_url=(rest_url or self.rest_url).rstrip("/"),
            ws_url=(ws_url or self.ws_url).rstrip("/"),
        )


BINANCE_US: Final = Venue(
    name="binanceus",
    rest_url="https://api.binance.us",
    ws_url="wss://stream.binance.us:9443",
    weight_limit=1200,
    klines_weight=1,
    ticker_weight=1,
    exchange_info_weight=10,
    time_weight=1,
    depth_weights=((100, 1), (500, 5), (1000, 10), (5000, 50)),
)
"""Binance.US, the default venue."""

BINANCE: Final = Venue(
    name="binance",
    rest_url="https://api.binance.com",
    ws_url="wss://stream.binance.com:9443",
    weight_limit=6000,
    klines_weight=2,
    ticker_weight=2,
    exchange_info_weight=20,
    time_weight=1,
    depth_weights=((100, 5), (500, 25), (1000, 50), (5000, 250)),
)
"""Binance (global)."""

VENUES: Final[Mapping[str, Venue]] = MappingProxyType(
    {venue.name: venue for venue in (BINANCE_US, BINANCE)}
)
"""Venue presets by the name `--venue` takes."""


def get_venue(name: str) -> Venue:
    """The preset called `name`; raises `UsageError` naming the choices."""
    try:
        return VENUES[name.strip().lower()]
    except KeyError:
        raise UsageError(f"unknown venue {name!r}: expected one of {', '.join(VENUES)}") from None
