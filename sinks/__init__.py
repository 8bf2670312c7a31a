"""Where events end up: fixed-size frames, Parquet dumps and store, capture files.

Importing `sinks` also registers the local book's frame, so `new_frame("book")` works.
"""

from __future__ import annotations

from sinks.book_frame import BookFrame
from sinks.capture_writer import CaptureWriter, capture_segments, segment_path
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
from sinks.store import ParquetStore

__all__ = [
    "BOOK",
    "DEFAULT_CAPACITY",
    "KLINES",
    "ORDER_BOOK",
    "SCHEMAS",
    "TICKER",
    "BookFrame",
    "CaptureWriter",
    "FrameFactory",
    "KlineFrame",
    "OrderBookFrame",
    "ParquetStore",
    "RollingFrame",
    "TickerFrame",
    "capture_segments",
    "dump_frames",
    "new_frame",
    "register_frame",
    "segment_path",
]
