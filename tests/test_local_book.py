"""Tests for `operators.local_book` and `sinks.book_frame.BookFrame`.

Marble tests pin each rule of Binance's local-order-book procedure; hypothesis
checks the operator against a naive dict replay, with and without lost,
repeated and disconnected traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing.marbles import marbles_testing

from operators import (
    BookEvent,
    BookResync,
    BookSnapshot,
    BookUpdate,
    Connected,
    DepthDiff,
    Disconnected,
    Ignored,
    local_book,
)
from operators.events import REPLACED_REASON
from sinks.book_frame import BookFrame
from sinks.rolling_frame import new_frame
from sinks.schemas import BOOK

SYMBOL = "HBARUSDT"
Side = dict[str, str]
Draw = Callable[[st.SearchStrategy[Any]], Any]


# ------------------------------------------------------------------ builders


def _levels(side: Side | None) -> list[list[str]]:
    return [[p, q] for p, q in (side or {}).items()]


def diff(
    first: int, final: int, b: Side | None = None, a: Side | None = None, t: int = 0
) -> DepthDiff:
    """A `depthUpdate` with ids `[first, final]`; `t` defaults to `final`."""
    return DepthDiff(
        SYMBOL, 1_700_000_000_000 + final, first, final, _levels(b), _levels(a), t or final
    )


def snap(last_update_id: int, b: Side, a: Side, t: int, source: str = "rest") -> BookSnapshot:
    return BookSnapshot(SYMBOL, last_update_id, _levels(b), _levels(a), t, source)


def _floats(side: Side) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q in side.items()]


def reset(update_id: int, b: Side, a: Side, t: int) -> BookUpdate:
    """The whole book after a (re)sync, in `canon` order."""
    bids = sorted(_floats(b), reverse=True)
    asks = sorted(_floats(a))
    return BookUpdate(
        SYMBOL,
        update_id,
        True,
        True,
        bids,
        asks,
        bids[0][0] if bids else None,
        asks[0][0] if asks else None,
        t,
    )


def update(update_id: int, b: Side, a: Side, best: tuple[float, float], t: int) -> BookUpdate:
    return BookUpdate(SYMBOL, update_id, True, False, _floats(b), _floats(a), *best, t)


def stale(update_id: int, best: tuple[float | None, float | None], t: int) -> BookUpdate:
    return BookUpdate(SYMBOL, update_id, False, False, [], [], *best, t)


def resync(reason: str, t: int) -> BookResync:
    return BookResync(SYMBOL, reason, t)


def canon(event: BookEvent) -> BookEvent:
    """Whole-book updates list levels in dict order; tests compare them best first."""
    if isinstance(event, BookUpdate) and event.reset:
        return event._replace(bids=sorted(event.bids, reverse=True), asks=sorted(event.asks))
    return event


def run(events: list[object], max_buffered: int = 1000) -> list[BookEvent]:
    out: list[BookEvent] = []
    reactivex.from_iterable(events).pipe(
        local_book(SYMBOL, max_buffered), ops.map(canon)
    ).subscribe(out.append)
    return out


def marbles(
    source: str, lookup: dict[str | float, Any], expected: str, max_buffered: int = 1000
) -> tuple[list[Any], list[Any]]:
    """(results, expected) for a hot source piped through `local_book`."""
    with marbles_testing() as (start, _cold, hot, exp):
        src = hot(source, lookup, None)
        want = exp(expected, lookup, None)
        got = start(src.pipe(local_book(SYMBOL, max_buffered), ops.map(canon)))
    return got, want


def fold(events: list[BookEvent]) -> BookFrame:
    frame = BookFrame(SYMBOL)
    for event in events:
        frame.write(event)
    return frame


def book_frame(b: Side, a: Side, update_id: int) -> pl.DataFrame:
    """The frame a book must give: bids best first, then asks best first."""
    bids = sorted(_floats(b), reverse=True)
    asks = sorted(_floats(a))
    rows = [("bid", p, q) for p, q in bids] + [("ask", p, q) for p, q in asks]
    return pl.DataFrame(
        {
            "side": [r[0] for r in rows],
            "price": [r[1] for r in rows],
            "quantity": [r[2] for r in rows],
            "update_id": [update_id] * len(rows),
        },
        schema=BOOK,
    )


BID = {"0.07100000": "500.00000000", "0.07000000": "100.00000000"}
ASK = {"0.07200000": "300.00000000", "0.07300000": "20.00000000"}


# ------------------------------------------------------------------ the procedure, rule by rule


def test_buffers_until_the_snapshot_then_applies_in_order() -> None:
    lookup: dict[str | float, Any] = {
        "a": diff(100, 101, b={"0.07100000": "500.00000000"}, t=1),
        "b": diff(102, 103, a={"0.07200000": "250.00000000"}, t=2),
        "s": snap(101, BID, ASK, t=3),
        "c": diff(104, 104, b={"0.07000000": "0.00000000"}, t=4),
        # Expected:
        "r": resync("start", 1),
        "u": reset(103, BID, {**ASK, "0.07200000": "250.00000000"}, 3),
        "v": update(104, {"0.07000000": "0"}, {}, (0.071, 0.072), 4),
    }
    got, want = marbles("-a-b-s-c", lookup, "-r---u-v")
    assert got == want


def test_drops_diffs_up_to_last_update_id_and_holds_a_snapshot_ahead_of_them() -> None:
    # The snapshot (105) is ahead of every diff so far: it waits, the diffs
    # up to 105 are dropped, and the first diff covering 106 syncs the book.
    lookup: dict[str | float, Any] = {
        "a": diff(100, 101, b={"0.06900000": "1.00000000"}, t=1),
        "b": diff(102, 103, b={"0.06800000": "1.00000000"}, t=2),
        "s": snap(105, BID, ASK, t=3),
        "c": diff(104, 105, b={"0.06700000": "1.00000000"}, t=4),
        "e": diff(106, 107, a={"0.07400000": "7.00000000"}, t=5),
        "r": resync("start", 1),
        "u": reset(107, BID, {**ASK, "0.07400000": "7"}, 5),
    }
    got, want = marbles("-a-b-s-c-e", lookup, "-r-------u")
    assert got == want


def test_a_snapshot_before_any_diff_needs_no_request() -> None:
    lookup: dict[str | float, Any] = {
        "s": snap(100, BID, ASK, t=1),
        "a": diff(99, 100, b={"0.06900000": "1.00000000"}, t=2),
        "e": diff(101, 101, b={"0.07100000": "400.00000000"}, t=3),
        "u": reset(101, {**BID, "0.07100000": "400"}, ASK, 3),
    }
    got, want = marbles("-s-a-e", lookup, "-----u")
    assert got == want


def test_a_held_snapshot_that_the_stream_skips_past_asks_again() -> None:
    events: list[object] = [
        snap(100, BID, ASK, t=1),
        diff(103, 104, t=2),  # 101..102 never arrive: the snapshot cannot be used
        snap(103, BID, ASK, t=3),
    ]
    assert run(events) == [resync("snapshot_behind", 2), reset(104, BID, ASK, 3)]


def test_first_applied_diff_may_straddle_last_update_id() -> None:
    # U <= lastUpdateId + 1 <= u: 100..103 covers 102, so it is applied whole.
    events: list[object] = [
        diff(100, 103, b={"0.07150000": "5.00000000"}, t=1),
        diff(104, 104, a={"0.07300000": "0.00000000"}, t=2),
        snap(101, BID, ASK, t=3),
    ]
    assert run(events) == [
        resync("start", 1),
        reset(104, {**BID, "0.07150000": "5"}, {"0.07200000": "300"}, 3),
    ]


def test_a_snapshot_older_than_the_buffered_diffs_asks_again() -> None:
    lookup: dict[str | float, Any] = {
        "a": diff(105, 106, b={"0.07150000": "5.00000000"}, t=1),
        "s": snap(101, BID, ASK, t=2),  # 102..104 were never seen: cannot bridge
        "S": snap(105, BID, ASK, t=3),
        "r": resync("start", 1),
        "x": resync("snapshot_behind", 2),
        "u": reset(106, {**BID, "0.07150000": "5"}, ASK, 3),
    }
    got, want = marbles("-a-s-S", lookup, "-r-x-u")
    assert got == want


def test_a_gap_marks_the_book_stale_asks_for_a_snapshot_and_resyncs() -> None:
    lookup: dict[str | float, Any] = {
        "s": snap(100, BID, ASK, t=1),
        "a": diff(101, 101, b={"0.07110000": "1.00000000"}, t=2),
        "g": diff(103, 103, b={"0.07120000": "2.00000000"}, t=3),  # 102 is lost
        "h": diff(104, 104, a={"0.07200000": "0.00000000"}, t=4),
        "S": snap(103, {**BID, "0.07120000": "2"}, ASK, t=5),
        "u": reset(101, {**BID, "0.07110000": "1"}, ASK, 2),
        "x": stale(101, (0.0711, 0.072), 3),
        "y": resync("gap", 3),
        "v": reset(104, {**BID, "0.07120000": "2"}, {"0.07300000": "20"}, 5),
    }
    got, want = marbles("-s-a-g-----h-S", lookup, "---u-(x,y)---v")
    assert got == want


def test_the_stale_book_is_the_last_in_sync_state() -> None:
    out = run(
        [
            snap(100, BID, ASK, t=1),
            diff(101, 101, b={"0.07110000": "1.00000000"}, t=2),
            diff(103, 103, b={"0.07120000": "2.00000000"}, t=3),
            diff(104, 104, a={"0.07200000": "0.00000000"}, t=4),
        ]
    )
    frame = fold(out)
    assert frame.stale
    assert frame.update_id == 101
    assert_frame_equal(frame.get(), book_frame({**BID, "0.07110000": "1"}, ASK, 101))


def test_a_gap_inside_the_buffer_syncs_up_to_it_then_asks_again() -> None:
    events: list[object] = [
        diff(101, 101, b={"0.07110000": "1.00000000"}, t=1),
        diff(102, 102, b={"0.07120000": "1.00000000"}, t=2),
        diff(105, 105, b={"0.07130000": "1.00000000"}, t=3),  # 103, 104 lost
        snap(100, BID, ASK, t=4),
        snap(104, BID, ASK, t=5),
    ]
    assert run(events) == [
        resync("start", 1),
        reset(102, {**BID, "0.07110000": "1", "0.07120000": "1"}, ASK, 4),
        stale(102, (0.0712, 0.072), 4),
        resync("gap", 4),
        reset(105, {**BID, "0.07130000": "1"}, ASK, 5),
    ]


def test_overflow_drops_the_oldest_diffs_and_asks_again() -> None:
    lookup: dict[str | float, Any] = {
        "a": diff(101, 101, t=1),
        "b": diff(102, 102, t=2),
        "c": diff(103, 103, t=3),
        "e": diff(104, 104, b={"0.07150000": "1.00000000"}, t=4),
        "f": diff(105, 105, t=5),
        "s": snap(101, BID, ASK, t=6),  # 102 and 103 were dropped: too old now
        "S": snap(103, BID, ASK, t=7),
        "r": resync("start", 1),
        "o": resync("overflow", 3),
        "O": resync("overflow", 5),
        "x": resync("snapshot_behind", 6),
        "u": reset(105, {**BID, "0.07150000": "1"}, ASK, 7),
    }
    got, want = marbles("-a-b-c-e-f-s-S", lookup, "-r---o---O-x-u", max_buffered=2)
    assert got == want


def test_a_crossed_book_resyncs_and_keeps_the_last_good_state() -> None:
    # The book missed that 0.0720 was taken: a bid at 0.0725 then crosses it.
    lookup: dict[str | float, Any] = {
        "s": snap(100, BID, ASK, t=1),
        "a": diff(101, 101, b={"0.07110000": "1.00000000"}, t=2),
        "x": diff(102, 102, b={"0.07250000": "1.00000000"}, t=3),
        "S": snap(102, {"0.07250000": "1", "0.07110000": "1"}, {"0.07300000": "20"}, t=4),
        "y": diff(103, 103, a={"0.07300000": "15.00000000"}, t=5),
        "u": reset(101, {**BID, "0.07110000": "1"}, ASK, 2),
        "k": stale(101, (0.0711, 0.072), 3),
        "r": resync("crossed", 3),
        "v": reset(103, {"0.07250000": "1", "0.07110000": "1"}, {"0.07300000": "15"}, 5),
    }
    got, want = marbles("-s-a-x-----S-y", lookup, "---u-(k,r)---v")
    assert got == want
    frame = fold([lookup[k] for k in "ukr"])
    assert frame.stale
    assert_frame_equal(frame.get(), book_frame({**BID, "0.07110000": "1"}, ASK, 101))


def test_a_crossed_snapshot_never_syncs() -> None:
    locked = {"0.07200000": "1.00000000"}  # best bid == best ask counts as crossed
    events: list[object] = [
        diff(101, 101, t=1),
        snap(100, {**BID, **locked}, ASK, t=2),
        snap(100, BID, ASK, t=3),
    ]
    assert run(events) == [resync("start", 1), resync("crossed", 2), reset(101, BID, ASK, 3)]


def test_zero_quantity_removes_the_level_whatever_its_spelling() -> None:
    events: list[object] = [
        snap(100, {"0.05000000": "10.00000000", "0.04900000": "1.00000000"}, {"0.051": "2"}, t=1),
        diff(101, 101, t=2),
        # "0.0500" is the level "0.05000000"; "0.0480" was never in the book: normal.
        diff(102, 102, b={"0.0500": "0.00000000", "0.0480": "0"}, t=3),
    ]
    out = run(events)
    assert out[-1] == update(102, {"0.0500": "0", "0.0480": "0"}, {}, (0.049, 0.051), 3)
    frame = fold(out)
    assert not frame.stale
    assert_frame_equal(frame.get(), book_frame({"0.049": "1"}, {"0.051": "2"}, 102))
    assert (frame.get()["quantity"] > 0).all()


def test_a_disconnect_marks_stale_and_asks_once_the_new_stream_is_live() -> None:
    lookup: dict[str | float, Any] = {
        "s": snap(100, BID, ASK, t=1),
        "a": diff(101, 101, b={"0.07110000": "1.00000000"}, t=2),
        "d": Disconnected(1, 1006, "abnormal closure", 3),
        "c": Connected(2, "wss://stream.binance.us:9443/stream?streams=hbarusdt@depth", 4),
        "e": diff(150, 151, a={"0.07250000": "1.00000000"}, t=5),
        "S": snap(150, BID, ASK, t=6),
        "u": reset(101, {**BID, "0.07110000": "1"}, ASK, 2),
        "k": stale(101, (0.0711, 0.072), 3),
        "r": resync("disconnect", 5),
        "v": reset(151, BID, {**ASK, "0.07250000": "1"}, 6),
    }
    got, want = marbles("-s-a-d-c-e-S", lookup, "---u-k---r-v")
    assert got == want


def test_a_switchover_close_keeps_the_book_in_sync() -> None:
    # The retired socket's successor already delivers the same diff sequence.
    events: list[object] = [
        snap(100, BID, ASK, t=1),
        diff(101, 101, b={"0.07110000": "1.00000000"}, t=2),
        Disconnected(1, 1000, REPLACED_REASON, 3),
        diff(101, 101, b={"0.07110000": "1.00000000"}, t=4),  # the overlap, a repeat
        diff(102, 102, a={"0.07250000": "1.00000000"}, t=5),
    ]
    out = run(events)
    assert not any(isinstance(e, BookResync) for e in out)
    assert fold(out).update_id == 102
    assert not fold(out).stale


def test_a_disconnect_while_waiting_forgets_the_buffered_diffs() -> None:
    # Were 101 kept, the snapshot would sync from it and then hit a gap at 110.
    events: list[object] = [
        diff(101, 101, t=1),
        Disconnected(1, 1006, "", 2),
        diff(110, 110, t=3),
        snap(100, BID, ASK, t=4),
    ]
    assert run(events) == [
        resync("start", 1),
        resync("disconnect", 3),
        resync("snapshot_behind", 4),
    ]


def test_repeats_are_ignored_and_overlaps_applied_while_in_sync() -> None:
    events: list[object] = [
        snap(100, BID, ASK, t=1),
        diff(101, 102, b={"0.07110000": "1.00000000"}, t=2),
        diff(101, 102, b={"0.07110000": "1.00000000"}, t=3),  # a repeat
        diff(99, 100, b={"0.06000000": "1.00000000"}, t=4),  # older than the book
        diff(102, 104, b={"0.07110000": "3.00000000"}, t=5),  # overlaps 102
        snap(103, BID, ASK, t=6),  # a late answer: the book is in sync already
    ]
    out = run(events)
    assert out == [
        reset(102, {**BID, "0.07110000": "1"}, ASK, 2),
        update(104, {"0.07110000": "3"}, {}, (0.0711, 0.072), 5),
    ]


@pytest.mark.parametrize(
    "level", [["abc", "1"], ["0.071", "nan"], ["0.071", "-1"], ["inf", "1"], ["0.071"]]
)
def test_a_bad_level_in_a_diff_resyncs(level: list[str]) -> None:
    bad = DepthDiff(SYMBOL, 0, 101, 101, [level], [], 2)
    out = run([snap(100, BID, ASK, t=1), diff(101, 101, t=0), bad, snap(101, BID, ASK, t=3)])
    # 101 synced the book; the malformed repeat of 101 is ignored as a repeat.
    assert out == [reset(101, BID, ASK, 101)]
    bad = DepthDiff(SYMBOL, 0, 102, 102, [["0.0711", "1"], level], [], 2)
    out = run([snap(100, BID, ASK, t=1), diff(101, 101, t=0), bad, diff(103, 103, t=3)])
    assert out == [
        reset(101, BID, ASK, 101),
        stale(101, (0.071, 0.072), 2),
        resync("bad_diff", 2),
    ]
    # The half-applied diff never reached a consumer.
    assert_frame_equal(fold(out).get(), book_frame(BID, ASK, 101))


def test_a_bad_snapshot_asks_again() -> None:
    events: list[object] = [
        diff(101, 101, t=1),
        BookSnapshot(SYMBOL, 100, [["0.071", "x"]], [], 2, "rest"),
        snap(100, BID, ASK, t=3),
    ]
    assert run(events) == [resync("start", 1), resync("bad_snapshot", 2), reset(101, BID, ASK, 3)]


def test_other_symbols_partial_depth_and_other_events_are_ignored() -> None:
    other = DepthDiff("BTCUSDT", 0, 1, 1, [["1.0", "1.0"]], [], 1)
    events: list[object] = [
        other,
        Ignored("hbarusdt@aggTrade", 1),
        snap(100, BID, ASK, t=1, source="ws"),  # depth20: not a REST snapshot
        BookSnapshot("BTCUSDT", 100, [], [], 2, "rest"),
        Connected(1, "wss://x", 2),
        diff(101, 101, t=3),
        snap(100, BID, ASK, t=4),
        other,
    ]
    assert run(events) == [resync("start", 3), reset(101, BID, ASK, 4)]


def test_symbol_matching_ignores_case() -> None:
    out: list[BookEvent] = []
    reactivex.from_iterable([snap(100, BID, ASK, 1), diff(101, 101, t=2)]).pipe(
        local_book("hbarusdt")
    ).subscribe(out.append)
    assert [type(e) for e in out] == [BookUpdate]


def test_each_subscription_starts_fresh() -> None:
    events: list[object] = [diff(101, 101, t=1), snap(100, BID, ASK, t=2), diff(102, 102, t=3)]
    source = reactivex.from_iterable(events).pipe(local_book(SYMBOL), ops.map(canon))
    first: list[BookEvent] = []
    second: list[BookEvent] = []
    source.subscribe(first.append)
    source.subscribe(second.append)
    assert first == second
    assert first[:2] == [resync("start", 1), reset(101, BID, ASK, 2)]


def test_a_request_can_be_answered_synchronously() -> None:
    # The live pipeline may answer a BookResync with a snapshot from inside
    # on_next: the operator must be settled before it emits the request.
    subject: Subject[object] = Subject()
    snapshots = {100: snap(100, BID, ASK, t=10), 102: snap(102, BID, ASK, t=11)}
    answered = iter([100, 102])
    out: list[BookEvent] = []

    def on_event(event: BookEvent) -> None:
        out.append(canon(event))
        if isinstance(event, BookResync):
            subject.on_next(snapshots[next(answered)])

    subject.pipe(local_book(SYMBOL)).subscribe(on_event)
    subject.on_next(diff(101, 101, t=1))
    subject.on_next(diff(103, 103, t=2))  # a gap: 102 is answered at once
    assert out == [
        resync("start", 1),
        reset(101, BID, ASK, 10),
        stale(101, (0.071, 0.072), 2),
        resync("gap", 2),
        reset(103, BID, ASK, 11),
    ]


@pytest.mark.parametrize(
    ("symbol", "max_buffered"), [("", 10), ("HBARUSDT", 0), ("HBARUSDT", True), (None, 10)]
)
def test_bad_arguments_are_refused(symbol: Any, max_buffered: Any) -> None:
    with pytest.raises(ValueError, match="local_book"):
        local_book(symbol, max_buffered)


# ------------------------------------------------------------------ BookFrame


def test_book_frame_before_any_sync_is_empty_and_stale() -> None:
    frame = BookFrame(SYMBOL)
    assert frame.stale
    assert len(frame) == 0
    assert frame.update_id == 0
    assert frame.get().schema == BOOK
    assert frame.get().is_empty()
    # Changes without a whole book first cannot be placed: ignored.
    assert not frame.write(update(101, {"0.071": "1"}, {}, (0.071, 0.072), 1))
    assert not frame.write(resync("start", 1))
    assert frame.version == 0


def test_book_frame_orders_best_first_and_stamps_update_id() -> None:
    out = run(
        [
            snap(100, BID, ASK, t=1),
            diff(101, 101, b={"0.07050000": "5.00000000"}, a={"0.07250000": "1.5"}, t=2),
        ]
    )
    frame = fold(out)
    want = book_frame({**BID, "0.0705": "5"}, {**ASK, "0.0725": "1.5"}, 101)
    assert_frame_equal(frame.get(), want)
    assert frame.get()["side"].to_list() == ["bid"] * 3 + ["ask"] * 3
    assert len(frame) == 6
    assert not frame.stale


def test_book_frame_versions_and_caches() -> None:
    frame = BookFrame(SYMBOL)
    assert frame.write(reset(100, BID, ASK, 1))
    assert frame.version == 1
    first = frame.get()
    assert_frame_equal(frame.get(), first)
    assert frame.version == 1
    assert frame.write(update(101, {"0.071": "0"}, {}, (0.07, 0.072), 2))
    assert frame.version == 2
    assert frame.get().height == 3
    assert first.height == 4  # a copy: later writes never reach it
    # Going stale changes the state but not the rows.
    assert frame.write(stale(101, (0.07, 0.072), 3))
    assert frame.version == 3
    assert frame.stale
    assert frame.get().height == 3
    # Out of sync, changes do not apply; a whole book does.
    assert not frame.write(update(102, {"0.05": "1"}, {}, (0.07, 0.072), 4))
    assert frame.write(reset(105, {"0.05": "1"}, {"0.06": "1"}, 5))
    assert (frame.stale, frame.version) == (False, 4)
    assert_frame_equal(frame.get(), book_frame({"0.05": "1"}, {"0.06": "1"}, 105))


def test_book_frame_keeps_only_its_symbol_and_depth() -> None:
    frame = BookFrame("hbarusdt", depth=1)
    assert not frame.write(reset(100, BID, ASK, 1)._replace(symbol="BTCUSDT"))
    assert frame.write(reset(100, BID, ASK, 1))
    assert_frame_equal(frame.get(), book_frame({"0.071": "500"}, {"0.072": "300"}, 100))
    assert len(frame) == 2


def test_book_frame_is_registered_for_new_frame() -> None:
    frame = new_frame("book")
    assert isinstance(frame, BookFrame)
    assert frame.schema == BOOK
    assert isinstance(new_frame("book", 20), BookFrame)


def test_book_frame_publishes_frames() -> None:
    frame = BookFrame(SYMBOL)
    seen: list[int] = []
    frame.frames().subscribe(lambda f: seen.append(f.height))
    frame.write(reset(100, BID, ASK, 1))
    frame.write(update(101, {"0.071": "0"}, {}, (0.07, 0.072), 2))
    assert seen == [0, 4, 3]


# ------------------------------------------------------------------ properties

# Bids and asks live in disjoint price bands, so no generated book ever crosses.
_BID_TICKS = st.integers(1, 12)
_ASK_TICKS = st.integers(13, 24)
_QTY = st.integers(0, 3)  # 0 removes


def _price(tick: int) -> str:
    return f"{tick / 100:.8f}"


@st.composite
def _side_changes(draw: st.DrawFn, ticks: st.SearchStrategy[int]) -> dict[str, str]:
    pairs = draw(st.dictionaries(ticks, _QTY, max_size=4))
    return {_price(t): f"{q}.00000000" for t, q in pairs.items()}


class History:
    """A true book's history: diffs with contiguous ids and the book after each."""

    def __init__(
        self, start: tuple[Side, Side], diffs: list[DepthDiff], books: dict[int, tuple[Side, Side]]
    ) -> None:
        self.start = start
        self.diffs = diffs
        self.books = books  # update id (0 and each diff's u) -> the true book

    @property
    def last(self) -> int:
        return self.diffs[-1].final_id


