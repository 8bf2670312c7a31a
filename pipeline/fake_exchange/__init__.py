"""A fake Binance.US: REST and WebSocket close enough to the real thing that a client cannot tell.

For tests, demos and benchmarks. The server speaks the documented protocol
(`rest-api.md`, `web-socket-streams.md`, `errors.md` of binance-us-api-docs):

- REST `GET /api/v3/ping`, `time`, `exchangeInfo`, `klines`, `depth`,
  `ticker/24hr`, `ticker/bookTicker`, `ticker/price`; Binance's parameter
  checks and error bodies; request weight per IP and minute in
  `X-MBX-USED-WEIGHT-1M`, 429 then 418 with `Retry-After` over the limit.
- WebSocket `/ws/<stream>` (raw), `/ws` plus `SUBSCRIBE`, `/stream?streams=a/b`
  (combined `{"stream", "data"}`); `<sym>@kline_<i>`, `@depth<n>[@100ms]`,
  `@depth[@100ms]` diffs, `@ticker`, `@miniTicker`, `@bookTicker`, `@aggTrade`;
  `SUBSCRIBE`/`UNSUBSCRIBE`/`LIST_SUBSCRIPTIONS`/`SET_PROPERTY`/`GET_PROPERTY`;
  5 incoming messages a second, 1024 streams, ping/pong, 24 h lifetime.
- Markets: `SyntheticMarket` (a deterministic random walk for any symbol, on a
  `Clock` that tests can start anywhere and speed up) and `CaptureMarket`
  (recorded traffic at recorded pace).
- `Faults`: dropped sockets, silence, garbage, duplicates, reconnect overlap,
  injected 429/418; `Stats` counts what was done.

    async with FakeExchange(SyntheticMarket(["HBARUSDT"])) as ex:
        ...  # ex.rest_url, ex.ws_url
"""

from __future__ import annotations

from pipeline.fake_exchange._capture_market import CaptureMarket
from pipeline.fake_exchange._cli import (
    add_fake_exchange_arguments,
    fake_exchange_settings,
    run_fake_exchange,
)
from pipeline.fake_exchange._clock import Clock
from pipeline.fake_exchange._faults import Faults
from pipeline.fake_exchange._limits import Limits
from pipeline.fake_exchange._market import Market
from pipeline.fake_exchange._server import FakeExchange, serve
from pipeline.fake_exchange._stats import Stats
from pipeline.fake_exchange._streams import StreamSpec, candle_open, parse_stream
from pipeline.fake_exchange._symbols import SymbolProfile, profile_for
from pipeline.fake_exchange._synthetic import SyntheticMarket

__all__ = [
    "CaptureMarket",
    "Clock",
    "FakeExchange",
    "Faults",
    "Limits",
    "Market",
    "Stats",
    "StreamSpec",
    "SymbolProfile",
    "SyntheticMarket",
    "add_fake_exchange_arguments",
    "candle_open",
    "fake_exchange_settings",
    "parse_stream",
    "profile_for",
    "run_fake_exchange",
    "serve",
]
