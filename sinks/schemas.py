"""The schema of every frame, declared once.

These are the original DataManager's columns with exact Polars types (see
DESIGN.md, "Frames"). Every frame the project builds, dumps or stores is built
strictly against one of these.
"""

from __future__ import annotations

from typing import Final

import polars as pl

__all__ = [
    "BOOK",
    "BUFFER_NAMES",
    "DEFAULT_CAPACITY",
    "KLINES",
    "ORDER_BOOK",
    "SCHEMAS",
    "SIDE",
    "TICKER",
]

TIMESTAMP: Final = pl.Datetime("ms", "UTC")
SIDE: Final = pl.Enum(["bid", "ask"])

KLINES: Final = pl.Schema(
    {
        "timestamp": TIMESTAMP,
        "open": pl.Float64(),
        "high": pl.Float64(),
        "low": pl.Float64(),
        "close": pl.Float64(),
        "volume": pl.Float64(),
    }
)

ORDER_BOOK: Final = pl.Schema(
    {
        "timestamp": TIMESTAMP,
        "update_id": pl.Int64(),
        "side": SIDE,
        "level": pl.Int32(),
        "price": pl.Float64(),
        "quantity": pl.Float64(),
    }
)

TICKER: Final = pl.Schema(
    {
        "timestamp": TIMESTAMP,
        "event_id": pl.Int64(),
        "best_bid": pl.Float64(),
        "bid_qty": pl.Float64(),
        "best_ask": pl.Float64(),
        "ask_qty": pl.Float64(),
        "last_price": pl.Float64(),
        "last_qty": pl.Float64(),
        "volume_24h": pl.Float64(),
        "quote_volume_24h": pl.Float64(),
    }
)

BOOK: Final = pl.Schema(
    {
        "side": SIDE,
        "price": pl.Float64(),
        "quantity": pl.Float64(),
        "update_id": pl.Int64(),
    }
)
"""The local L2 book (beyond the original): bids best first, then asks best first."""

SCHEMAS: Final[dict[str, pl.Schema]] = {
    "klines_1m": KLINES,
    "klines_1h": KLINES,
    "klines_1d": KLINES,
    "order_book": ORDER_BOOK,
    "ticker": TICKER,
    "book": BOOK,
}

BUFFER_NAMES: Final = ("klines_1m", "klines_1h", "klines_1d", "order_book", "ticker")
"""The original DataManager's buffers, in its order."""

DEFAULT_CAPACITY: Final[dict[str, int]] = {
    "klines_1m": 60,
    "klines_1h": 72,
    "klines_1d": 60,
    "order_book": 1000,
    "ticker": 1000,
}
"""Rows kept per buffer unless configured otherwise."""