def _apply(book: tuple[Side, Side], d: DepthDiff) -> tuple[Side, Side]:
    """The naive replay: absolute quantities, zero deletes (keys compared as numbers)."""
    out = []
    for side, changes in zip(book, (d.bids, d.asks), strict=True):
        by_value = {float(p): (p, q) for p, q in side.items()}
        for p, q in changes:
            if float(q) == 0:
                by_value.pop(float(p), None)
            else:
                by_value[float(p)] = (p, q)
        out.append(dict(by_value.values()))
    return out[0], out[1]


@st.composite
def histories(draw: st.DrawFn, min_diffs: int = 1) -> History:
    start = (
        {k: v for k, v in draw(_side_changes(_BID_TICKS)).items() if float(v)},
        {k: v for k, v in draw(_side_changes(_ASK_TICKS)).items() if float(v)},
    )
    books = {0: start}
    book = start
    diffs = []
    u = 0
    for i in range(draw(st.integers(min_diffs, 16))):
        first = u + 1
        u = first + draw(st.integers(0, 2))
        d = DepthDiff(
            SYMBOL,
            i,
            first,
            u,
            _levels(draw(_side_changes(_BID_TICKS))),
            _levels(draw(_side_changes(_ASK_TICKS))),
            1000 + i,
        )
        book = _apply(book, d)
        books[u] = book
        diffs.append(d)
    return History(start, diffs, books)


