"""The feed's fused chain steps equal the compositions of the operators they replace.

`pipeline._fused` runs a buffer's filters and its fold in one call, for speed.
Its definition is the composition of the public operators (`dedupe`,
`final_only`, `monotonic`) followed by the fold (write into the frame, count
`kept` or `unchanged`, publish kept events). For arbitrary event sequences
(Hypothesis: repeats, reorderings, forming and final klines, WebSocket and
REST sources, any dedupe window), both are fed the same events into fresh
frames, and the frames, every counter and the published events must be equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter, itemgetter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from reactivex import Observable
from reactivex.subject import Subject

from operators import dedupe, final_only, monotonic
from operators.events import BookSnapshot, Kline, Ticker
from pipeline._fused import Outlet, fold_step, kline_step, monotonic_step
from pipeline.stats import StreamCounts
from sinks.rolling_frame import RollingFrame, new_frame

SETTINGS = settings(max_examples=150, deadline=None)
MINUTE = 60_000
T0 = 1_732_600_020_000
KLINE_KEY = itemgetter(slice(2, 10))  # the feed's kline key

Run = tuple[RollingFrame[Any], StreamCounts, StreamCounts, list[Any]]


def counted(ws: StreamCounts, rest: StreamCounts) -> Callable[[Any, str], None]:
    def drop(event: Any, reason: str) -> None:
        (ws if event.source == "ws" else rest).drop(reason)

    return drop


def composed(
    buffer: str,
    capacity: int,
    events: Sequence[Any],
    steps: Callable[[StreamCounts, StreamCounts], list[Callable[[Observable[Any]], Any]]],
    one_stream: bool = False,
) -> Run:
    """The reference: operators composed on a Subject, then the fold as a plain sink."""
    frame = new_frame(buffer, capacity)
    ws = StreamCounts("ws")
    rest = ws if one_stream else StreamCounts("rest")
    published: list[Any] = []

    def fold(event: Any) -> None:
        counts = ws if event.source == "ws" else rest
        if frame.write(event):
            counts.kept += 1
            published.append(event)
        else:
            counts.unchanged += 1

    inlet: Subject[Any] = Subject()
    chain: Observable[Any] = inlet
    for step in steps(ws, rest):
        chain = step(chain)
    chain.subscribe(fold)
    for event in events:
        (ws if event.source == "ws" else rest).read += 1
        inlet.on_next(event)
    return frame, ws, rest, published


def fused(
    buffer: str,
    capacity: int,
    events: Sequence[Any],
    make: Callable[[StreamCounts, StreamCounts, Outlet], Callable[[Any], None]],
    one_stream: bool = False,
    watched: bool = True,
) -> Run:
    frame = new_frame(buffer, capacity)
    ws = StreamCounts("ws")
    rest = ws if one_stream else StreamCounts("rest")
    published: list[Any] = []
    subject: Subject[Any] = Subject()
    if watched:  # a subscriber makes the step publish
        subject.subscribe(lambda _: None)
    step = make(ws, rest, Outlet(frame.write, published.append, subject, Subject(), False))
    for event in events:
        step(event)
    return frame, ws, rest, published


def assert_same(expected: Run, got: Run, watched: bool = True) -> None:
    assert_frame_equal(got[0].get(), expected[0].get())
    assert got[1].row() == expected[1].row()
    assert got[2].row() == expected[2].row()
    assert got[3] == (expected[3] if watched else [])


# ---------------------------------------------------------------- klines
@st.composite
def klines(draw: st.DrawFn) -> list[Kline]:
    prices = st.sampled_from([0.0710, 0.0712, 0.0715])
    out = []
    for i in range(draw(st.integers(0, 40))):
        open_time = T0 + MINUTE * draw(st.integers(0, 6))
        close = draw(prices)
        out.append(
            Kline(
                "HBARUSDT",
                "1m",
                open_time,
                open_time + MINUTE - 1,
                0.0710,
                max(0.0715, close),
                0.0708,
                close,
                draw(st.sampled_from([10.0, 20.0])),
                draw(st.booleans()),
                (T0 + i) * 1_000_000,
                draw(st.sampled_from(["ws", "rest"])),
            )
        )
    # exact repeats of earlier events, anywhere after them
    for _ in range(draw(st.integers(0, len(out)))):
        source = draw(st.integers(0, len(out) - 1))
        out.insert(draw(st.integers(source + 1, len(out))), out[source])
    return out


@SETTINGS
@given(klines(), st.sampled_from([1, 2, 3, 5, 1024]), st.sampled_from([3, 60]), st.booleans())
def test_kline_step_equals_dedupe_then_final_only(
    events: list[Kline], window: int, capacity: int, watched: bool
) -> None:
    def steps(ws: StreamCounts, rest: StreamCounts) -> list[Any]:
        drop = counted(ws, rest)
        return [dedupe(KLINE_KEY, window, on_drop=drop), final_only(on_drop=drop)]

    def make(ws: StreamCounts, rest: StreamCounts, outlet: Outlet) -> Callable[[Any], None]:
        return kline_step(KLINE_KEY, window, ws, rest, fold_step(ws, rest, outlet))

    expected = composed("klines_1m", capacity, events, steps)
    assert_same(expected, fused("klines_1m", capacity, events, make, watched=watched), watched)


# ---------------------------------------------------------------- order book and ticker
def book(update_id: int, i: int, levels: int) -> BookSnapshot:
    bids = [[f"0.07{100 - n:03d}", f"{update_id}.5"] for n in range(levels)]
    asks = [[f"0.07{200 + n:03d}", f"{i}.25"] for n in range(levels)]
    return BookSnapshot("HBARUSDT", update_id, bids, asks, (T0 + i) * 1_000_000, "ws")


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3)), max_size=40),
    st.sampled_from([4, 10, 1000]),
    st.booleans(),
)
def test_order_book_step_equals_monotonic(
    ids: list[tuple[int, int]], capacity: int, watched: bool
) -> None:
    events = [book(update_id, i, levels) for i, (update_id, levels) in enumerate(ids)]
    key = attrgetter("last_update_id")

    def steps(ws: StreamCounts, rest: StreamCounts) -> list[Any]:
        return [monotonic(key, on_drop=counted(ws, rest))]

    def make(ws: StreamCounts, rest: StreamCounts, outlet: Outlet) -> Callable[[Any], None]:
        return monotonic_step(key, ws, rest, outlet)

    expected = composed("order_book", capacity, events, steps, one_stream=True)
    got = fused("order_book", capacity, events, make, one_stream=True, watched=watched)
    assert_same(expected, got, watched)


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["ws", "rest"])), max_size=40),
    st.sampled_from([1, 3, 1000]),
)
def test_ticker_step_equals_monotonic(ids: list[tuple[int, str]], capacity: int) -> None:
    events = [
        Ticker("HBARUSDT", T0 + e, 0.07, 1.0, 0.071, 2.0, float(i), 3.0, 4.0, 5.0, i, source)
        for i, (e, source) in enumerate(ids)
    ]
    key = attrgetter("event_time")

    def steps(ws: StreamCounts, rest: StreamCounts) -> list[Any]:
        return [monotonic(key, on_drop=counted(ws, rest))]

    def make(ws: StreamCounts, rest: StreamCounts, outlet: Outlet) -> Callable[[Any], None]:
        return monotonic_step(key, ws, rest, outlet)

    assert_same(
        composed("ticker", capacity, events, steps), fused("ticker", capacity, events, make)
    )


def test_kline_step_checks_its_window() -> None:
    counts = StreamCounts("ws")
    for window in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="dedupe window"):
            kline_step(KLINE_KEY, window, counts, counts, lambda _: None)  # type: ignore[arg-type]


def test_kline_step_memory_is_bounded() -> None:
    """Like `dedupe`: only the last `window` distinct keys are remembered."""
    counts = StreamCounts("ws")
    finals: list[Kline] = []
    step = kline_step(KLINE_KEY, 2, counts, counts, finals.append)
    a, b, c = (
        Kline(
            "X", "1m", T0 + n * MINUTE, T0 + n * MINUTE + 1, 1.0, 1.0, 1.0, 1.0, 1.0, True, n, "ws"
        )
        for n in range(3)
    )
    for event in (a, b, a, c, a):  # a is forgotten once c arrives: seen again
        step(event)
    assert finals == [a, b, c, a]
    assert (counts.read, counts.duplicate) == (5, 1)
