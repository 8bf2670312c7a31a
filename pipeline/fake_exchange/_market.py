"""What the server asks of a market: the seam between the protocol and the data.

The REST and WebSocket handlers speak Binance; a `Market` only answers questions
in Binance's payload layouts. Two markets exist: `SyntheticMarket` (a
deterministic random walk for any symbol) and `CaptureMarket` (recorded traffic
played back at its recorded pace).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from pipeline.fake_exchange._clock import Clock
from pipeline.fake_exchange._streams import StreamSpec

__all__ = ["Market", "RecordedResponse"]

RecordedResponse = tuple[int, str]
"""`(HTTP status, body text)` of a recorded REST response."""


class Market(Protocol):
    """The data behind the fake exchange. Bodies are Binance's layouts, ready for JSON."""

    clock: Clock

    def listed_symbols(self) -> list[str]:
        """Symbols `/api/v3/exchangeInfo` lists when asked for all."""
        ...

    def has_symbol(self, symbol: str) -> bool:
        """Whether `symbol` exists (otherwise REST answers -1121 Invalid symbol)."""
        ...

    def symbol_entry(self, symbol: str) -> dict[str, object]:
        """The symbol's object in `exchangeInfo`."""
        ...

    def klines(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[object]]:
        """`/api/v3/klines` rows, oldest first; the forming candle last when it is in range."""
        ...

    def depth(self, symbol: str, limit: int) -> dict[str, object]:
        """`/api/v3/depth` body."""
        ...

    def ticker_24hr(self, symbol: str) -> dict[str, object]:
        """`/api/v3/ticker/24hr` body for one symbol (the FULL layout)."""
        ...

    def book_ticker(self, symbol: str) -> dict[str, object]:
        """`/api/v3/ticker/bookTicker` body for one symbol."""
        ...

    def stream(self, spec: StreamSpec) -> AsyncIterator[bytes] | None:
        """The raw payloads (no combined-stream wrapper) of a stream, paced in market time.

        None: the stream is accepted but never fed (an unknown symbol, a stream kind
        this market does not produce), which is what Binance does too.
        """
        ...

    def recorded_rest(self, path: str, query: Mapping[str, str]) -> RecordedResponse | None:
        """A recorded response to serve instead of computing one (capture markets only)."""
        ...
