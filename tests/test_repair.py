"""`pipeline.repair`: the hold-back of live messages, and REST repairs against the fake exchange.

The repairer runs with a real `RestClient` over loopback whose responses enter
a real `Feed`; the market is the deterministic synthetic one on the wall clock,
so every row fetched is checked against the market's own final candles.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any

import polars as pl
import pytest
import pytest_asyncio
from polars.testing import assert_frame_equal

from operators.events import REPLACED_REASON, Connected, Disconnected, Gap, RawMessage
from pipeline.config import FeedConfig
from pipeline.fake_exchange import FakeExchange, SyntheticMarket
from pipeline.feed import Feed
from pipeline.repair import Holdback, KlineRepairer, RepairCounters
from pipeline.rest import RestClient

SYMBOL = "HBARUSDT"
OTHER = "BTCUSDT"
MINUTE_MS = 60_000


# ---------------------------------------------------------------- Holdback
def message(n: int) -> RawMessage:
    return RawMessage(n, "ws", 1, f"frame {n}")


def test_holdback_passes_through_when_not_held() -> None:
    out: list[RawMessage] = []
    holdback = Holdback(out.append)
    assert not holdback.holding
    holdback(message(1))
    assert out == [message(1)]


def test_holdback_keeps_messages_until_released_in_order() -> None:
    out: list[RawMessage] = []
    holdback = Holdback(out.append, held=True)
    holdback(message(1))
    holdback(message(2))
    assert out == []
    assert holdback.release() == 2
    assert out == [message(1), message(2)]
    holdback(message(3))
    assert out == [message(1), message(2), message(3)]
    assert holdback.release() == 0  # nothing held: harmless


def test_holdback_holds_nest_and_everything_ends_them_all() -> None:
    out: list[RawMessage] = []
    holdback = Holdback(out.append)
    holdback.hold()
    holdback.hold()
    holdback(message(1))
    assert holdback.release() == 0  # one hold is left
    holdback(message(2))
    assert out == []
    assert holdback.release() == 2
    assert out == [message(1), message(2)]
    holdback.hold()
    holdback.hold()
    holdback(message(3))
    assert holdback.release(everything=True) == 1
    assert not holdback.holding
    assert out[-1] == message(3)


def test_holdback_release_passes_messages_held_meanwhile_once() -> None:
    out: list[RawMessage] = []

    def push(raw: RawMessage) -> None:
        out.append(raw)
        if raw.t == 1:
            holdback(message(9))  # a push that leads to another message

    holdback = Holdback(push, held=True)
    holdback(message(1))
    holdback(message(2))
    holdback.release()
    assert out == [message(1), message(9), message(2)]


# ---------------------------------------------------------------- KlineRepairer
class Bench:
    """A fake exchange, a REST client feeding a `Feed`, and a repairer over both."""

    def __init__(
        self, market: SyntheticMarket, exchange: FakeExchange, rest: RestClient, feed: Feed
    ) -> None:
        self.market = market
        self.exchange = exchange
        self.rest = rest
        self.feed = feed
        self.counters = RepairCounters()
        self.symbols = [SYMBOL]
        self.tasks: list[asyncio.Task[None]] = []
        self.repairer = KlineRepairer(
            rest,
            feed,
            feed.config,
            self.counters,
            self.spawn,
            symbols=lambda: self.symbols,
            now_ms=market.clock.now_ms,
        )

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(work))

    async def settle(self) -> None:
        while self.tasks:
            tasks, self.tasks = self.tasks, []
            await asyncio.gather(*tasks)

    def requests(self) -> int:
        return self.exchange.stats.rest_paths.get("/api/v3/klines", 0)

    def frame(self, symbol: str = SYMBOL) -> pl.DataFrame:
        return self.feed.frames(symbol)["klines_1m"].get()

    def now_open(self) -> int:
        """Open time of the forming 1m candle."""
        now = self.market.clock.now_ms()
        return now - now % MINUTE_MS

    def truth(self, frame: pl.DataFrame, symbol: str = SYMBOL) -> pl.DataFrame:
        opens = frame["timestamp"].dt.epoch("ms")
        first, last = opens.min(), opens.max()
        assert isinstance(first, int)
        assert isinstance(last, int)
        rows = self.market.klines(symbol, "1m", first, last, (last - first) // MINUTE_MS + 1)
        return pl.DataFrame(
            {
                "timestamp": [r[0] for r in rows],
                **{
                    name: [float(str(r[i])) for r in rows]
                    for i, name in enumerate(["open", "high", "low", "close", "volume"], 1)
                },
            }
        ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))

    def assert_every_final_once(self, symbol: str = SYMBOL) -> pl.DataFrame:
        frame = self.frame(symbol)
        opens = frame["timestamp"].dt.epoch("ms")
        assert opens.n_unique() == frame.height
        assert (opens.diff().drop_nulls() == MINUTE_MS).all()
        assert_frame_equal(frame, self.truth(frame, symbol))
        return frame


async def make_bench(capacities: dict[str, int] | None = None) -> AsyncIterator[Bench]:
    market = SyntheticMarket([SYMBOL, OTHER])
    exchange = FakeExchange(market)
    rest_url, _ = await exchange.start()
    rest = RestClient(rest_url, clock_ns=lambda: market.clock.now_ms() * 1_000_000)
    feed = Feed(FeedConfig(capacities=capacities or {}))
    rest.messages.subscribe(feed.push)
    for symbol in (SYMBOL, OTHER):
        feed.add_symbol(symbol)
    try:
        yield Bench(market, exchange, rest, feed)
    finally:
        await rest.close()
        await exchange.stop()


@pytest_asyncio.fixture
async def bench() -> AsyncIterator[Bench]:
    async for b in make_bench():
        yield b


@pytest_asyncio.fixture
async def big_bench() -> AsyncIterator[Bench]:
    async for b in make_bench({"klines_1m": 2000}):
        yield b


def opens(frame: pl.DataFrame) -> list[int]:
    return frame["timestamp"].dt.epoch("ms").to_list()


def gap(start: int, end: int, t: int = 0, symbol: str = SYMBOL) -> Gap:
    return Gap(symbol, "1m", start, end, t)


@pytest.mark.asyncio
async def test_a_gap_is_fetched_exactly_and_once_while_in_flight(bench: Bench) -> None:
    start = bench.now_open() - 6 * MINUTE_MS
    missing = gap(start, start + 3 * MINUTE_MS)
    bench.repairer.on_gap(missing)
    bench.repairer.on_gap(missing._replace(t=123))  # the same range, reported again
    await bench.settle()
    assert bench.requests() == 1
    assert bench.counters.gaps_repaired == 1
    assert opens(bench.frame()) == [start, start + MINUTE_MS, start + 2 * MINUTE_MS]
    bench.assert_every_final_once()
    # Once done, the same range may be fetched again: the frame still holds each row once.
    bench.repairer.on_gap(missing)
    await bench.settle()
    assert bench.requests() == 2
    assert opens(bench.frame()) == [start, start + MINUTE_MS, start + 2 * MINUTE_MS]


@pytest.mark.asyncio
async def test_a_gap_longer_than_a_page_is_fetched_in_pages(big_bench: Bench) -> None:
    start = big_bench.now_open() - 1300 * MINUTE_MS
    big_bench.repairer.on_gap(gap(start, start + 1200 * MINUTE_MS))
    await big_bench.settle()
    assert big_bench.requests() == 2
    frame = big_bench.assert_every_final_once()
    assert frame.height == 1200
    assert opens(frame)[0] == start


@pytest.mark.asyncio
async def test_a_backfill_fetches_since_the_last_kept_and_pages(big_bench: Bench) -> None:
    first = big_bench.now_open() - 1500 * MINUTE_MS
    await big_bench.rest.klines(SYMBOL, "1m", limit=1, start_time=first)
    assert opens(big_bench.frame()) == [first]
    big_bench.repairer.backfill(SYMBOL)
    await big_bench.settle()
    # 1501 rows asked for from startTime: a page of 1000, then a short one.
    assert big_bench.requests() == 1 + 2
    frame = big_bench.assert_every_final_once()
    assert opens(frame)[0] == first
    # Up to the newest closed candle (the one just closed may still be forming by the 1 s rule).
    assert opens(frame)[-1] >= big_bench.now_open() - 2 * MINUTE_MS


@pytest.mark.asyncio
async def test_a_backfill_longer_than_the_frame_fetches_the_newest_rows(bench: Bench) -> None:
    old = bench.now_open() - 200 * MINUTE_MS
    await bench.rest.klines(SYMBOL, "1m", limit=1, start_time=old)
    bench.repairer.backfill(SYMBOL)
    await bench.settle()
    assert bench.requests() == 2
    frame = bench.assert_every_final_once()
    assert frame.height == 60
    assert opens(frame)[-1] >= bench.now_open() - 2 * MINUTE_MS


@pytest.mark.asyncio
async def test_a_reconnect_backfills_each_symbol_and_a_second_one_reruns(bench: Bench) -> None:
    bench.symbols = [SYMBOL, OTHER]
    bench.repairer.attach()
    push = bench.feed.push
    push(RawMessage(1, "open", 1, "ws://x"))  # the first socket: nothing was missed
    assert bench.tasks == []
    push(RawMessage(2, "close", 1, "gone"))
    push(RawMessage(3, "open", 2, "ws://x"))
    # Again while the first backfill is in flight: it runs once more after, not twice at once.
    push(RawMessage(4, "close", 2, "gone"))
    push(RawMessage(5, "open", 3, "ws://x"))
    assert len(bench.tasks) == 2
    await bench.settle()
    assert bench.counters.reconnect_backfills == 2
    assert bench.requests() == 4
    for symbol in bench.symbols:
        frame = bench.assert_every_final_once(symbol)
        assert frame.height == 60


def test_connection_events_alone_start_a_backfill_only_after_a_close() -> None:
    started: list[Coroutine[Any, Any, None]] = []
    counters = RepairCounters()
    feed = Feed()

    def symbols() -> Iterable[str]:
        return [SYMBOL]

    repairer = KlineRepairer(
        RestClient("http://127.0.0.1:9"),
        feed,
        feed.config,
        counters,
        started.append,
        symbols=symbols,
        now_ms=lambda: 0,
    )
    repairer.on_connection(Connected(1, "ws://x", 0))
    repairer.on_connection(Connected(2, "ws://x", 0))  # a renewal's overlap
    assert started == []
    # The switchover retires #1 once #2 delivers: nothing was missed, nothing to fetch.
    repairer.on_connection(Disconnected(1, 1000, REPLACED_REASON, 0))
    repairer.on_connection(Connected(3, "ws://x", 0))
    assert started == []
    repairer.on_connection(Disconnected(2, 1006, "", 0))
    repairer.on_connection(Connected(4, "ws://x", 0))
    assert len(started) == 1
    assert counters.reconnect_backfills == 1
    for work in started:
        work.close()


@pytest.mark.asyncio
async def test_failures_are_counted_and_a_closed_repairer_starts_nothing(bench: Bench) -> None:
    bench.symbols = [SYMBOL, "NOPEUSDT"]
    bench.feed.add_symbol("NOPEUSDT")
    start = bench.now_open() - 5 * MINUTE_MS
    bench.repairer.on_gap(gap(start, start + MINUTE_MS, symbol="NOPEUSDT"))
    await bench.settle()
    assert bench.counters.failed_requests == 1
    assert bench.counters.gaps_repaired == 0
    bench.repairer.close()
    bench.repairer.on_gap(gap(start, start + MINUTE_MS))
    bench.repairer.backfill(SYMBOL)
    assert bench.tasks == []


@pytest.mark.asyncio
async def test_gaps_of_symbols_not_streamed_are_left_alone(bench: Bench) -> None:
    start = bench.now_open() - 5 * MINUTE_MS
    bench.repairer.on_gap(gap(start, start + MINUTE_MS, symbol=OTHER))
    assert bench.tasks == []
    assert bench.requests() == 0
