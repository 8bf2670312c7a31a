"""Tests for `operators.detect_gaps`: missing final klines become `Gap`s, once.

Without a scheduler, gaps are revealed by the kline after them (marble tests).
With one, a silent feed is reported at each missing candle's close plus grace;
those tests run on a `TestScheduler`, whose clock (seconds since the epoch)
is the clock kline open times use, so small open times keep the ticks readable.
"""

from __future__ import annotations

from typing import Any

import pytest
import reactivex
from reactivex import Observable
from reactivex.abc import SchedulerBase
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing
from reactivex.testing.recorded import Recorded

from operators import (
    BookSnapshot,
    Disconnected,
    Gap,
    Kline,
    detect_gaps,
    interval_ms,
    interval_name,
)

SYMBOL = "HBARUSDT"
M = interval_ms("1m")
T0 = 1_732_600_020_000  # a minute boundary


def kline(
    open_time: int,
    *,
    final: bool = True,
    interval: str = "1m",
    delay_ms: int = 1_000,
    source: str = "ws",
) -> Kline:
    """A kline received `delay_ms` after its candle's close."""
    length = interval_ms(interval)
    return Kline(
        symbol=SYMBOL,
        interval=interval,
        open_time=open_time,
        close_time=open_time + length - 1,
        open=0.0710,
        high=0.0715,
        low=0.0708,
        close=0.0712,
        volume=125_000.0,
        final=final,
        t=(open_time + length + delay_ms) * 1_000_000,
        source=source,
    )


def gap(start: int, end: int, t: int, interval: str = "1m") -> Gap:
    return Gap(SYMBOL, interval, start, end, t)


# ---------------------------------------------------------------- revealed by the next kline


def test_consecutive_klines_have_no_gap() -> None:
    lookup: dict[str | float, Any] = {c: kline(T0 + i * M) for i, c in enumerate("abcd")}
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-c-d-|", lookup, None)
        expected = exp("-a-b-c-d-|", lookup, None)
        results = start(source.pipe(detect_gaps(M)))
    assert results == expected


def test_a_jump_emits_a_gap_just_before_the_kline() -> None:
    a, b, e = kline(T0), kline(T0 + M), kline(T0 + 4 * M)
    lookup: dict[str | float, Any] = {
        "a": a,
        "b": b,
        "e": e,
        # Candles T0+2M and T0+3M are missing; `t` is when `e` revealed it.
        "g": gap(T0 + 2 * M, T0 + 4 * M, e.t),
    }
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-e-----|", lookup, None)
        expected = exp("-a-b-(g,e)-|", lookup, None)
        results = start(source.pipe(detect_gaps(M)))
    assert results == expected


def test_late_older_and_repeated_klines_are_no_gap() -> None:
    a, b, c, d = (kline(T0 + i * M) for i in range(4))
    b_again = kline(T0 + M, delay_ms=30_000)
    lookup: dict[str | float, Any] = {"a": a, "b": b, "c": c, "d": d, "B": b_again}
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-c-B-a-c-d-|", lookup, None)
        expected = exp("-a-b-c-B-a-c-d-|", lookup, None)
        results = start(source.pipe(detect_gaps(M)))
    assert results == expected


def test_out_of_order_arrival_reports_the_hole_once() -> None:
    # c overtakes b: the gap [b, c) is reported; b arriving late then is a
    # backfill of it, not a second gap.
    a, b, c, d = (kline(T0 + i * M) for i in range(4))
    lookup: dict[str | float, Any] = {
        "a": a,
        "b": b,
        "c": c,
        "d": d,
        "g": gap(T0 + M, T0 + 2 * M, c.t),
    }
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-c-----b-d-|", lookup, None)
        expected = exp("-a-(g,c)-b-d-|", lookup, None)
        results = start(source.pipe(detect_gaps(M)))
    assert results == expected


