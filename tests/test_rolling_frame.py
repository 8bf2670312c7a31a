"""The rolling frames: semantics of each buffer, copies, caching, and conflated publishing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from operators.events import BookSnapshot, Kline, Ticker
from sinks import (
    DEFAULT_CAPACITY,
    KLINES,
    ORDER_BOOK,
    SCHEMAS,
    TICKER,
    KlineFrame,
    OrderBookFrame,
    RollingFrame,
    TickerFrame,
    new_frame,
)
from sinks import rolling_frame as rolling_frame_module
from sinks._ring import ColumnRing

T0 = 1_732_600_020_000  # ms, a minute boundary
MINUTE = 60_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def kline(minute: int, close: float = 1.0, *, final: bool = True, volume: float = 10.0) -> Kline:
    open_time = T0 + minute * MINUTE
    return Kline(
        "HBARUSDT", "1m", open_time, open_time + MINUTE - 1, 1.0, 2.0, 0.5, close, volume,
        final, (open_time + MINUTE) * 1_000_000, "ws",
    )  # fmt: skip


def kline_rows(*klines: Kline) -> pl.DataFrame:
    return pl.DataFrame(
        [(at(k.open_time), k.open, k.high, k.low, k.close, k.volume) for k in klines],
        schema=KLINES,
        orient="row",
    )


def ticker(i: int, last: float = 0.07) -> Ticker:
    return Ticker(
        "HBARUSDT", T0 + i, 0.0711, 100.0 + i, 0.0713, 50.0, last, 5.0, 1e8, 7e6,
        (T0 + i) * 1_000_000, "ws",
    )  # fmt: skip


def ticker_rows(*tickers: Ticker) -> pl.DataFrame:
    return pl.DataFrame(
        [(at(e.event_time), e.event_time, *e[2:10]) for e in tickers],
        schema=TICKER,
        orient="row",
    )


def book(update_id: int, bids: int = 20, asks: int = 20, t: int | None = None) -> BookSnapshot:
    return BookSnapshot(
        "HBARUSDT",
        update_id,
        [[f"0.07{99 - k:02d}", f"{update_id}.{k}"] for k in range(bids)],
        [[f"0.08{k:02d}", f"{k}.5"] for k in range(asks)],
        T0 * 1_000_000 + update_id * 100_000_000 if t is None else t,
        "ws",
    )


def book_rows(*snapshots: BookSnapshot) -> pl.DataFrame:
    """The naive way: one Python tuple per level, Python float() per string."""
    rows = [
        (at(s.t // 1_000_000), s.last_update_id, side, level, float(p), float(q))
        for s in snapshots
        for side, levels in (("bid", s.bids), ("ask", s.asks))
        for level, (p, q) in enumerate(levels)
    ]
    return pl.DataFrame(rows, schema=ORDER_BOOK, orient="row")


# One writer per frame kind, for the tests every kind must pass.
Kind = tuple[Callable[[int], RollingFrame[Any]], Callable[[int], Any]]
KINDS: dict[str, Kind] = {
    "klines": (lambda capacity: KlineFrame(capacity), lambda i: kline(i, close=1.0 + i)),
    "order_book": (lambda capacity: OrderBookFrame(capacity), lambda i: book(i + 1, 2, 3)),
    "ticker": (lambda capacity: TickerFrame(capacity), ticker),
}
kinds = pytest.mark.parametrize("kind", list(KINDS))


def filled(kind: str, capacity: int, writes: int) -> tuple[RollingFrame[Any], Callable[[int], Any]]:
    make, event = KINDS[kind]
    frame = make(capacity)
    for i in range(writes):
        frame.write(event(i))
    return frame, event


def cached(frame: RollingFrame[Any]) -> pl.DataFrame | None:
    """The frame's internal cache (a function, so type checkers do not narrow it)."""
    return frame._cache


def write(frame: RollingFrame[Any], event: Any) -> None:
    """`frame.write` as an observer or scheduled action (those must return None)."""
    frame.write(event)


