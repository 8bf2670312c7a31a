"""`TickerFrame`: the last `capacity` 24h-ticker events, one row each, in arrival order."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from operators.events import Ticker
from sinks._ring import ColumnRing
from sinks._rolling import RollingFrame, frame_from_columns
from sinks.schemas import DEFAULT_CAPACITY, TICKER

__all__ = ["TickerFrame"]

# event_time once: it becomes both `timestamp` and `event_id` when read.
_DTYPES = (np.int64,) + (np.float64,) * 8


class TickerFrame(RollingFrame[Ticker]):
    """24h-ticker rows: `timestamp` and `event_id` both from the event time `E` (ms).

    Every write appends a row (True); the oldest falls out beyond `capacity`.
    Ordering and duplicates are upstream's job (`operators.monotonic` drops an
    event time not greater than the last), so the sink does not check them.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY["ticker"], name: str = "ticker") -> None:
        super().__init__(name, TICKER, capacity)
        self._ring = ColumnRing(_DTYPES, capacity)
        (
            self._event_time,
            self._best_bid,
            self._bid_qty,
            self._best_ask,
            self._ask_qty,
            self._last_price,
            self._last_qty,
            self._volume,
            self._quote_volume,
        ) = self._ring.columns

    def __len__(self) -> int:
        return self._ring.size

    def _apply(self, event: Ticker) -> bool:
        slot = self._ring.append_slot()
        self._event_time[slot] = event.event_time
        self._best_bid[slot] = event.best_bid
        self._bid_qty[slot] = event.bid_qty
        self._best_ask[slot] = event.best_ask
        self._ask_qty[slot] = event.ask_qty
        self._last_price[slot] = event.last_price
        self._last_qty[slot] = event.last_qty
        self._volume[slot] = event.volume_24h
        self._quote_volume[slot] = event.quote_volume_24h
        return True

    def _snapshot(self) -> list[npt.NDArray[Any]]:
        return self._ring.ordered()

    def _build(self, snapshot: list[npt.NDArray[Any]]) -> pl.DataFrame:
        event_time, *values = snapshot
        return frame_from_columns(self.schema, [event_time, event_time, *values])