def test_backfill_after_a_reconnect_is_not_a_new_gap() -> None:
    # The WebSocket drops after `b`; its first final after the reconnect is
    # `e`; the REST backfill then delivers c and d (and repeats b).
    a, b, e, f = kline(T0), kline(T0 + M), kline(T0 + 4 * M), kline(T0 + 5 * M)
    rest = [kline(T0 + i * M, source="rest", delay_ms=90_000) for i in (1, 2, 3)]
    lookup: dict[str | float, Any] = {
        "a": a,
        "b": b,
        "D": Disconnected(1, 1006, "abnormal closure", b.t + 1),
        "e": e,
        "g": gap(T0 + 2 * M, T0 + 4 * M, e.t),
        "x": rest[0],
        "y": rest[1],
        "z": rest[2],
        "f": f,
    }
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-D-e-----(x,y,z)-f-|", lookup, None)
        expected = exp("-a-b-D-(g,e)-(x,y,z)-f-|", lookup, None)
        results = start(source.pipe(detect_gaps(M)))
    assert results == expected


def test_other_items_forming_klines_and_other_series_pass_unchecked() -> None:
    a, c = kline(T0), kline(T0 + 2 * M)
    lookup: dict[str | float, Any] = {
        "a": a,
        "n": kline(T0 + 5 * M, final=False),  # a forming candle far ahead
        "h": kline(T0 + 10 * 60 * M, interval="1h"),  # another series
        "s": BookSnapshot(SYMBOL, 1, [["0.07", "1"]], [["0.08", "1"]], 1, "ws"),
        "c": c,
        "g": gap(T0 + M, T0 + 2 * M, c.t),
    }
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-n-h-s-c-----|", lookup, None)
        expected = exp("-a-n-h-s-(g,c)-|", lookup, None)
        results = start(source.pipe(detect_gaps(M)))
    assert results == expected


def test_each_subscription_starts_fresh() -> None:
    items = [kline(T0 + i * M) for i in (0, 1, 3, 2, 6)]
    shared = reactivex.from_iterable(items).pipe(detect_gaps(M))
    first: list[Kline | Gap] = []
    second: list[Kline | Gap] = []
    shared.subscribe(first.append)
    shared.subscribe(second.append)
    expected = [
        items[0],
        items[1],
        gap(T0 + 2 * M, T0 + 3 * M, items[2].t),
        items[2],
        items[3],
        gap(T0 + 4 * M, T0 + 6 * M, items[4].t),
        items[4],
    ]
    assert first == expected
    assert second == expected


def test_error_and_completion_propagate() -> None:
    lookup: dict[str | float, Any] = {"a": kline(T0), "b": kline(T0 + M)}
    failure = ConnectionError("feed failed")
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-#", lookup, failure)
        expected = exp("-a-b-#", lookup, failure)
        results = start(source.pipe(detect_gaps(M, grace_ms=0)))
    assert results == expected


