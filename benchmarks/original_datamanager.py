"""The baseline: the user's original pandas DataManager, reduced to its per-message work.

The original (`data_manager.py`, described in ../shared/original/README_datamanager.txt)
keeps each buffer as a pandas DataFrame and, for every WebSocket message, parses the
JSON with the standard library, builds a small DataFrame from it (one row; 40 rows
for a 20-level book), appends it with `pd.concat`, removes duplicates on the
buffer's key with `drop_duplicates` and trims with `tail(N)`:

| buffer | key | rows kept |
| --- | --- | --- |
| `klines_1m` (final klines only) | `timestamp` | 60 |
| `order_book` (depth20) | `update_id`, `side`, `level` | 1000 |
| `ticker` | `event_id` | 1000 |

This port keeps exactly that per-message work and drops only the sockets: the
original had one socket per stream, here the streams arrive combined in a capture,
so `on_line` unwraps `{"stream": .., "data": ..}` and dispatches on the stream name
(a dict lookup, a negligible share of the ~1 ms a message costs). The original
stamped book rows with the wall clock on receipt; here the capture's receive time
(floored to the millisecond, as the new pipeline does) stands in for it, so both
designs can be compared row for row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson
import pandas as pd

__all__ = ["BOOK_LEVELS", "SIZES", "OriginalDataManager"]

SIZES: Final[dict[str, int]] = {"klines_1m": 60, "order_book": 1000, "ticker": 1000}
"""The original's buffer sizes (1h/1d klines come from REST and are not replayed here)."""

BOOK_LEVELS: Final = 20

_KLINE_COLUMNS: Final = ["timestamp", "open", "high", "low", "close", "volume"]
_BOOK_COLUMNS: Final = ["timestamp", "update_id", "side", "level", "price", "quantity"]
_TICKER_COLUMNS: Final = [
    "timestamp",
    "event_id",
    "best_bid",
    "bid_qty",
    "best_ask",
    "ask_qty",
    "last_price",
    "last_qty",
    "volume_24h",
    "quote_volume_24h",
]


def _empty(columns: list[str]) -> pd.DataFrame:
    # Typed from the start (the generous reading of the original): an untyped
    # `DataFrame(columns=...)` would leave every column `object` after concat.
    dtypes = dict.fromkeys(columns, "float64")
    dtypes.update(timestamp="datetime64[us, UTC]", update_id="int64", event_id="int64")
    dtypes.update(side="object", level="int64")
    return pd.DataFrame({name: pd.Series(dtype=dtypes[name]) for name in columns})


class OriginalDataManager:
    """The original's buffers and per-message handlers, fed from capture lines."""

    def __init__(self) -> None:
        self.klines_1m = _empty(_KLINE_COLUMNS)
        self.order_book = _empty(_BOOK_COLUMNS)
        self.ticker = _empty(_TICKER_COLUMNS)
        self.messages = 0
        """Capture lines seen."""
        self.errors = 0
        """Messages whose handling raised (the original logged these and carried on)."""
        self._handlers: dict[str, Callable[[dict[str, Any], int], None]] = {
            "depth20@100ms": self.on_order_book,
            "ticker": self.on_ticker,
            "kline_1m": self.on_kline_1m,
        }

    def get_buffer(self, buffer_type: str) -> pd.DataFrame:
        """A copy of one buffer, as the original's `get_buffer` returned it."""
        frame: pd.DataFrame = getattr(self, buffer_type)
        return frame.copy()

    def on_line(self, line: bytes | str) -> None:
        """Handle one capture line (a recorded WebSocket frame; other kinds are skipped)."""
        self.messages += 1
        record = orjson.loads(line)
        if record.get("kind") != "ws":
            return
        try:
            message = json.loads(record["data"])
            handler = self._handlers.get(message["stream"].partition("@")[2])
            if handler is not None:
                handler(message["data"], record["t"])
        except (ValueError, KeyError, TypeError, AttributeError):
            self.errors += 1

    def run(self, lines: Iterable[bytes | str]) -> None:
        """Feed every line in turn."""
        on_line = self.on_line
        for line in lines:
            on_line(line)

    def on_order_book(self, data: dict[str, Any], receive_ns: int) -> None:
        """A depth20 frame: 20 bid rows, then 20 ask rows, all sharing its update id."""
        timestamp = pd.Timestamp(receive_ns // 1_000_000, unit="ms", tz="UTC")
        update_id = data["lastUpdateId"]
        rows = [
            {
                "timestamp": timestamp,
                "update_id": update_id,
                "side": side,
                "level": level,
                "price": float(price),
                "quantity": float(quantity),
            }
            for side, levels in (("bid", data["bids"]), ("ask", data["asks"]))
            for level, (price, quantity) in enumerate(levels[:BOOK_LEVELS])
        ]
        new = pd.DataFrame(rows, columns=_BOOK_COLUMNS)
        self.order_book = (
            pd.concat([self.order_book, new], ignore_index=True)
            .drop_duplicates(subset=["update_id", "side", "level"])
            .tail(SIZES["order_book"])
        )

    def on_ticker(self, data: dict[str, Any], receive_ns: int) -> None:
        """A 24hrTicker event: one row keyed by its event time."""
        new = pd.DataFrame(
            [
                {
                    "timestamp": pd.to_datetime(data["E"], unit="ms", utc=True),
                    "event_id": data["E"],
                    "best_bid": float(data["b"]),
                    "bid_qty": float(data["B"]),
                    "best_ask": float(data["a"]),
                    "ask_qty": float(data["A"]),
                    "last_price": float(data["c"]),
                    "last_qty": float(data["Q"]),
                    "volume_24h": float(data["v"]),
                    "quote_volume_24h": float(data["q"]),
                }
            ],
            columns=_TICKER_COLUMNS,
        )
        self.ticker = (
            pd.concat([self.ticker, new], ignore_index=True)
            .drop_duplicates(subset=["event_id"])
            .tail(SIZES["ticker"])
        )

    def on_kline_1m(self, data: dict[str, Any], receive_ns: int) -> None:
        """A kline event: only a final candle (`x: true`) enters the buffer."""
        kline = data["k"]
        if not kline["x"]:
            return
        new = pd.DataFrame(
            [
                {
                    "timestamp": pd.to_datetime(kline["t"], unit="ms", utc=True),
                    "open": float(kline["o"]),
                    "high": float(kline["h"]),
                    "low": float(kline["l"]),
                    "close": float(kline["c"]),
                    "volume": float(kline["v"]),
                }
            ],
            columns=_KLINE_COLUMNS,
        )
        self.klines_1m = (
            pd.concat([self.klines_1m, new], ignore_index=True)
            .drop_duplicates(subset=["timestamp"])
            .tail(SIZES["klines_1m"])
        )
