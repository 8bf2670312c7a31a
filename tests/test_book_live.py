"""The local book in a live run against the fake exchange on 127.0.0.1.

The synthetic market's book is a pure function of its 100 ms tick, and each
tick has its own `lastUpdateId`, so the book a run ends with can be compared
level for level with the market's true book at the run's last applied `u`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import polars as pl
import pytest
from live_helpers import DEFAULT_WS_OPTIONS, live_run, market_clock_ns, run_against
from polars.testing import assert_frame_equal

from operators import BookResync
from pipeline import DataManager
from pipeline.cli import main
from pipeline.config import FeedConfig
from pipeline.fake_exchange import Clock, FakeExchange, Faults, SyntheticMarket
from pipeline.fake_exchange._book import BOOK_TICK_MS, BookModel
from pipeline.fake_exchange._tape import Tape
from pipeline.live import LiveRun, streams_for
from pipeline.local_book import LocalBooks, SymbolBook
from pipeline.replay import replay
from sinks.capture_writer import CaptureWriter
from sinks.schemas import BOOK

SYMBOL = "HBARUSDT"
SPEED = 5.0
"""Market seconds per wall second: 50 diffs a second, without a busy machine falling behind."""
LEVELS = 100
"""Levels per side of the synthetic book: a REST snapshot (1000) holds all of it."""
DEPTH = "/api/v3/depth"
SMALL = FeedConfig(capacities={"klines_1m": 2, "klines_1h": 2, "klines_1d": 2})
"""Short preloads: the synthetic market's long ones are slow on a busy machine."""


def true_book(market: SyntheticMarket, update_id: int) -> pl.DataFrame:
    """The market's whole book at the tick whose `lastUpdateId` is `update_id`."""
    model = BookModel(Tape(market.profile(SYMBOL), market.seed), market.book_levels)
    j = market.clock.now_ms() // BOOK_TICK_MS
    while model.update_id(j) > update_id:
        j -= 1
    assert model.update_id(j) == update_id, "no tick of the market has this update id"
    snap = model.snapshot(j, market.book_levels)
    bids = cast(list[list[str]], snap["bids"])
    asks = cast(list[list[str]], snap["asks"])
    rows = [("bid", p, q) for p, q in bids] + [("ask", p, q) for p, q in asks]
    return pl.DataFrame(
        {
            "side": [side for side, _, _ in rows],
            "price": [float(p) for _, p, _ in rows],
            "quantity": [float(q) for _, _, q in rows],
            "update_id": [update_id] * len(rows),
        },
        schema=BOOK,
    )


def market() -> SyntheticMarket:
    return SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED), book_levels=LEVELS)


async def run_book(
    exchange: FakeExchange,
    m: SyntheticMarket,
    seconds: float,
    *,
    capture: CaptureWriter | None = None,
    ws_options: dict[str, object] | None = None,
) -> LiveRun:
    """`seconds` of a run keeping the local book, against `exchange` (started and stopped)."""
    options = ws_options or DEFAULT_WS_OPTIONS
    return await run_against(
        exchange, m, seconds, ws_options=options, capture=capture, config=SMALL, book=True
    )


def the_book(live: LiveRun) -> SymbolBook:
    assert live.books is not None
    book = live.books.get(SYMBOL)
    assert book is not None
    return book


def test_the_diff_stream_is_subscribed_only_with_the_book() -> None:
    assert "hbarusdt@depth@100ms" not in streams_for([SYMBOL])
    assert streams_for(["HBARUSDT", "ethusdt"], book=True) == [
        "hbarusdt@kline_1m", "hbarusdt@depth20@100ms", "hbarusdt@ticker", "hbarusdt@depth@100ms",
        "ethusdt@kline_1m", "ethusdt@depth20@100ms", "ethusdt@ticker", "ethusdt@depth@100ms",
    ]  # fmt: skip
    assert LiveRun([SYMBOL]).books is None


@pytest.mark.asyncio
async def test_the_live_book_is_the_markets_book_and_replays_the_same(tmp_path: Path) -> None:
    m = market()
    exchange = FakeExchange(m)
    path = tmp_path / "run.jsonl"
    live = await run_book(exchange, m, 3.0, capture=CaptureWriter(path))
    book = the_book(live)
    # One snapshot, asked for by the first diff (after the socket opened), and used.
    assert dict(book.resyncs) == {"start": 1}
    assert exchange.stats.rest_paths[DEPTH] == 1
    assert book.syncs == 1
    assert live.feed is not None
    assert live.feed.stats.streams[f"{SYMBOL} depth"].kept > 10, "diffs were applied"
    frame = live.feed.frames(SYMBOL)["book"].get()
    assert frame.height > 0
    assert_frame_equal(frame, true_book(m, book.update_id))
    assert "book HBARUSDT: " in live.summary()
    assert "book snapshots: 1 requested, 1 fetched" in live.summary()

    # The snapshot went into the capture like every response: a replay rebuilds the same book.
    books = LocalBooks()
    replayed = replay(path, local_book=books)
    assert_frame_equal(replayed.frames(SYMBOL)["book"].get(), frame)


