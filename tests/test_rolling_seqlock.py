"""`RollingFrame` writes take no lock: a reader retries until its copy saw no write.

The interleavings a second thread could produce are forced deterministically
here: a `_snapshot` that lets a write run in the middle of the copy (as a
thread switch would), and a write left half-done while a reader waits.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from operators.events import Ticker
from sinks import TickerFrame

T0 = 1_732_600_020_000


def ticker(i: int) -> Ticker:
    return Ticker(
        "HBARUSDT", T0 + i, 0.0711, 100.0 + i, 0.0713, 50.0, 0.07, 5.0, 1e8, 7e6,
        (T0 + i) * 1_000_000, "ws",
    )  # fmt: skip


class Interrupted(TickerFrame):
    """Runs `during()` once, halfway through the next copy of its storage."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.during: Any = None
        self.copies = 0

    def _snapshot(self) -> Any:
        self.copies += 1
        first = self._ring.ordered_column(0)
        during, self.during = self.during, None
        if during is not None:
            during()
        rest = self._ring.ordered()[1:]
        return [first, *rest]


def event_ids(frame: TickerFrame) -> list[int]:
    ids: list[int] = frame.get()["event_id"].to_list()
    return ids


def test_a_write_during_the_copy_makes_the_reader_copy_again() -> None:
    frame = Interrupted(capacity=3)
    for i in range(3):
        frame.write(ticker(i))
    frame.during = lambda: frame.write(ticker(3))
    # The torn copy would pair event ids 0-2 with the values of 1-3; it is discarded.
    got = frame.get()
    assert frame.copies == 2
    assert got["event_id"].to_list() == [T0 + 1, T0 + 2, T0 + 3]
    assert got["bid_qty"].to_list() == [101.0, 102.0, 103.0]
    assert frame.version == 4


def test_a_copy_that_fails_because_of_a_write_is_retried() -> None:
    frame = Interrupted(capacity=3)
    frame.write(ticker(0))

    def write_then_fail() -> None:
        frame.write(ticker(1))
        raise IndexError("storage changed under the copy")

    frame.during = write_then_fail
    assert event_ids(frame) == [T0, T0 + 1]
    assert frame.copies == 2


def test_a_copy_that_fails_without_a_write_raises() -> None:
    frame = Interrupted(capacity=3)
    frame.write(ticker(0))

    def fail() -> None:
        raise IndexError("a real bug")

    frame.during = fail
    with pytest.raises(IndexError, match="a real bug"):
        frame.get()


def test_a_reader_waits_for_a_write_under_way() -> None:
    frame = TickerFrame(capacity=3)
    frame.write(ticker(0))
    frame._seq += 1  # a writer on another thread is halfway through a write
    got: list[list[int]] = []
    reader = threading.Thread(target=lambda: got.append(event_ids(frame)))
    reader.start()
    reader.join(timeout=0.05)
    assert reader.is_alive()  # it does not read a half-done write
    assert not got
    frame._apply(ticker(1))
    frame.version += 1
    frame._seq += 1  # the write completes
    reader.join(timeout=10)
    assert got == [[T0, T0 + 1]]


def test_a_failed_write_never_leaves_readers_waiting() -> None:
    frame = TickerFrame(capacity=3)
    frame.write(ticker(0))
    with pytest.raises(AttributeError):
        frame.write(None)  # type: ignore[arg-type]
    assert frame._seq % 2 == 0
    assert event_ids(frame)[0] == T0  # readable (what a failed write left is its own)