def _snapshot_at(history: History, draw: Draw, index: int, t: int) -> BookSnapshot:
    """The true book after `index` diffs, or, half the time when that diff spans
    several ids, the book part-way through the next diff (some of its levels at
    an intermediate quantity), which that diff's absolute quantities repair."""
    prev = history.diffs[index - 1].final_id if index else 0
    bids, asks = history.books[prev]
    lid = prev
    if index < len(history.diffs):
        nxt = history.diffs[index]
        if nxt.final_id > nxt.first_id and draw(st.booleans()):
            lid = draw(st.integers(nxt.first_id, nxt.final_id - 1))
            bids, asks = dict(bids), dict(asks)
            for side, changes in ((bids, nxt.bids), (asks, nxt.asks)):
                for p, _q in changes:
                    mid = draw(st.sampled_from(["keep", "absent", "1.50000000"]))
                    if mid == "absent":
                        side.pop(p, None)
                    elif mid != "keep":
                        side[p] = mid
    return snap(lid, bids, asks, t)


def _as_floats(book: tuple[Side, Side]) -> tuple[dict[float, float], dict[float, float]]:
    return dict(_floats(book[0])), dict(_floats(book[1]))


def _check_in_sync_states(history: History, out: list[BookEvent]) -> BookFrame:
    """Every state a consumer sees while in sync is the true book at its update id.

    The states are folded here by hand (building a frame per event would be
    slow); the `BookFrame` fed alongside is compared with the truth at the end.
    """
    frame = BookFrame(SYMBOL)
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    last_synced = 0
    for event in out:
        frame.write(event)
        if not isinstance(event, BookUpdate):
            continue
        if not event.synced:
            assert frame.stale
            assert event.update_id == last_synced
            continue
        assert not frame.stale
        if event.reset:
            bids, asks = dict(event.bids), dict(event.asks)
        else:
            for side, changes in ((bids, event.bids), (asks, event.asks)):
                for p, q in changes:
                    if q:
                        side[p] = q
                    else:
                        side.pop(p, None)
        last_synced = event.update_id
        assert (bids, asks) == _as_floats(history.books[last_synced])
        assert event.best_bid == max(bids, default=None)
        assert event.best_ask == min(asks, default=None)
    if last_synced:
        assert_frame_equal(frame.get(), book_frame(*history.books[last_synced], last_synced))
    return frame