# ---------------------------------------------------------------- the ring


def test_ring_wraps_and_copies_out_in_order() -> None:
    ring = ColumnRing([np.int64], 3)
    for value in range(5):
        ring.columns[0][ring.append_slot()] = value
    (ordered,) = ring.ordered()
    assert ordered.tolist() == [2, 3, 4]
    ordered[0] = 99  # a copy, never a view of the ring
    assert ring.ordered_column(0).tolist() == [2, 3, 4]
    assert [ring.slot(i) for i in range(3)] == [2, 0, 1]


# ---------------------------------------------------------------- every kind


@kinds
def test_empty_frame_has_the_schema(kind: str) -> None:
    frame, _ = filled(kind, 50, 0)
    got = frame.get()
    assert got.schema == frame.schema
    assert got.height == 0
    assert len(frame) == 0
    assert frame.version == 0


@kinds
def test_frame_is_built_strictly_with_its_schema(kind: str) -> None:
    frame, _ = filled(kind, 50, 7)
    assert frame.get().schema == SCHEMAS[frame.name]
    assert frame.get().height == len(frame)


@kinds
def test_get_returns_a_copy_the_caller_may_change(kind: str) -> None:
    frame, event = filled(kind, 50, 5)
    before = frame.get()
    expected = before.clone()
    mine = frame.get()
    assert mine is not before
    mine[0, "timestamp"] = at(0)
    mine.insert_column(0, pl.Series("extra", range(mine.height)))
    mine.drop_in_place(mine.columns[-1])
    assert_frame_equal(frame.get(), expected)
    # Later writes (enough to wrap the ring) never reach a frame already returned.
    for i in range(5, 200):
        frame.write(event(i))
    assert_frame_equal(before, expected)
    assert not frame.get().equals(expected)


@kinds
def test_frame_is_built_only_when_read_and_cached_until_the_next_write(kind: str) -> None:
    frame, event = filled(kind, 50, 3)
    assert cached(frame) is None  # writes alone never build a frame
    first = frame.get()
    cache = cached(frame)
    assert cache is not None
    assert frame._cache_version == frame.version
    second = frame.get()
    assert cached(frame) is cache  # not rebuilt
    assert second is not first
    assert_frame_equal(second, first)
    assert frame.write(event(3))
    assert cached(frame) is cache  # still the old one: the write built nothing
    third = frame.get()
    assert cached(frame) is not cache
    assert frame._cache_version == frame.version
    assert third.height >= first.height


@kinds
def test_version_counts_changes(kind: str) -> None:
    frame, event = filled(kind, 50, 0)
    assert [frame.write(event(i)) for i in range(4)] == [True] * 4
    assert frame.version == 4


@kinds
def test_capacity_must_be_positive(kind: str) -> None:
    make, _ = KINDS[kind]
    with pytest.raises(ValueError, match="capacity"):
        make(0)


def test_reads_on_another_thread_see_whole_writes() -> None:
    frame = TickerFrame(capacity=100)
    done = threading.Event()

    def writer() -> None:
        for i in range(3000):
            frame.write(ticker(i))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads == 0:
        ids = frame.get()["event_id"].to_numpy()
        # Every row complete and in order: consecutive event times, at most `capacity`.
        assert len(ids) <= 100
        assert (np.diff(ids) == 1).all()
        reads += 1
    thread.join()
    assert frame.get()["event_id"].to_list() == [T0 + i for i in range(2900, 3000)]


# ---------------------------------------------------------------- klines


def test_klines_in_order_kept_sorted_and_trimmed_to_capacity() -> None:
    frame = KlineFrame(capacity=3)
    written = [kline(i, close=1.0 + i) for i in range(5)]
    assert all(frame.write(k) for k in written)
    assert_frame_equal(frame.get(), kline_rows(*written[2:]))
    assert len(frame) == 3