@pytest.mark.asyncio
async def test_a_dropped_socket_resyncs_the_book_from_a_new_snapshot() -> None:
    m = market()
    # About 100 frames a second on the socket: the first one drops after 2 s.
    exchange = FakeExchange(m, faults=Faults(drop_after_frames=200, faulty_connections=1))
    live = live_run(await exchange.start(), m, 4.5, config=SMALL, book=True)
    # The book's update id when the reconnect made it ask again: the last one before the drop.
    asked_at: dict[str, int] = {}
    assert live.books is not None
    books = live.books

    def note(request: BookResync) -> None:
        book = books.get(request.symbol)
        assert book is not None
        asked_at.setdefault(request.reason, book.update_id)

    books.resyncs.subscribe(note)
    try:
        await live.run()
    finally:
        await exchange.stop()
    assert exchange.stats.faults["drop"] == 1, "the fault never happened"
    assert live.ws is not None
    assert live.ws.stats.reconnects == 1
    book = the_book(live)
    assert book.resyncs["start"] == 1
    assert book.resyncs["disconnect"] == 1
    # A snapshot taken just before the reconnect may be behind the new stream: asked again.
    assert set(book.resyncs) <= {"start", "disconnect", "snapshot_behind"}
    assert 1 <= exchange.stats.rest_paths[DEPTH] <= book.resyncs.total()
    # In sync again after the reconnect: past where the old socket left it, and right.
    assert book.update_id > asked_at["disconnect"]
    assert live.feed is not None
    assert_frame_equal(live.feed.frames(SYMBOL)["book"].get(), true_book(m, book.update_id))


@pytest.mark.asyncio
async def test_a_flapping_stream_does_not_hammer_rest() -> None:
    m = market()
    # Every socket drops after a few frames: a reconnect, and a book resync, each time.
    exchange = FakeExchange(m, faults=Faults(drop_after_frames=40))
    live = await run_book(exchange, m, 4.0, ws_options={"backoff_base": 0.05, "backoff_cap": 0.2})
    assert live.ws is not None
    assert live.ws.stats.reconnects >= 3
    book = the_book(live)
    assert book.resyncs["disconnect"] >= 3
    # Fetches of a symbol are 1 s, then 2 s, ... apart: at most 3 start within 4 s.
    assert live.snapshots is not None
    assert 1 <= exchange.stats.rest_paths[DEPTH] <= live.snapshots.stats.fetches <= 3
    # Whatever state it is in, the frame holds a true book of the market, or none yet.
    assert live.feed is not None
    frame = live.feed.frames(SYMBOL)["book"].get()
    if book.update_id:
        assert_frame_equal(frame, true_book(m, book.update_id))
    else:
        assert frame.is_empty()


def test_cli_demo_dumps_the_book(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "3", "--dump", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "book HBARUSDT: " in err
    book = pl.read_parquet(tmp_path / "HBARUSDT" / "book.parquet")
    assert book.schema == BOOK
    assert book.height > 0


def test_cli_run_has_no_book_unless_asked() -> None:
    from pipeline.cli import build_parser

    args = build_parser(["run"]).parse_args(["run"])
    assert args.book is False
    assert build_parser(["run"]).parse_args(["run", "--book"]).book is True
    assert build_parser(["demo"]).parse_args(["demo"]).book is True
    assert build_parser(["demo"]).parse_args(["demo", "--no-book"]).book is False


@pytest.mark.asyncio
async def test_the_data_manager_serves_the_book_when_asked() -> None:
    m = market()
    exchange = FakeExchange(m)
    rest_url, ws_url = await exchange.start()
    dm = DataManager(rest_url=rest_url, ws_url=ws_url, clock_ns=market_clock_ns(m))
    try:
        assert dm.get_buffer("book").schema == BOOK
        assert dm.get_buffer("book").is_empty()
        await dm.subscribe_local_book(SYMBOL)
        async with asyncio.timeout(10):
            while dm.get_buffer("book").is_empty():
                await asyncio.sleep(0.02)
        # Synced from one snapshot, asked for by the first diff; more diffs applied since.
        book = dm.books.get(SYMBOL)
        assert book is not None
        first = book.update_id
        async with asyncio.timeout(10):
            while book.update_id == first:
                await asyncio.sleep(0.02)
        frame = dm.get_buffer("book")
        assert not book.stale
        assert_frame_equal(frame, true_book(m, int(frame["update_id"][0])))
        assert dict(book.resyncs) == {"start": 1}
        assert exchange.stats.rest_paths[DEPTH] == 1
        await dm.close_websockets()
    finally:
        await dm.close_websockets()
        await exchange.stop()
