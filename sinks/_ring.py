"""A fixed-capacity ring of NumPy columns: the storage behind the rolling frames.

One row is written as one scalar store per column (about 0.1 µs each), so a write
costs the same whatever the capacity; nothing is allocated per row. Reading copies
the columns out in logical order, which is also what keeps a Polars frame built from
them from aliasing the ring (Polars wraps NumPy buffers without copying).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ColumnRing"]

Column = npt.NDArray[Any]


class ColumnRing:
    """Rows `0 .. size-1` in logical order (oldest first), stored from `start` with wrap-around.

    Callers write a row by asking for its slot and storing into `columns[k][slot]`:
    the ring owns the bookkeeping, not the values, so a writer touches each column
    exactly once.
    """

    __slots__ = ("capacity", "columns", "size", "start")

    def __init__(self, dtypes: Sequence[npt.DTypeLike], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a ring needs a capacity of at least 1 row, got {capacity!r}")
        self.capacity = capacity
        self.columns: tuple[Column, ...] = tuple(np.zeros(capacity, dtype=d) for d in dtypes)
        self.size = 0
        self.start = 0

    def append_slot(self) -> int:
        """The physical index for a new last row; when full, the oldest row gives up its slot."""
        capacity = self.capacity
        if self.size < capacity:
            slot = self.start + self.size
            self.size += 1
            return slot - capacity if slot >= capacity else slot
        slot = self.start
        self.start = 0 if slot + 1 == capacity else slot + 1
        return slot

    def slot(self, row: int) -> int:
        """The physical index of logical row `row` (0 = oldest)."""
        slot = self.start + row
        return slot - self.capacity if slot >= self.capacity else slot

    def ordered(self) -> list[Column]:
        """Fresh copies of every column, oldest row first (never views of the ring)."""
        start, end = self.start, self.start + self.size
        if end <= self.capacity:
            return [column[start:end].copy() for column in self.columns]
        wrapped = end - self.capacity
        return [np.concatenate((column[start:], column[:wrapped])) for column in self.columns]

    def ordered_column(self, index: int) -> Column:
        """A fresh copy of one column, oldest row first."""
        column = self.columns[index]
        start, end = self.start, self.start + self.size
        if end <= self.capacity:
            return column[start:end].copy()
        return np.concatenate((column[start:], column[: end - self.capacity]))

    def reset(self, columns: Sequence[Column]) -> None:
        """Replace the contents with `columns` (logical order, at most `capacity` rows)."""
        size = len(columns[0])
        if size > self.capacity:
            raise ValueError(f"{size} rows do not fit a ring of {self.capacity}")
        for target, source in zip(self.columns, columns, strict=True):
            target[:size] = source
        self.start = 0
        self.size = size