def test_kline_same_open_time_later_replaces_identical_is_a_no_op() -> None:
    frame = KlineFrame(capacity=5)
    frame.write(kline(0))
    frame.write(kline(1, close=1.5))
    version = frame.version
    assert frame.write(kline(1, close=1.6))
    assert frame.version == version + 1
    assert not frame.write(kline(1, close=1.6))
    assert frame.version == version + 1
    assert frame.write(kline(0, close=0.9))  # an older row, upserted in place
    assert_frame_equal(frame.get(), kline_rows(kline(0, close=0.9), kline(1, close=1.6)))


def test_forming_klines_are_ignored() -> None:
    frame = KlineFrame(capacity=5)
    frame.write(kline(0, close=1.0))
    assert not frame.write(kline(0, close=2.0, final=False))
    assert not frame.write(kline(1, final=False))
    assert frame.version == 1
    assert_frame_equal(frame.get(), kline_rows(kline(0, close=1.0)))


def test_out_of_order_klines_are_inserted_sorted() -> None:
    frame = KlineFrame(capacity=4)
    for minute in (5, 1, 3):
        assert frame.write(kline(minute))
    assert_frame_equal(frame.get(), kline_rows(kline(1), kline(3), kline(5)))
    assert frame.write(kline(4))  # fills the frame
    assert frame.write(kline(2))  # inside the kept range: the oldest (1) falls out
    assert_frame_equal(frame.get(), kline_rows(*(kline(m) for m in (2, 3, 4, 5))))
    assert not frame.write(kline(0))  # older than every row of a full frame: dropped
    assert frame.write(kline(2, close=7.0))  # upsert of the oldest kept row
    assert frame.write(kline(6))  # and the in-order append still works after a reorder
    assert_frame_equal(frame.get(), kline_rows(*(kline(m) for m in (3, 4, 5, 6))))


def test_kline_timestamp_is_the_open_time_in_ms_utc() -> None:
    frame = KlineFrame()
    frame.write(kline(0))
    assert frame.get()["timestamp"].to_list() == [at(T0)]
    assert frame.get()["timestamp"].dtype == pl.Datetime("ms", "UTC")


# ---------------------------------------------------------------- order book


def test_one_snapshot_is_bids_then_asks_best_first() -> None:
    snapshot = BookSnapshot(
        "HBARUSDT", 42, [["0.0712", "100"], ["0.0711", "5.5"]], [["0.0713", "50"]],
        T0 * 1_000_000 + 999_999, "ws",
    )  # fmt: skip
    frame = OrderBookFrame()
    assert frame.write(snapshot)
    expected = pl.DataFrame(
        {
            "timestamp": [at(T0)] * 3,  # receive time floored to the millisecond
            "update_id": [42, 42, 42],
            "side": ["bid", "bid", "ask"],
            "level": [0, 1, 0],
            "price": [0.0712, 0.0711, 0.0713],
            "quantity": [100.0, 5.5, 50.0],
        },
        schema=ORDER_BOOK,
    )
    assert_frame_equal(frame.get(), expected)


def test_whole_oldest_snapshots_are_dropped() -> None:
    frame = OrderBookFrame(capacity=100)
    full = [book(i) for i in range(1, 4)]
    for snapshot in full:
        frame.write(snapshot)
    assert len(frame) == 80  # a third 40-row snapshot does not fit beside two
    assert_frame_equal(frame.get(), book_rows(*full[1:]))
    thin = [book(4, 10, 10), book(5, 5, 5)]
    for snapshot in thin:
        frame.write(snapshot)
    # 40 + 20 + 10 = 70 rows; adding the oldest 40-row snapshot would pass 100.
    assert_frame_equal(frame.get(), book_rows(full[2], *thin))
    assert frame.write(book(6, 0, 30))  # one-sided: 100 rows exactly
    assert len(frame) == 100