@settings(max_examples=80, deadline=None)
@given(data=st.data(), history=histories())
def test_contiguous_diffs_equal_a_naive_replay(data: st.DataObject, history: History) -> None:
    n = len(history.diffs)
    index = data.draw(st.integers(0, n), label="snapshot after diff")
    arrives = data.draw(st.integers(0, n), label="snapshot arrives after diff")
    snapshot = _snapshot_at(history, data.draw, index, t=1)
    events: list[object] = [*history.diffs]
    events.insert(arrives, snapshot)

    out = run(events)

    assert all(not isinstance(e, BookUpdate) or e.synced for e in out)
    resyncs = [e for e in out if isinstance(e, BookResync)]
    assert resyncs == ([resync("start", 1000)] if arrives else [])
    frame = _check_in_sync_states(history, out)
    if snapshot.last_update_id >= history.last:
        # Nothing ever reaches lastUpdateId + 1: the book never syncs.
        assert frame.stale
        assert frame.get().is_empty()
    else:
        assert not frame.stale
        assert_frame_equal(frame.get(), book_frame(*history.books[history.last], history.last))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), history=histories(min_diffs=4))
def test_lossy_traffic_is_never_served_wrong_and_recovers(
    data: st.DataObject, history: History
) -> None:
    # Lost, repeated and disconnected traffic with snapshots at random points,
    # then a clean tail: a diff, a snapshot just before it, and the rest.
    n = len(history.diffs)
    tail = data.draw(st.integers(1, n - 1), label="clean tail starts at diff")
    events: list[object] = []
    t = 0
    for i, d in enumerate(history.diffs[:tail]):
        action = data.draw(st.sampled_from(["send", "send", "send", "drop", "repeat", "cut"]))
        if action != "drop":
            events.append(d)
        if action == "repeat":
            events.append(d)
        if action == "cut":
            events.append(Disconnected(1, 1006, "", d.t))
        if data.draw(st.booleans()):
            t += 1
            events.append(_snapshot_at(history, data.draw, data.draw(st.integers(0, i)), t))
    first = history.diffs[tail]
    events.append(first)
    events.append(_snapshot_at(history, data.draw, tail, t + 1))
    events.extend(history.diffs[tail + 1 :])
    max_buffered = data.draw(st.integers(1, 8), label="max_buffered")

    out = run(events, max_buffered)

    frame = _check_in_sync_states(history, out)
    assert not frame.stale
    assert_frame_equal(frame.get(), book_frame(*history.books[history.last], history.last))
