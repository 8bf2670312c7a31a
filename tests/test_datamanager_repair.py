"""`DataManager` repairs what its 1m stream missed, over real loopback against the fake exchange.

The synthetic market is deterministic and sped up (a market minute is 2 wall
seconds), so the 1m buffer a faulty run ends with is checked row for row
against the market's own final candles.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

import polars as pl
import pytest
import pytest_asyncio
from polars.testing import assert_frame_equal

import pipeline.datamanager
from pipeline import DataManager
from pipeline.fake_exchange import Clock, FakeExchange, Faults, SyntheticMarket
from pipeline.ws import WsSource

SYMBOL = "HBARUSDT"
SPEED = 30.0
MINUTE_MS = 60_000

pytestmark = pytest.mark.asyncio


def market_truth(market: SyntheticMarket, frame: pl.DataFrame) -> pl.DataFrame:
    """The market's final 1m rows for the open times `frame` spans, as a klines frame."""
    opens = frame["timestamp"].dt.epoch("ms")
    first, last = opens.min(), opens.max()
    assert isinstance(first, int)
    assert isinstance(last, int)
    rows = market.klines(SYMBOL, "1m", first, last, (last - first) // MINUTE_MS + 1)
    return pl.DataFrame(
        {
            "timestamp": [r[0] for r in rows],
            **{
                name: [float(str(r[i])) for r in rows]
                for i, name in enumerate(["open", "high", "low", "close", "volume"], 1)
            },
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))


def assert_every_final_once(market: SyntheticMarket, frame: pl.DataFrame) -> None:
    opens = frame["timestamp"].dt.epoch("ms")
    assert opens.n_unique() == frame.height
    assert (opens.diff().drop_nulls() == MINUTE_MS).all(), "a final kline is missing"
    assert_frame_equal(frame, market_truth(market, frame))


async def eventually(check: Callable[[], bool], seconds: float = 15.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


class Faulty:
    def __init__(self, market: SyntheticMarket, exchange: FakeExchange, urls: tuple[str, str]):
        self.market = market
        self.exchange = exchange
        self.rest_url, self.ws_url = urls

    def manager(self) -> DataManager:
        return DataManager(
            rest_url=self.rest_url,
            ws_url=self.ws_url,
            clock_ns=lambda: self.market.clock.now_ms() * 1_000_000,
        )


async def start(faults: Faults) -> Faulty:
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED))
    exchange = FakeExchange(market, faults=faults)
    return Faulty(market, exchange, await exchange.start())


@pytest_asyncio.fixture
async def dropped(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Faulty]:
    # Reconnecting 2.5 s later is 75 market seconds: at least one final 1m kline
    # is never sent (the manager makes its WsSource with default options).
    slow = functools.partial(WsSource, backoff_base=2.5, rand=lambda: 0.999)
    monkeypatch.setattr(pipeline.datamanager, "WsSource", slow)
    faulty = await start(Faults(drop_after_frames=150, faulty_connections=1))
    try:
        yield faulty
    finally:
        await faulty.exchange.stop()


async def test_a_dropped_socket_is_backfilled(dropped: Faulty) -> None:
    dm = dropped.manager()
    await dm.subscribe_1m_klines(SYMBOL)
    await dm.subscribe_order_book(SYMBOL)  # frames enough to reach the drop soon
    await dm.preload_1m_klines(SYMBOL)
    feed = dm.feed
    ws_klines = feed.stats.streams[f"{SYMBOL} kline_1m"]
    rest_klines = feed.stats.streams[f"{SYMBOL} kline_1m (rest)"]
    await eventually(lambda: dm.counters.reconnect_backfills == 1)
    assert dropped.exchange.stats.faults, "the fault never happened"
    # The backfill's rows (beyond the preload's 61) and a final from the new socket.
    kept = ws_klines.kept
    await eventually(lambda: rest_klines.read > 61 and ws_klines.kept > kept)
    await dm.close_websockets()
    assert dropped.exchange.stats.ws_connections == 2
    assert dm.counters.failed_requests == 0
    frame = dm.get_buffer("klines_1m")
    assert frame.height == 60
    assert_every_final_once(dropped.market, frame)


async def test_a_silent_socket_is_repaired_by_gap() -> None:
    # 2.5 s of silence: 75 market seconds of frames are lost, the socket stays open.
    faulty = await start(Faults(silent_after_frames=100, silent_for=2.5, faulty_connections=1))
    try:
        dm = faulty.manager()
        await dm.subscribe_1m_klines(SYMBOL)
        await dm.subscribe_order_book(SYMBOL)
        await dm.preload_1m_klines(SYMBOL)
        feed = dm.feed
        await eventually(lambda: bool(feed.stats.gaps) and dm.counters.gaps_repaired >= 1)
        await dm.close_websockets()
    finally:
        await faulty.exchange.stop()
    assert dm.counters.gaps_repaired == len(feed.stats.gaps)
    assert dm.counters.failed_requests == 0
    assert_every_final_once(faulty.market, dm.get_buffer("klines_1m"))


async def test_a_ticker_only_symbol_is_not_backfilled(dropped: Faulty) -> None:
    dm = dropped.manager()
    await dm.subscribe_ticker(SYMBOL)
    await dm.subscribe_order_book(SYMBOL)
    await eventually(lambda: dropped.exchange.stats.ws_connections == 2)
    await asyncio.sleep(0.2)  # time enough for a backfill to be asked for
    await dm.close_websockets()
    assert dm.counters.reconnect_backfills == 0
    assert dm.get_buffer("klines_1m").is_empty()
    assert dropped.exchange.stats.rest_paths.get("/api/v3/klines", 0) == 0