def test_default_order_book_keeps_25_full_snapshots() -> None:
    frame = OrderBookFrame()
    snapshots = [book(i) for i in range(1, 31)]
    for snapshot in snapshots:
        frame.write(snapshot)
    assert frame.capacity == 1000
    assert_frame_equal(frame.get(), book_rows(*snapshots[-25:]))


def test_snapshot_larger_than_the_capacity_keeps_its_best_levels() -> None:
    frame = OrderBookFrame(capacity=10)
    frame.write(book(1, 2, 2))
    assert frame.write(book(2, 20, 3))
    got = frame.get()
    assert got["side"].to_list() == ["bid"] * 5 + ["ask"] * 3
    assert got["level"].to_list() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert got["update_id"].unique().to_list() == [2]


def test_empty_snapshot_changes_nothing() -> None:
    frame = OrderBookFrame()
    frame.write(book(1, 1, 1))
    assert not frame.write(book(2, 0, 0))
    assert frame.version == 1


def test_order_book_capacity_must_hold_a_bid_and_an_ask() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        OrderBookFrame(capacity=1)


def test_a_level_that_is_not_a_decimal_is_named_when_read() -> None:
    frame = OrderBookFrame()
    frame.write(book(1, 1, 1))
    frame.write(BookSnapshot("HBARUSDT", 7, [["0.07", "abc"]], [], T0 * 1_000_000, "ws"))
    with pytest.raises(ValueError, match=r"quantity 'abc' \(update_id 7\)"):
        frame.get()


def test_thin_books_change_the_side_and_level_layout() -> None:
    frame = OrderBookFrame(capacity=1000)
    snapshots = [book(1), book(2), book(3, 3, 1)]
    frame.write(snapshots[0])
    frame.write(snapshots[1])
    frame.get()  # caches the 20/20 layout
    frame.write(snapshots[2])
    assert_frame_equal(frame.get(), book_rows(*snapshots))


# ---------------------------------------------------------------- ticker


def test_ticker_keeps_the_last_rows_in_arrival_order() -> None:
    frame = TickerFrame(capacity=3)
    events = [ticker(i, last=0.07 + i / 1000) for i in range(5)]
    for event in events:
        assert frame.write(event)
    assert_frame_equal(frame.get(), ticker_rows(*events[2:]))
    assert frame.get()["event_id"].to_list() == [T0 + 2, T0 + 3, T0 + 4]


# ---------------------------------------------------------------- new_frame


@pytest.mark.parametrize("buffer", ["klines_1m", "klines_1h", "klines_1d", "order_book", "ticker"])
def test_new_frame_makes_each_buffer_with_its_default_capacity(buffer: str) -> None:
    frame = new_frame(buffer)
    assert frame.name == buffer
    assert frame.schema == SCHEMAS[buffer]
    assert frame.capacity == DEFAULT_CAPACITY[buffer]
    assert new_frame(buffer, 70).capacity == 70
    assert new_frame(buffer).get().schema == SCHEMAS[buffer]


def test_new_frame_rejects_unknown_buffers() -> None:
    with pytest.raises(ValueError, match=r"unknown buffer 'klines_5m'"):
        new_frame("klines_5m")


def test_book_plugs_in_through_register_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    factories = {k: v for k, v in rolling_frame_module._FACTORIES.items() if k != "book"}
    monkeypatch.setattr(rolling_frame_module, "_FACTORIES", factories)
    with pytest.raises(ValueError, match="register_frame"):
        new_frame("book")

    class Fake(TickerFrame):
        def __init__(self) -> None:
            super().__init__(1, "book")
            self.schema = SCHEMAS["book"]

    def factory(capacity: int | None) -> RollingFrame[Any]:
        return Fake()

    rolling_frame_module.register_frame("book", factory)
    assert isinstance(new_frame("book"), Fake)
    rolling_frame_module.register_frame("book", factory)  # the same factory again: fine
    with pytest.raises(ValueError, match="already"):
        rolling_frame_module.register_frame("book", lambda capacity: Fake())
    with pytest.raises(ValueError, match="no schema"):
        rolling_frame_module.register_frame("candles", factory)


