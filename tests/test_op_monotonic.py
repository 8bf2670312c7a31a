"""Marble tests for `operators.monotonic`: stale and repeated updates never fold."""

from __future__ import annotations

from typing import Any

import reactivex
from reactivex.testing.marbles import marbles_testing

from operators import BookSnapshot, Ticker, monotonic

SYMBOL = "HBARUSDT"
E0 = 1_732_600_020_000


def book(update_id: int, t: int, conn: int = 1) -> BookSnapshot:
    return BookSnapshot(
        symbol=SYMBOL,
        last_update_id=update_id,
        bids=[["0.07120", "15000.0"], ["0.07110", "820.5"]],
        asks=[["0.07130", "9100.0"], ["0.07140", "1200.0"]],
        t=t * 1_000_000_000 + conn,
        source="ws",
    )


def ticker(event_time: int, last: float) -> Ticker:
    return Ticker(
        symbol=SYMBOL,
        event_time=event_time,
        best_bid=last - 0.0001,
        bid_qty=15_000.0,
        best_ask=last + 0.0001,
        ask_qty=9_100.0,
        last_price=last,
        last_qty=500.0,
        volume_24h=1.2e8,
        quote_volume_24h=8.5e6,
        t=(event_time + 30) * 1_000_000,
        source="ws",
    )


def update_id(s: BookSnapshot) -> int:
    return s.last_update_id


def event_time(x: Ticker) -> int:
    return x.event_time


Drops = list[tuple[Any, str]]


def test_equal_is_duplicate_smaller_is_stale() -> None:
    lookup: dict[str | float, Any] = {
        "a": book(100, 1),
        "b": book(103, 2),
        "B": book(103, 3),  # an unchanged book repeats its id
        "s": book(101, 4),  # late, out of order
        "c": book(104, 5),
    }
    drops: Drops = []
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-B-s-c-|", lookup, None)
        expected = exp("-a-b-----c-|", lookup, None)
        results = start(source.pipe(monotonic(update_id, lambda x, r: drops.append((x, r)))))
    assert results == expected
    assert drops == [(lookup["B"], "duplicate"), (lookup["s"], "stale")]


def test_a_drop_does_not_move_the_last_key() -> None:
    ids = [5, 9, 7, 8, 9, 10]
    out: list[int] = []
    reactivex.from_iterable(ids).pipe(monotonic(lambda x: x)).subscribe(out.append)
    assert out == [5, 9, 10]


def test_first_item_passes_whatever_its_key() -> None:
    out: list[int] = []
    reactivex.of(-3, 0, -1).pipe(monotonic(lambda x: x)).subscribe(out.append)
    assert out == [-3, 0]


def test_reconnect_replaying_the_last_snapshots() -> None:
    # Connection 2's first frames repeat what connection 1 last sent.
    conn1 = [book(500 + i, i, conn=1) for i in range(4)]  # 500..503
    conn2 = [book(502, 10, conn=2), book(503, 11, conn=2), book(504, 12, conn=2)]
    drops: Drops = []
    out: list[BookSnapshot] = []
    reactivex.from_iterable(conn1 + conn2).pipe(
        monotonic(update_id, lambda x, r: drops.append((x, r)))
    ).subscribe(out.append)
    assert out == [*conn1, conn2[2]]
    assert drops == [(conn2[0], "stale"), (conn2[1], "duplicate")]


def test_ticker_event_time() -> None:
    t1, t2, t3 = ticker(E0, 0.0712), ticker(E0 + 1000, 0.0713), ticker(E0 + 2000, 0.0711)
    lookup: dict[str | float, Any] = {"a": t1, "b": t2, "c": t3}
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-a-b-c-|", lookup, None)
        expected = exp("-a-b-----c-|", lookup, None)
        results = start(source.pipe(monotonic(event_time)))
    assert results == expected


def test_each_subscription_starts_fresh() -> None:
    items = [book(i, i) for i in (3, 1, 4, 1, 5)]
    shared = reactivex.from_iterable(items).pipe(monotonic(update_id))
    first: list[BookSnapshot] = []
    second: list[BookSnapshot] = []
    shared.subscribe(first.append)
    shared.subscribe(second.append)
    assert first == second == [items[0], items[2], items[4]]


def test_error_and_completion_propagate() -> None:
    lookup: dict[str | float, Any] = {"a": book(1, 1), "b": book(2, 2)}
    failure = ConnectionResetError("peer reset")
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-a-b-#", lookup, failure)
        expected = exp("-a---b-#", lookup, failure)
        results = start(source.pipe(monotonic(update_id)))
    assert results == expected


def test_a_failing_key_is_an_error() -> None:
    errors: list[Exception] = []
    out: list[object] = []
    mixed: reactivex.Observable[Any] = reactivex.of(book(1, 1), "junk")
    mixed.pipe(monotonic(update_id)).subscribe(out.append, errors.append)
    assert out == [book(1, 1)]
    assert [type(e) for e in errors] == [AttributeError]