def test_a_subscriber_may_backfill_synchronously() -> None:
    # The Gap goes out after the state is updated: a backfill pushed into
    # the same feed from the Gap handler is seen as filling it.
    feed: Subject[Kline] = Subject()
    out: list[Kline | Gap] = []

    def on_next(item: Kline | Gap) -> None:
        out.append(item)
        if isinstance(item, Gap):
            for open_time in range(item.start, item.end, M):
                feed.on_next(kline(open_time, source="rest"))

    feed.pipe(detect_gaps(M)).subscribe(on_next)
    a, d = kline(T0), kline(T0 + 3 * M)
    feed.on_next(a)
    feed.on_next(d)
    assert out == [
        a,
        gap(T0 + M, T0 + 3 * M, d.t),
        kline(T0 + M, source="rest"),
        kline(T0 + 2 * M, source="rest"),
        d,
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_ms": 0}, "interval_ms must be an int >= 1"),
        ({"interval_ms": 60.0}, "interval_ms must be an int >= 1"),
        ({"interval_ms": M, "grace_ms": -1}, "grace_ms must be an int >= 0"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect_gaps(**kwargs)


# ---------------------------------------------------------------- staleness timer

GRACE = 10_000


def at(seconds: float, value: Any) -> Recorded[Any]:
    return ReactiveTest.on_next(int(seconds), value)


def arrival(k: Kline) -> Recorded[Any]:
    """The kline as a hot record at its receive time (TestScheduler ticks are seconds)."""
    return at(k.t / 1e9, k)


def run(
    records: list[Recorded[Any]],
    *,
    grace_ms: int = GRACE,
    disposed: float = 10_000.0,
) -> list[Recorded[Any]]:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(records)

    def create() -> Observable[Any]:
        return source.pipe(detect_gaps(M, scheduler, grace_ms))

    return scheduler.start(create, disposed=disposed).messages


def ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def test_a_silent_feed_is_reported_candle_by_candle_and_once() -> None:
    k3, k4 = kline(3 * M), kline(4 * M)  # arrive at 241 s and 301 s
    k7, k8 = kline(7 * M), kline(8 * M)  # the WebSocket is back at 481 s
    backfill = [kline(5 * M, source="rest", delay_ms=5_000), kline(6 * M, source="rest")]
    records = [
        arrival(k3),
        arrival(k4),
        arrival(k7),
        at(485, backfill[0]),
        at(485, backfill[1]),
        arrival(k8),
        ReactiveTest.on_completed(600),
    ]
    assert run(records) == [
        at(241, k3),
        at(301, k4),
        # Candle 5M closes at 360 s; its final is overdue at 370 s.
        at(370, gap(5 * M, 6 * M, ns(370))),
        at(430, gap(6 * M, 7 * M, ns(430))),
        at(481, k7),  # the expected next one: no gap
        at(485, backfill[0]),  # fills what was reported: no gap either
        at(485, backfill[1]),
        at(541, k8),
        ReactiveTest.on_completed(600),
    ]


def test_a_kline_within_grace_moves_the_deadline() -> None:
    ks = [kline(i * M, delay_ms=GRACE - 1_000) for i in range(3, 8)]
    # The last one, candle 7M, arrives at 489 s; 8M would be overdue at 550 s.
    records = [*map(arrival, ks), ReactiveTest.on_completed(540)]
    assert run(records) == records


def test_a_final_later_than_grace_is_reported_then_passes() -> None:
    k3, k4_late, k5 = kline(3 * M), kline(4 * M, delay_ms=GRACE + 5_000), kline(5 * M)
    records = [arrival(k3), arrival(k4_late), arrival(k5), ReactiveTest.on_completed(400)]
    assert run(records) == [
        at(241, k3),
        at(310, gap(4 * M, 5 * M, ns(310))),
        at(315, k4_late),
        at(361, k5),
        ReactiveTest.on_completed(400),
    ]


def test_a_later_kline_reports_only_what_the_timer_has_not() -> None:
    # The exchange clock runs ahead of ours: candle 8M's final comes at
    # 400 s, after the timer reported candle 5M only.
    k4 = kline(4 * M)
    k8_early = kline(8 * M, delay_ms=-140_000)
    records = [arrival(k4), at(400, k8_early), ReactiveTest.on_completed(450)]
    assert run(records) == [
        at(301, k4),
        at(370, gap(5 * M, 6 * M, ns(370))),
        at(400, gap(6 * M, 8 * M, k8_early.t)),
        at(400, k8_early),
        ReactiveTest.on_completed(450),
    ]


def test_a_clock_jump_reports_every_overdue_candle_in_one_gap() -> None:
    # A lone REST row for candle 10M arrives at 1000 s (the clock far ahead
    # of it): candles 11M..15M have closed more than grace ago; 16M has not.
    k10 = kline(10 * M, source="rest", delay_ms=340_000)
    records = [arrival(k10), ReactiveTest.on_completed(1_050)]
    assert run(records) == [
        at(1_000, k10),
        at(1_000, gap(11 * M, 16 * M, ns(1_000))),
        at(1_030, gap(16 * M, 17 * M, ns(1_030))),
        ReactiveTest.on_completed(1_050),
    ]


def test_a_preload_burst_on_the_scheduler_thread_raises_no_false_gap() -> None:
    # A REST preload is parsed into one synchronous burst of klines; the
    # first one arms a deadline already past, but the burst moves it before
    # the scheduler can run it.
    scheduler = TestScheduler()
    feed: Subject[Kline] = Subject()
    preload = [kline(i * M, source="rest", delay_ms=59_000) for i in range(10, 15)]

    def burst(_: SchedulerBase, __: Any = None) -> None:
        for k in preload:
            feed.on_next(k)

    def complete(_: SchedulerBase, __: Any = None) -> None:
        feed.on_completed()

    scheduler.schedule_absolute(960.0, burst)
    # Candle 15M is overdue at 970 s: complete before.
    scheduler.schedule_absolute(965.0, complete)
    results = scheduler.start(lambda: feed.pipe(detect_gaps(M, scheduler, GRACE)))
    assert results.messages == [*(at(960, k) for k in preload), ReactiveTest.on_completed(965)]


def test_disposal_cancels_the_timer() -> None:
    # Were the timer left running it would re-arm forever and `start` would
    # never return.
    k4 = kline(4 * M)
    assert run([arrival(k4)], disposed=400) == [
        at(301, k4),
        at(370, gap(5 * M, 6 * M, ns(370))),
    ]


def test_an_error_cancels_the_timer() -> None:
    k4 = kline(4 * M)
    failure = ConnectionError("feed failed")
    records = [arrival(k4), ReactiveTest.on_error(320, failure)]
    assert run(records) == [at(301, k4), ReactiveTest.on_error(320, failure)]


def test_no_timer_before_the_first_final_kline() -> None:
    records = [at(300, kline(4 * M, final=False)), ReactiveTest.on_completed(900)]
    assert run(records) == records


def test_timer_marbles() -> None:
    # One marble character is 10 s and the feed starts at 200 s, so a kline
    # received at its close at character i opened at 140 s + 10 s * i.
    def k(i: int) -> Kline:
        return kline(140_000 + 10_000 * i, delay_ms=0)

    lookup: dict[str | float, Any] = {
        "a": k(0),
        "b": k(6),
        # Candles 260k and 320k never come over the socket (they would at
        # characters 12 and 18): each is reported grace (30 s) after its close.
        "x": gap(260_000, 320_000, ns(350)),
        "y": gap(320_000, 380_000, ns(410)),
        "e": k(24),
        "c": kline(260_000, source="rest", delay_ms=210_000),  # the backfill
        "f": k(30),
    }
    with marbles_testing(timespan=10.0) as (start, cold, _hot, exp):
        source = cold("a-----b-----------------e--c--f--|", lookup, None)
        expected = exp("a-----b--------x-----y--e--c--f--|", lookup, None)

        def create(scheduler: SchedulerBase) -> Observable[Any]:
            return source.pipe(detect_gaps(M, scheduler, grace_ms=30_000))

        results = start(reactivex.defer(create))
    assert results == expected


# ---------------------------------------------------------------- interval names


def test_interval_lengths() -> None:
    minute, hour, day = 60_000, 3_600_000, 86_400_000
    expected = {
        "1m": minute,
        "3m": 3 * minute,
        "5m": 5 * minute,
        "15m": 15 * minute,
        "30m": 30 * minute,
        "1h": hour,
        "2h": 2 * hour,
        "4h": 4 * hour,
        "6h": 6 * hour,
        "8h": 8 * hour,
        "12h": 12 * hour,
        "1d": day,
        "3d": 3 * day,
        "1w": 7 * day,
    }
    for name, ms in expected.items():
        assert interval_ms(name) == ms
        assert interval_name(ms) == name


def test_a_month_is_rejected_clearly() -> None:
    with pytest.raises(ValueError, match=r"'1M' \(one month\) is not supported.*no fixed length"):
        interval_ms("1M")


@pytest.mark.parametrize("name", ["1mo", "60s", "1H", "", "1 m"])
def test_unknown_interval_names_the_value(name: str) -> None:
    with pytest.raises(
        ValueError, match=rf"unknown kline interval {name!r}: expected one of 1s, 1m"
    ):
        interval_ms(name)


def test_unknown_length_names_the_value() -> None:
    with pytest.raises(ValueError, match=r"no kline interval lasts 61000 ms"):
        interval_name(61_000)