# ---------------------------------------------------------------- frames()

on_next = ReactiveTest.on_next


def as_dicts(frame: RollingFrame[Any], scheduler: TestScheduler) -> reactivex.Observable[Any]:
    def to_dicts(df: pl.DataFrame) -> list[dict[str, Any]]:
        return df.to_dicts()

    return frame.frames(scheduler).pipe(ops.map(to_dicts))


def test_subscriber_gets_the_current_frame_then_one_frame_per_burst() -> None:
    scheduler = TestScheduler()
    frame = TickerFrame(capacity=10)
    frame.write(ticker(0))

    def burst(*events: Ticker) -> None:
        for event in events:
            frame.write(event)

    scheduler.schedule_absolute(300, lambda *_: burst(ticker(1), ticker(2), ticker(3)))
    scheduler.schedule_absolute(400, lambda *_: burst(ticker(4)))
    observer = scheduler.start(lambda: as_dicts(frame, scheduler))
    assert observer.messages == [
        on_next(200, ticker_rows(ticker(0)).to_dicts()),
        on_next(300, ticker_rows(*(ticker(i) for i in range(4))).to_dicts()),
        on_next(400, ticker_rows(*(ticker(i) for i in range(5))).to_dicts()),
    ]


def test_slow_subscriber_gets_the_latest_frame_not_every_frame() -> None:
    scheduler = TestScheduler()
    frame = KlineFrame(capacity=60)
    seen: list[tuple[float, int]] = []
    builds: list[int] = []
    versioned_get = frame._versioned_get

    def counting_get() -> tuple[int, pl.DataFrame]:
        builds.append(frame.version)
        return versioned_get()

    frame._versioned_get = counting_get  # type: ignore[method-assign]

    def slow(df: pl.DataFrame) -> None:
        seen.append((scheduler.clock, df.height))
        scheduler.sleep(100)  # busy for 100 ticks of virtual time

    scheduler.schedule_absolute(200, lambda *_: frame.frames(scheduler).subscribe(slow))
    for minute in range(10):
        scheduler.schedule_absolute(210 + 10 * minute, lambda *_, m=minute: write(frame, kline(m)))
    scheduler.start()
    # The frame at subscribe, then, once the subscriber is free again, all ten
    # writes made meanwhile as one frame; the writes built no frame of their own.
    assert seen == [(200, 0), (300, 10)]
    assert builds == [0, 10]


def test_each_subscriber_starts_from_the_frame_at_its_subscription() -> None:
    scheduler = TestScheduler()
    frame = KlineFrame(capacity=60)
    first: list[int] = []
    second: list[int] = []
    frame.write(kline(0))
    frame.frames(scheduler).subscribe(lambda df: first.append(df.height))
    scheduler.advance_to(10)
    frame.write(kline(1))
    frame.write(kline(2))
    frame.frames(scheduler).subscribe(lambda df: second.append(df.height))
    scheduler.advance_to(20)
    assert first == [1, 3]
    assert second == [3]


def test_each_subscriber_gets_its_own_copy() -> None:
    scheduler = TestScheduler()
    frame = TickerFrame(capacity=10)
    frame.write(ticker(0))
    got: list[pl.DataFrame] = []
    frame.frames(scheduler).subscribe(got.append)
    frame.frames(scheduler).subscribe(got.append)
    scheduler.advance_to(1)
    assert got[0] is not got[1]
    got[0][0, "last_price"] = -1.0
    assert got[1]["last_price"][0] == ticker(0).last_price


def test_no_subscriber_no_ticks_and_disposal_stops_deliveries() -> None:
    scheduler = TestScheduler()
    frame = TickerFrame(capacity=10)
    assert not frame._ticks.observers
    got: list[int] = []
    subscription = frame.frames(scheduler).subscribe(lambda df: got.append(df.height))
    scheduler.advance_to(1)
    frame.write(ticker(1))
    subscription.dispose()  # before the pending delivery runs
    scheduler.advance_to(2)
    frame.write(ticker(2))
    scheduler.advance_to(3)
    assert got == [0]
    assert not frame._ticks.observers


