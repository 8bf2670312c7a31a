"""`KlineFrame`: final candles, one row per open time, sorted, the newest `capacity` kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from operators.events import Kline
from sinks._ring import ColumnRing
from sinks._rolling import RollingFrame, frame_from_columns
from sinks.schemas import DEFAULT_CAPACITY, KLINES

__all__ = ["KlineFrame"]

_DTYPES = (np.int64, np.float64, np.float64, np.float64, np.float64, np.float64)


class KlineFrame(RollingFrame[Kline]):
    """Final klines of one symbol and interval: `timestamp` (the open time), OHLCV.

    - Only final klines are kept. A forming one (`final=False`) is ignored and
      `write` returns False: filtering is `operators.final_only`'s job, and a
      forming candle that slipped through must never overwrite a closed one, nor
      should a wiring slip kill the feed with an exception.
    - Same open time again: the later write replaces the row (upsert); with the
      same values it is a no-op (False).
    - Rows stay sorted by open time; beyond `capacity` the oldest falls out. A
      kline older than every kept row, arriving when the frame is full, would
      fall out at once: it is dropped (False).

    Appending the next candle is O(1); an out-of-order one (a REST backfill)
    costs O(capacity), which is small.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY["klines_1m"], name: str = "klines_1m"):
        super().__init__(name, KLINES, capacity)
        self._ring = ColumnRing(_DTYPES, capacity)
        (
            self._open_time,
            self._open,
            self._high,
            self._low,
            self._close,
            self._volume,
        ) = self._ring.columns
        # The newest open time as a Python int: the in-order test needs no NumPy read.
        self._last_open_time: int | None = None

    def __len__(self) -> int:
        return self._ring.size

    def _apply(self, event: Kline) -> bool:
        if not event.final:
            return False
        open_time = event.open_time
        last = self._last_open_time
        if last is None or open_time > last:
            slot = self._ring.append_slot()
            self._open_time[slot] = open_time
            self._open[slot] = event.open
            self._high[slot] = event.high
            self._low[slot] = event.low
            self._close[slot] = event.close
            self._volume[slot] = event.volume
            self._last_open_time = open_time
            return True
        if open_time == last:
            return self._replace(self._ring.slot(self._ring.size - 1), event)
        return self._insert_out_of_order(event)

    def _replace(self, slot: int, event: Kline) -> bool:
        if (
            self._open[slot] == event.open
            and self._high[slot] == event.high
            and self._low[slot] == event.low
            and self._close[slot] == event.close
            and self._volume[slot] == event.volume
        ):
            return False
        self._open[slot] = event.open
        self._high[slot] = event.high
        self._low[slot] = event.low
        self._close[slot] = event.close
        self._volume[slot] = event.volume
        return True

    def _insert_out_of_order(self, event: Kline) -> bool:
        ring = self._ring
        columns = ring.ordered()
        position = int(np.searchsorted(columns[0], event.open_time))
        if position < ring.size and columns[0][position] == event.open_time:
            return self._replace(ring.slot(position), event)
        full = ring.size == ring.capacity
        if position == 0 and full:
            return False
        row = (event.open_time, event.open, event.high, event.low, event.close, event.volume)
        merged = [
            np.insert(column, position, value) for column, value in zip(columns, row, strict=True)
        ]
        ring.reset([column[1:] for column in merged] if full else merged)
        return True

    def _snapshot(self) -> list[npt.NDArray[Any]]:
        return self._ring.ordered()

    def _build(self, snapshot: list[npt.NDArray[Any]]) -> pl.DataFrame:
        return frame_from_columns(self.schema, snapshot)
