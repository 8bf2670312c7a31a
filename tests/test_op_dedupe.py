"""Marble tests for `operators.dedupe`: bounded duplicate suppression."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import pytest
import reactivex
from reactivex.subject import Subject
from reactivex.testing.marbles import marbles_testing

from operators import BookSnapshot, Connected, Disconnected, Kline, dedupe

T0 = 1_732_600_020_000  # a minute boundary, ms
MINUTE = 60_000
SYMBOL = "HBARUSDT"


def book(update_id: int, t: int = 0, conn: int = 1) -> BookSnapshot:
    """A depth20 snapshot as `parse` builds it; `t` also tells replays apart."""
    return BookSnapshot(
        symbol=SYMBOL,
        last_update_id=update_id,
        bids=[["0.07120", "15000.0"], ["0.07110", "820.5"]],
        asks=[["0.07130", "9100.0"], ["0.07140", "1200.0"]],
        t=t or 1_732_600_000_000_000_000 + update_id * 100_000_000,
        source="ws" if conn else "rest",
    )


def kline(open_time: int, *, t: int, source: str = "ws", close: float = 0.0712) -> Kline:
    return Kline(
        symbol=SYMBOL,
        interval="1m",
        open_time=open_time,
        close_time=open_time + MINUTE - 1,
        open=0.0710,
        high=0.0715,
        low=0.0708,
        close=close,
        volume=125_000.0,
        final=True,
        t=t,
        source=source,
    )


def update_id(item: BookSnapshot) -> int:
    return item.last_update_id


def collect(source: reactivex.Observable[Any]) -> list[Any]:
    out: list[Any] = []
    source.subscribe(out.append)
    return out


def test_duplicates_dropped_first_arrival_kept() -> None:
    a, b, c = book(101), book(102), book(103)
    a_again = book(101, t=a.t + 5)  # same id, later receive time
    drops: list[tuple[BookSnapshot, str]] = []
    lookup: dict[str | float, Any] = {"a": a, "b": b, "c": c, "A": a_again}
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-A-c-b-|", lookup, None)
        expected = exp("-a-b---c---|", lookup, None)
        results = start(source.pipe(dedupe(update_id, on_drop=lambda x, r: drops.append((x, r)))))
    assert results == expected
    assert drops == [(a_again, "duplicate"), (b, "duplicate")]


def test_reconnect_overlap_is_dropped() -> None:
    # Connection 1 delivers three final klines and drops; after the reconnect
    # a REST backfill repeats the last two before the live feed goes on.
    k0 = kline(T0, t=1)
    k1 = kline(T0 + MINUTE, t=2)
    k2 = kline(T0 + 2 * MINUTE, t=3)
    k1_rest = kline(T0 + MINUTE, t=10, source="rest")
    k2_rest = kline(T0 + 2 * MINUTE, t=10, source="rest")
    k3 = kline(T0 + 3 * MINUTE, t=11)
    lookup: dict[str | float, Any] = {
        "a": k0,
        "b": k1,
        "c": k2,
        "D": Disconnected(conn=1, code=1006, reason="abnormal closure", t=5),
        "C": Connected(conn=2, url="wss://stream.binance.us:9443/stream", t=9),
        "x": k1_rest,
        "y": k2_rest,
        "d": k3,
    }

    def key(e: object) -> Hashable:
        # Connection markers are never duplicates of anything.
        if isinstance(e, Kline):
            return (e.symbol, e.interval, e.open_time)
        return e

    drops: list[tuple[object, str]] = []
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-b-c-D--C-(x,y)-d-|", lookup, None)
        expected = exp("-a-b-c-D--C-------d-|", lookup, None)
        results = start(source.pipe(dedupe(key, on_drop=lambda x, r: drops.append((x, r)))))
    assert results == expected
    assert drops == [(k1_rest, "duplicate"), (k2_rest, "duplicate")]


def test_window_one_compares_with_previous_key_only() -> None:
    a, b = book(7), book(8)
    lookup: dict[str | float, Any] = {"a": a, "b": b}
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-a-b-a-a-|", lookup, None)
        expected = exp("-a---b-a---|", lookup, None)
        results = start(source.pipe(dedupe(update_id, window=1)))
    assert results == expected


def test_window_one_key_equal_to_nothing_seen_passes() -> None:
    # The fast path's "no key yet" marker must not equal any real key.
    assert collect(reactivex.of(None, None, 0).pipe(dedupe(lambda x: x, window=1))) == [None, 0]


def test_old_key_passes_again_after_window_distinct_keys() -> None:
    ids = [1, 2, 3, 4, 1, 3, 4, 2, 1]
    # window 3: after 1..4 the set is {2,3,4}; 1 is forgotten and passes,
    # evicting 2; 3 and 4 are still known; 2 passes again, evicting 3;
    # 1 is known (it re-entered).
    out = collect(reactivex.from_iterable(ids).pipe(dedupe(lambda x: x, window=3)))
    assert out == [1, 2, 3, 4, 1, 2]


def test_a_dropped_repeat_does_not_refresh_its_key() -> None:
    out = collect(reactivex.from_iterable("abaca").pipe(dedupe(lambda x: x, window=2)))
    # "a" entered first; the repeat at 3 does not make it younger, so "c"
    # evicts it and the last "a" passes.
    assert out == ["a", "b", "c", "a"]


@dataclass(frozen=True)
class Key:
    """A hashable key that supports weak references, to count the ones kept alive."""

    n: int


def test_memory_is_bounded_by_window() -> None:
    alive: weakref.WeakSet[Key] = weakref.WeakSet()

    def key(n: int) -> Key:
        k = Key(n)
        alive.add(k)
        return k

    window = 64
    feed: Subject[int] = Subject()
    out: list[int] = []
    feed.pipe(dedupe(key, window=window)).subscribe(out.append)
    for n in range(10_000):
        feed.on_next(n)
    assert out == list(range(10_000))
    gc.collect()
    # Still subscribed, and only the operator holds keys: exactly the last
    # `window` are alive.
    assert sorted(k.n for k in alive) == list(range(10_000 - window, 10_000))
    for n in range(10_000 - window, 10_000):
        feed.on_next(n)
    assert len(out) == 10_000  # all still known


def test_each_subscription_starts_fresh() -> None:
    items = [book(i) for i in (1, 2, 1, 3, 2)]
    shared = reactivex.from_iterable(items).pipe(dedupe(update_id, window=8))
    first = collect(shared)
    second = collect(shared)
    assert first == second == [items[0], items[1], items[3]]


def test_error_and_completion_propagate() -> None:
    a, b = book(1), book(2)
    lookup: dict[str | float, Any] = {"a": a, "b": b}
    failure = ConnectionError("socket reset")
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-a-a-b-#", lookup, failure)
        expected = exp("-a---b-#", lookup, failure)
        results = start(source.pipe(dedupe(update_id)))
    assert results == expected


def test_a_failing_key_is_an_error_not_a_crash() -> None:
    errors: list[Exception] = []
    out: list[object] = []
    mixed: reactivex.Observable[Any] = reactivex.of(book(1), "not a snapshot")
    mixed.pipe(dedupe(update_id)).subscribe(out.append, errors.append)
    assert out == [book(1)]
    assert len(errors) == 1
    assert isinstance(errors[0], AttributeError)


def test_unhashable_key_is_an_error() -> None:
    errors: list[Exception] = []

    def identity(x: Any) -> Any:
        return x

    reactivex.of([1]).pipe(dedupe(identity)).subscribe(on_error=errors.append)
    assert [type(e) for e in errors] == [TypeError]


@pytest.mark.parametrize("window", [0, -1, True, 2.5])
def test_bad_window_is_rejected(window: Any) -> None:
    with pytest.raises(ValueError, match=r"dedupe window must be a positive int, got"):
        dedupe(update_id, window=window)