def test_without_a_scheduler_delivery_follows_the_write_or_the_batch() -> None:
    frame = TickerFrame(capacity=100)
    got: list[int] = []
    frame.frames().subscribe(lambda df: got.append(df.height))
    assert got == [0]  # on subscribe, synchronously
    frame.write(ticker(1))
    assert got == [0, 1]  # right after a write made outside any trampoline
    # Writes made inside a current-thread action are delivered once it ends.
    reactivex.from_iterable([ticker(i) for i in range(2, 52)]).subscribe(lambda e: write(frame, e))
    assert got == [0, 1, 51]


def test_a_frame_that_cannot_be_built_ends_the_subscription_with_the_error() -> None:
    scheduler = TestScheduler()
    frame = OrderBookFrame()
    errors: list[Exception] = []
    frame.frames(scheduler).subscribe(on_error=errors.append)
    frame.write(BookSnapshot("HBARUSDT", 1, [["x", "1"]], [], 0, "ws"))
    scheduler.advance_to(1)
    assert len(errors) == 1
    assert isinstance(errors[0], ValueError)
    assert not frame._ticks.observers


# ---------------------------------------------------------------- property tests

kline_writes = st.lists(
    st.tuples(
        st.integers(0, 25),  # open time, minutes
        st.sampled_from([1.0, 1.5, 2.25]),  # close: few values, so identical upserts happen
        st.sampled_from([True, True, True, False]),  # final, mostly
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 12), writes=kline_writes)
def test_kline_frame_equals_a_dict_by_open_time(
    capacity: int, writes: list[tuple[int, float, bool]]
) -> None:
    frame = KlineFrame(capacity=capacity)
    model: dict[int, Kline] = {}
    before = frame.get()
    for minute, close, final in writes:
        event = kline(minute, close=close, final=final)
        changed = frame.write(event)
        if final:
            model[event.open_time] = event
        expected = kline_rows(*(model[k] for k in sorted(model)[-capacity:]))
        after = frame.get()
        assert_frame_equal(after, expected)
        assert changed == (not after.equals(before))
        before = after


# Binance's decimals: up to 9 integer digits and 8 decimals, trailing zeros and all.
decimal = st.builds(
    lambda whole, digits, fraction: f"{whole}.{fraction % 10**digits:0{digits}d}",
    st.integers(0, 10**9 - 1),
    st.integers(1, 8),
    st.integers(0, 10**8 - 1),
)
level = st.tuples(decimal, decimal).map(list)
snapshots = st.lists(
    st.tuples(
        st.lists(level, max_size=25),
        st.lists(level, max_size=25),
        st.integers(0, 2**62),  # receive time, ns
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(2, 120), written=snapshots, read_every=st.integers(1, 5))
def test_order_book_frame_equals_a_naive_frame_built_from_rows(
    capacity: int, written: list[tuple[list[list[str]], list[list[str]], int]], read_every: int
) -> None:
    frame = OrderBookFrame(capacity=capacity)
    kept: list[BookSnapshot] = []
    for i, (bids, asks, t) in enumerate(written):
        event = BookSnapshot("HBARUSDT", i, bids, asks, t, "ws")
        assert frame.write(event) == bool(bids or asks)
        if len(bids) + len(asks) > capacity:  # the documented truncation
            event = event._replace(bids=bids[: capacity // 2], asks=asks[: capacity // 2])
        kept.append(event)
        while sum(len(s.bids) + len(s.asks) for s in kept) > capacity:
            kept.pop(0)
        if i % read_every == 0:  # reads in between exercise the layout cache
            assert_frame_equal(frame.get(), book_rows(*kept))
    assert_frame_equal(frame.get(), book_rows(*kept))
    assert len(frame) == sum(len(s.bids) + len(s.asks) for s in kept)
