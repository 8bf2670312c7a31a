"""`OrderBookFrame`: the last partial-depth snapshots, one row per level, whole snapshots kept.

Storage is a deque of the snapshots themselves: their level lists are referenced,
not copied, and stay decimal strings until the frame is read. Measured on a
depth20 feed at 1000 rows (one core, noisy): a write costs ~1 µs; a read ~0.3-0.5
ms, of which half is handing 2000 strings to Polars, which then converts each
column in one strict cast. The alternatives cost more: NumPy rings with object or
fixed-width string columns, written level by level, ~20-30 µs a write and no
cheaper a read (the strings still reach Polars through Python); a small Polars
frame per snapshot, concatenated when read, ~200 µs a write; `float()` per level
at write time ~25-37 µs. The side and level columns are cached by the snapshots'
level counts, which a steady 20x20 feed never changes.
"""

from __future__ import annotations

from collections import deque
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import polars as pl

from operators.events import BookSnapshot, Level
from sinks._rolling import RollingFrame, frame_from_columns
from sinks.schemas import DEFAULT_CAPACITY, ORDER_BOOK, SIDE

__all__ = ["OrderBookFrame"]

# (timestamp ms, update id, bids, asks, rows): a plain tuple, the cheapest record.
_Snapshot: TypeAlias = tuple[int, int, list[Level], list[Level], int]
_EMPTY_SIDE = pl.Series("side", [], dtype=SIDE)
_EMPTY_LEVEL = pl.Series("level", [], dtype=pl.Int32)


class OrderBookFrame(RollingFrame[BookSnapshot]):
    """Partial-depth snapshots (`depth20`) as rows, one per level, whole snapshots kept.

    One snapshot becomes its bid rows (level 0 = best) then its ask rows, all with
    its `last_update_id` as `update_id` and its receive time floored to the
    millisecond as `timestamp`. Snapshots are kept whole, in arrival order: the
    oldest ones are dropped until the rows fit `capacity`, so a frame of thin
    books may hold fewer rows. A snapshot that alone has more rows than
    `capacity` keeps its best `capacity // 2` levels a side. A snapshot with no
    levels at all adds nothing (False).

    Stale and duplicate snapshots are dropped upstream (`operators.monotonic`):
    every write appends. Levels must be `[price, quantity]` decimal strings, as
    `operators.parse` guarantees; they stay strings until the frame is read (one
    that is not a number makes `get` raise `ValueError`, naming it and its
    update id, until its snapshot falls out), and the frame references the
    event's lists, so events must not be mutated after they are written (they
    never are in this pipeline).
    """

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY["order_book"], name: str = "order_book"
    ) -> None:
        if isinstance(capacity, int) and capacity == 1:
            raise ValueError(f"{name}: capacity must hold a bid and an ask (at least 2), got 1")
        super().__init__(name, ORDER_BOOK, capacity)
        self._snapshots: deque[_Snapshot] = deque()
        self._rows = 0
        # The side and level columns depend only on the sequence of (bids, asks)
        # counts, which stays the same from read to read on a steady 20x20 feed.
        # One attribute, replaced whole: builders may run on several reader threads.
        self._layout: tuple[bytes, pl.Series, pl.Series] = (b"", _EMPTY_SIDE, _EMPTY_LEVEL)

    def __len__(self) -> int:
        return self._rows

    def _apply(self, event: BookSnapshot) -> bool:
        bids = event.bids
        asks = event.asks
        rows = len(bids) + len(asks)
        if rows == 0:
            return False
        capacity = self.capacity
        snapshots = self._snapshots
        if rows > capacity:
            half = capacity // 2
            bids = bids[:half]
            asks = asks[:half]
            rows = len(bids) + len(asks)
        kept = self._rows + rows
        while kept > capacity:
            kept -= snapshots.popleft()[4]
        snapshots.append((event.t // 1_000_000, event.last_update_id, bids, asks, rows))
        self._rows = kept
        return True

    def _snapshot(self) -> list[_Snapshot]:
        return list(self._snapshots)

    def _build(self, snapshot: list[_Snapshot]) -> pl.DataFrame:
        timestamps, update_ids, all_bids, all_asks, all_rows = zip(*snapshot, strict=True)
        rows = np.array(all_rows, dtype=np.int64)
        side, level = self._side_and_level(all_bids, all_asks)
        prices = [lv[0] for snap in snapshot for book in (snap[2], snap[3]) for lv in book]
        quantities = [lv[1] for snap in snapshot for book in (snap[2], snap[3]) for lv in book]
        update_id = np.repeat(np.array(update_ids, dtype=np.int64), rows)
        return frame_from_columns(
            self.schema,
            [
                np.repeat(np.array(timestamps, dtype=np.int64), rows),
                update_id,
                side,
                level,
                _decimals("price", prices, update_id),
                _decimals("quantity", quantities, update_id),
            ],
        )

    def _side_and_level(
        self, all_bids: tuple[list[Level], ...], all_asks: tuple[list[Level], ...]
    ) -> tuple[pl.Series, pl.Series]:
        counts = np.empty(2 * len(all_bids), dtype=np.int64)
        counts[0::2] = [len(bids) for bids in all_bids]
        counts[1::2] = [len(asks) for asks in all_asks]
        key = counts.tobytes()
        cached_key, cached_side, cached_level = self._layout
        if key == cached_key:
            return cached_side, cached_level
        sides: list[str] = []
        levels: list[int] = []
        for bids, asks in zip(all_bids, all_asks, strict=True):
            sides += ["bid"] * len(bids)
            sides += ["ask"] * len(asks)
            levels += range(len(bids))
            levels += range(len(asks))
        side = pl.Series("side", sides, dtype=SIDE, strict=True)
        level = pl.Series("level", levels, dtype=pl.Int32, strict=True)
        self._layout = (key, side, level)
        return side, level


def _decimals(name: str, texts: list[str], update_id: npt.NDArray[np.int64]) -> pl.Series:
    """Decimal strings to Float64 in one strict cast; a bad value names its snapshot."""
    strings = pl.Series(name, texts, dtype=pl.String, strict=True)
    try:
        return strings.cast(pl.Float64, strict=True)
    except pl.exceptions.InvalidOperationError:
        bad = strings.cast(pl.Float64, strict=False).is_null().arg_true()[0]
        raise ValueError(
            f"order_book {name} {texts[bad]!r} (update_id {int(update_id[bad])}) "
            "is not a decimal number"
        ) from None
