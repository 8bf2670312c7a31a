"""Tests for `operators.conflate`: a slow subscriber gets the latest value, no backlog."""

from __future__ import annotations

import threading
import time
from typing import Any

import reactivex
from reactivex import Observable
from reactivex.abc import SchedulerBase
from reactivex.scheduler import ThreadPoolScheduler
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing
from reactivex.testing.recorded import Recorded

from operators import Ticker, conflate

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error

E0 = 1_732_600_020_000


def ticker(i: int) -> Ticker:
    """The i-th 24h ticker update, one a second."""
    price = 0.0712 + i * 0.0001
    return Ticker(
        symbol="HBARUSDT",
        event_time=E0 + i * 1000,
        best_bid=price - 0.0001,
        bid_qty=15_000.0,
        best_ask=price + 0.0001,
        ask_qty=9_100.0,
        last_price=price,
        last_qty=500.0,
        volume_24h=1.2e8,
        quote_volume_24h=8.5e6,
        t=(E0 + i * 1000 + 30) * 1_000_000,
        source="ws",
    )


def run(records: list[Recorded[Any]], disposed: float = 1000.0) -> list[Recorded[Any]]:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(records)

    def create() -> Observable[Any]:
        return source.pipe(conflate(scheduler))

    return scheduler.start(create, disposed=disposed).messages


def test_a_burst_in_one_tick_is_one_delivery_of_the_last() -> None:
    burst = [on_next(300, ticker(i)) for i in range(5)]
    records = [*burst, on_next(400, ticker(5)), on_completed(500)]
    assert run(records) == [on_next(300, ticker(4)), on_next(400, ticker(5)), on_completed(500)]


def test_a_synchronous_burst_is_one_delivery_of_the_last() -> None:
    # The way a feed really bursts: many on_next calls inside one action.
    scheduler = TestScheduler()
    feed: Subject[int] = Subject()

    def burst(_: SchedulerBase, __: Any = None) -> None:
        for i in range(1000):
            feed.on_next(i)

    scheduler.schedule_absolute(300.0, burst)
    results = scheduler.start(lambda: feed.pipe(conflate(scheduler)))
    assert results.messages == [on_next(300, 999)]


def test_marbles() -> None:
    lookup: dict[str | float, Any] = {c: ticker(i) for i, c in enumerate("abcde")}
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-(b,c,d)-e-|", lookup, None)
        expected = exp("-a-d-------e-|", lookup, None)

        def create(scheduler: SchedulerBase) -> Observable[Any]:
            return source.pipe(conflate(scheduler))

        results = start(reactivex.defer(create))
    assert results == expected


def test_the_feed_never_waits_for_the_subscriber() -> None:
    # Nothing runs on the subscriber's scheduler until it gets a turn; the
    # feed's on_next only stores the value.
    scheduler = TestScheduler()
    feed: Subject[int] = Subject()
    got: list[int] = []
    feed.pipe(conflate(scheduler)).subscribe(got.append)
    for i in range(10_000):
        feed.on_next(i)
    assert got == []
    scheduler.start()
    assert got == [9_999]


def test_a_slow_subscriber_sees_the_latest_and_never_overlaps() -> None:
    # The subscriber takes 24 s of virtual time per value; a value comes
    # every 10 s. Each delivery sends the latest value at the time it runs.
    scheduler = TestScheduler()
    records = [on_next(300 + 10 * i, i + 1) for i in range(10)] + [on_completed(500)]
    source = scheduler.create_hot_observable(records)
    got: list[tuple[float, int]] = []
    done: list[float] = []

    def slow(value: int) -> None:
        got.append((scheduler.clock, value))
        scheduler.sleep(24)

    source.pipe(conflate(scheduler)).subscribe(
        slow, on_completed=lambda: done.append(scheduler.clock)
    )
    scheduler.start()
    assert got == [(300, 1), (324, 3), (348, 5), (372, 8), (396, 10)]
    assert done == [500]


def test_values_arriving_during_a_delivery_get_their_own_turn() -> None:
    # A value pushed while the subscriber is busy is not delivered inside
    # that call: the next delivery goes through the scheduler.
    scheduler = TestScheduler()
    feed: Subject[int] = Subject()
    got: list[int] = []
    depth = 0

    def subscriber(value: int) -> None:
        nonlocal depth
        depth += 1
        assert depth == 1, "a delivery ran inside another"
        got.append(value)
        if value == 1:
            feed.on_next(2)
            feed.on_next(3)
        depth -= 1

    feed.pipe(conflate(scheduler)).subscribe(subscriber)
    feed.on_next(1)
    scheduler.start()
    assert got == [1, 3]


def test_completion_and_error_come_after_the_pending_value() -> None:
    assert run([on_next(300, ticker(0)), on_next(300, ticker(1)), on_completed(300)]) == [
        on_next(300, ticker(1)),
        on_completed(300),
    ]
    failure = ConnectionError("socket closed")
    assert run([on_next(300, ticker(0)), on_error(300, failure)]) == [
        on_next(300, ticker(0)),
        on_error(300, failure),
    ]
    assert run([on_completed(300)]) == [on_completed(300)]


def test_disposal_cancels_the_pending_delivery() -> None:
    # The value arrives in the tick the subscription is disposed in, before
    # its delivery could run: it is never delivered.
    assert run([on_next(250, 1), on_next(300, 2)], disposed=300) == [on_next(250, 1)]


def test_each_subscription_starts_fresh() -> None:
    scheduler = TestScheduler()
    shared = reactivex.from_iterable([1, 2, 3]).pipe(conflate(scheduler))
    first: list[int] = []
    second: list[int] = []
    shared.subscribe(first.append)
    shared.subscribe(second.append)
    scheduler.start()
    assert first == second == [3]


def test_a_thread_pool_never_runs_two_deliveries_at_once() -> None:
    scheduler = ThreadPoolScheduler(max_workers=4)
    feed: Subject[int] = Subject()
    got: list[int] = []
    inside = threading.Lock()
    overlaps = 0
    finished = threading.Event()

    def slow(value: int) -> None:
        nonlocal overlaps
        if not inside.acquire(blocking=False):
            overlaps += 1
            return
        try:
            got.append(value)
            time.sleep(0.001)
        finally:
            inside.release()

    try:
        feed.pipe(conflate(scheduler)).subscribe(slow, on_completed=finished.set)
        for i in range(20_000):
            feed.on_next(i)
        feed.on_completed()
        assert finished.wait(timeout=30)
    finally:
        scheduler.executor.shutdown(wait=True)
    assert overlaps == 0
    assert got == sorted(set(got))  # in order, no value twice
    assert got[-1] == 19_999
