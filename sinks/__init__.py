"""Where events end up: fixed-size frames, Parquet files, captures.

Importing `sinks` also registers the local book's frame, so `new_frame("book")` works.
"""

from __future__ import annotations

from sinks.book_frame import BookFrame
from sinks.dump import dump_frames
from sinks.rolling_frame import (
    FrameFactory,
    KlineFrame,
    OrderBookFrame,
    RollingFrame,
    TickerFrame,
    new_frame,
    register_frame,
)
from sinks.schemas import BOOK, DEFAULT_CAPACITY, KLINES, ORDER_BOOK, SCHEMAS, TICKER

__all__ = [
    "BOOK",
    "DEFAULT_CAPACITY",
    "KLINES",
    "ORDER_BOOK",
    "SCHEMAS",
    "TICKER",
    "BookFrame",
    "FrameFactory",
    "KlineFrame",
    "OrderBookFrame",
    "RollingFrame",
    "TickerFrame",
    "dump_frames",
    "new_frame",
    "register_frame",
]
