"""Properties of the whole feed under duplicated and reordered input (Hypothesis).

Setting. A *clean stream* is a list of valid WebSocket frames of one kind. A
*perturbed stream* is the clean stream with its frames in any order (a
permutation) plus, for any frames, extra identical copies inserted anywhere
after the original. Messages are fed through `pipeline.feed.Feed` in list
order, message `i` received at `T0 + i` ms (so receive times follow arrival).

Properties checked:

1. klines (`test_klines_...`): the clean stream holds, for each open time in a
   set, one final kline (`x: true`) and any number of forming updates
   (`x: false`) before it. For every perturbation, `klines_1m` equals the
   frame of the clean stream: the `capacity` final klines with the greatest
   open times, sorted by open time. (Duplicates and order do not matter.)

2. order book and ticker (`test_order_book_...`, `test_ticker_...`): the clean
   stream has strictly increasing ids (`lastUpdateId`; ticker event time `E`,
   per symbol). For a perturbed stream `p`, let `keep(p)` be the messages
   `p[i]` whose id is greater than the id of every earlier `p[j]`, `j < i`, of
   the same symbol (the running maxima, in arrival order). Then the frame
   equals the frame the clean-stream rules give for `keep(p)` with its arrival
   times: its rows, snapshot by snapshot in arrival order (bids by level, then
   asks by level, `timestamp` = receive time floored to the ms), keeping whole
   snapshots from the newest while the rows fit `capacity`; for the ticker, one
   row per kept message, the last `capacity`. For a clean stream `p`,
   `keep(p) == p`. The expected frames are computed here directly from these
   rules, not through the sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
from capture_builders import MS, depth20, kline, raw_ws, ticker
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pipeline.clock import ReplayScheduler
from pipeline.config import FeedConfig
from pipeline.feed import Feed
from sinks.schemas import KLINES, ORDER_BOOK, TICKER

T0 = 1_700_000_000_000
CAPACITIES = {"klines_1m": 5, "order_book": 12, "ticker": 4}
SETTINGS = settings(max_examples=60, deadline=None)

decimal = st.integers(min_value=1, max_value=99_999).map(lambda n: f"{n // 100}.{n % 100:02d}")


def feed_through(frames: Sequence[str]) -> Feed:
    """Replay `frames` in order, frame `i` received at T0 + i ms, on a replay clock."""
    scheduler = ReplayScheduler()
    feed = Feed(FeedConfig(capacities=CAPACITIES), scheduler)
    for i, text in enumerate(frames):
        t = (T0 + i) * MS
        scheduler.advance_to_ns(t)
        feed.push(raw_ws(t, text))
    feed.complete()
    return feed


@st.composite
def perturbed(draw: st.DrawFn, clean: list[Any]) -> list[Any]:
    """`clean` reordered, with copies of some items inserted after their original."""
    items = list(draw(st.permutations(clean)))
    for _ in range(draw(st.integers(0, len(items)))):
        source = draw(st.integers(0, len(items) - 1))
        at = draw(st.integers(source + 1, len(items)))
        items.insert(at, items[source])
    return items


def frame(schema: pl.Schema, columns: list[list[Any]]) -> pl.DataFrame:
    series = []
    for (name, dtype), values in zip(schema.items(), columns, strict=True):
        if dtype == pl.Datetime("ms", "UTC"):
            series.append(pl.Series(name, values, dtype=pl.Int64).cast(dtype))
        elif dtype == pl.Float64:
            series.append(pl.Series(name, [float(v) for v in values], dtype=dtype))
        else:
            series.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(series)


def rows_to_frame(schema: pl.Schema, rows: list[list[Any]]) -> pl.DataFrame:
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in schema]
    return frame(schema, columns)


# ---------------------------------------------------------------- klines


@st.composite
def kline_streams(draw: st.DrawFn) -> tuple[list[str], pl.DataFrame]:
    """A clean stream of 1m kline frames and the frame it must give."""
    minutes = sorted(draw(st.sets(st.integers(0, 40), min_size=1, max_size=10)))
    frames: list[str] = []
    finals: list[tuple[int, list[str]]] = []
    for minute in minutes:
        open_time = T0 - T0 % 60_000 + minute * 60_000
        for _ in range(draw(st.integers(0, 2))):
            forming = draw(st.lists(decimal, min_size=5, max_size=5))
            frames.append(kline("HBARUSDT", open_time, forming, False, open_time + 1))
        values = draw(st.lists(decimal, min_size=5, max_size=5))
        frames.append(kline("HBARUSDT", open_time, values, True, open_time + 60_000))
        finals.append((open_time, values))
    kept = finals[-CAPACITIES["klines_1m"] :]
    expected = rows_to_frame(KLINES, [[t, *values] for t, values in kept])
    return frames, expected


@SETTINGS
@given(data=st.data(), stream=kline_streams())
def test_klines_ignore_duplicates_and_order(
    data: st.DataObject, stream: tuple[list[str], pl.DataFrame]
) -> None:
    frames, expected = stream
    clean = feed_through(frames)
    assert_frame_equal(clean.frames("HBARUSDT")["klines_1m"].get(), expected)
    messy = feed_through(data.draw(perturbed(frames)))
    assert_frame_equal(messy.frames("HBARUSDT")["klines_1m"].get(), expected)
    assert messy.stats.problems() == []


# ---------------------------------------------------------------- order book

Book = tuple[int, list[tuple[str, str]], list[tuple[str, str]]]


@st.composite
def book_streams(draw: st.DrawFn) -> list[Book]:
    """A clean stream: snapshots with strictly increasing ids and 1 to 3 levels a side."""
    ids = sorted(draw(st.sets(st.integers(1, 10_000), min_size=1, max_size=12)))
    level = st.tuples(decimal, decimal)
    return [
        (
            update_id,
            draw(st.lists(level, min_size=1, max_size=3)),
            draw(st.lists(level, min_size=1, max_size=3)),
        )
        for update_id in ids
    ]


def expected_order_book(arrivals: list[Book]) -> pl.DataFrame:
    """The running-maximum snapshots, as rows, whole snapshots kept from the newest."""
    snapshots: list[list[list[Any]]] = []
    best = 0
    for i, (update_id, bids, asks) in enumerate(arrivals):
        if update_id <= best:
            continue
        best = update_id
        t_ms = T0 + i
        rows = [[t_ms, update_id, "bid", n, p, q] for n, (p, q) in enumerate(bids)]
        rows += [[t_ms, update_id, "ask", n, p, q] for n, (p, q) in enumerate(asks)]
        snapshots.append(rows)
    kept: list[list[list[Any]]] = []
    total = 0
    for rows in reversed(snapshots):
        if total + len(rows) > CAPACITIES["order_book"]:
            break
        kept.insert(0, rows)
        total += len(rows)
    return rows_to_frame(ORDER_BOOK, [row for rows in kept for row in rows])


@SETTINGS
@given(data=st.data(), clean=book_streams())
def test_order_book_keeps_the_running_maxima(data: st.DataObject, clean: list[Book]) -> None:
    for arrivals in (clean, data.draw(perturbed(clean))):
        feed = feed_through([depth20("HBARUSDT", i, b, a) for i, b, a in arrivals])
        assert_frame_equal(
            feed.frames("HBARUSDT")["order_book"].get(), expected_order_book(arrivals)
        )
        counts = feed.stats.streams["HBARUSDT depth20"]
        assert counts.read == len(arrivals)
        assert counts.kept + counts.duplicate + counts.stale == len(arrivals)


# ---------------------------------------------------------------- ticker

Tick = tuple[str, int, tuple[str, ...]]


@st.composite
def ticker_streams(draw: st.DrawFn) -> list[Tick]:
    """Two symbols' tickers, each with strictly increasing event times, interleaved."""
    per_symbol: list[list[Tick]] = []
    for symbol in ("HBARUSDT", "ETHUSDT"):
        times = sorted(draw(st.sets(st.integers(0, 100_000), min_size=1, max_size=8)))
        per_symbol.append(
            [
                (symbol, T0 + e, tuple(draw(st.lists(decimal, min_size=8, max_size=8))))
                for e in times
            ]
        )
    # Interleave the two, each keeping its own order (a clean stream).
    hbar, eth = (iter(ticks) for ticks in per_symbol)
    turns = draw(st.permutations([0] * len(per_symbol[0]) + [1] * len(per_symbol[1])))
    return [next(eth if turn else hbar) for turn in turns]


def expected_ticker(arrivals: list[Tick], symbol: str) -> pl.DataFrame:
    rows: list[list[Any]] = []
    best = -1
    for s, event_ms, values in arrivals:
        if s == symbol and event_ms > best:
            best = event_ms
            rows.append([event_ms, event_ms, *values])
    return rows_to_frame(TICKER, rows[-CAPACITIES["ticker"] :])


def clean_per_symbol(stream: list[Tick]) -> bool:
    return all(
        [e for s, e, _ in stream if s == symbol] == sorted({e for s, e, _ in stream if s == symbol})
        for symbol in ("HBARUSDT", "ETHUSDT")
    )


@SETTINGS
@given(data=st.data(), clean=ticker_streams())
def test_ticker_keeps_the_running_maxima_per_symbol(data: st.DataObject, clean: list[Tick]) -> None:
    assert clean_per_symbol(clean)
    for arrivals in (clean, data.draw(perturbed(clean))):
        feed = feed_through([ticker(s, e, v) for s, e, v in arrivals])
        for symbol in ("HBARUSDT", "ETHUSDT"):
            assert_frame_equal(
                feed.frames(symbol)["ticker"].get(), expected_ticker(arrivals, symbol)
            )
        assert feed.stats.problems() == []
