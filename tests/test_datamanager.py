"""`DataManager` over real loopback against the fake exchange (a sped-up synthetic market)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import polars as pl
import pytest
import pytest_asyncio

from pipeline import DataManager, RestClient
from pipeline.errors import UnknownSymbolError, UsageError
from pipeline.fake_exchange import Clock, FakeExchange, SyntheticMarket
from pipeline.venues import BINANCE_US
from sinks.schemas import KLINES, ORDER_BOOK, TICKER

SYMBOL = "HBARUSDT"
SPEED = 30.0

pytestmark = pytest.mark.asyncio


class Fake:
    def __init__(self, market: SyntheticMarket, exchange: FakeExchange, urls: tuple[str, str]):
        self.market = market
        self.exchange = exchange
        self.rest_url, self.ws_url = urls

    def clock_ns(self) -> int:
        return self.market.clock.now_ms() * 1_000_000

    def manager(self, debug: bool = False, **options: object) -> DataManager:
        return DataManager(
            debug,
            rest_url=self.rest_url,
            ws_url=self.ws_url,
            clock_ns=self.clock_ns,
            **options,  # type: ignore[arg-type]
        )


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[Fake]:
    market = SyntheticMarket((SYMBOL, "BTCUSDT"), clock=Clock(speed=SPEED))
    exchange = FakeExchange(market)
    urls = await exchange.start()
    try:
        yield Fake(market, exchange, urls)
    finally:
        await exchange.stop()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("pipeline")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


def no_other_tasks() -> bool:
    """Nothing but this test and the fake exchange's own connection handlers is left."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    return all(
        getattr(task.get_coro(), "__qualname__", "").startswith("RequestHandler.")
        for task in others
    )


async def test_the_readme_example_runs_unchanged(fake: Fake) -> None:
    data_manager = fake.manager(debug=True)
    exchange = "binanceus"
    await data_manager.preload_1h_klines("HBARUSDT", exchange)
    await data_manager.subscribe_ticker("HBARUSDT")
    await eventually(lambda: data_manager.get_buffer("ticker").height > 0)
    ticker_data = data_manager.get_buffer("ticker")
    assert ticker_data.schema == TICKER
    assert data_manager.get_buffer("klines_1h").height == 72
    await data_manager.close_websockets()
    assert no_other_tasks()


async def test_every_buffer_fills_with_its_schema_and_size(fake: Fake) -> None:
    dm = fake.manager()
    await dm.subscribe_1m_klines(SYMBOL)
    await dm.subscribe_order_book(SYMBOL)
    await dm.subscribe_ticker(SYMBOL)
    await asyncio.gather(
        dm.preload_1m_klines(SYMBOL),
        dm.preload_1h_klines(SYMBOL, BINANCE_US.with_urls(fake.rest_url)),
        dm.preload_1d_klines(SYMBOL, days=10),
    )
    await eventually(
        lambda: dm.get_buffer("order_book").height > 0 and dm.get_buffer("ticker").height > 1
    )
    frames = {name: dm.get_buffer(name) for name in ("klines_1m", "klines_1h", "klines_1d")}
    assert {name: f.height for name, f in frames.items()} == {
        "klines_1m": 60,
        "klines_1h": 72,
        "klines_1d": 10,
    }
    for frame in frames.values():
        assert frame.schema == KLINES
        steps = frame["timestamp"].dt.epoch("ms").diff().drop_nulls()
        assert steps.n_unique() == 1
    assert dm.get_buffer("order_book").schema == ORDER_BOOK
    assert dm.get_buffer("ticker").schema == TICKER
    await dm.close_websockets()
    assert no_other_tasks()


async def test_buffer_sizes_and_several_symbols(fake: Fake) -> None:
    dm = fake.manager(buffer_sizes={"ticker": 3, "klines_1h": 5})
    await dm.subscribe_ticker(SYMBOL)
    await dm.subscribe_ticker("btcusdt")
    await dm.preload_1h_klines("BTCUSDT", hours=10)
    await eventually(lambda: dm.get_buffer("ticker", "BTCUSDT").height == 3)
    await eventually(lambda: dm.get_buffer("ticker").height == 3)
    # The first symbol used is the default.
    assert dm.get_buffer("klines_1h").is_empty()
    assert dm.get_buffer("klines_1h", symbol="BTCUSDT").height == 5
    await dm.close_websockets()


async def test_get_buffer_returns_a_copy(fake: Fake) -> None:
    dm = fake.manager()
    await dm.preload_1d_klines(SYMBOL)
    frame = dm.get_buffer("klines_1d")
    frame[0, "close"] = -1.0
    assert dm.get_buffer("klines_1d")[0, "close"] != -1.0
    await dm.close_websockets()


async def test_before_any_data_buffers_are_empty_frames() -> None:
    dm = DataManager()
    assert dm.get_buffer("order_book").schema == ORDER_BOOK
    with pytest.raises(UsageError, match="'candles'"):
        dm.get_buffer("candles")
    await dm.close_websockets()


async def test_frames_observable_delivers(fake: Fake) -> None:
    dm = fake.manager()
    seen: list[pl.DataFrame] = []
    events: list[object] = []
    subscription = dm.frames("ticker", SYMBOL).subscribe(seen.append)
    dm.events(SYMBOL).subscribe(events.append)
    await dm.subscribe_ticker(SYMBOL)
    await eventually(lambda: any(f.height >= 2 for f in seen))
    assert all(f.schema == TICKER for f in seen)
    assert len(events) >= 2
    subscription.dispose()
    await dm.close_websockets()
    assert no_other_tasks()


async def test_periodic_checks_end_on_close(fake: Fake) -> None:
    dm = fake.manager()
    hourly = asyncio.create_task(dm.check_new_1h_kline(SYMBOL, interval=0.05))
    daily = asyncio.create_task(dm.check_new_1d_kline(SYMBOL, "binanceus"))
    await eventually(lambda: fake.exchange.stats.rest_paths["/api/v3/klines"] >= 4)
    assert not dm.get_buffer("klines_1h").is_empty()
    await dm.close_websockets()
    assert hourly.done()
    assert daily.done()
    assert hourly.result() is None
    assert no_other_tasks()


async def test_an_awaited_check_returns_when_closed(fake: Fake) -> None:
    dm = fake.manager()
    asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(dm.close_websockets()))
    async with asyncio.timeout(5):
        await dm.check_new_1d_kline(SYMBOL, interval=3600)
    await eventually(no_other_tasks)


async def test_a_rest_client_is_used_and_left_open(fake: Fake) -> None:
    dm = fake.manager()
    async with RestClient(fake.rest_url) as rest:
        await dm.preload_1h_klines(SYMBOL, rest, hours=3)
        await dm.close_websockets()
        assert dm.get_buffer("klines_1h").height >= 2
        # Still usable: ours, not the manager's.
        assert len(await rest.klines(SYMBOL, "1h", limit=2)) == 2


async def test_other_exchanges_are_refused(fake: Fake) -> None:
    dm = fake.manager()

    class CcxtLike:
        pass

    with pytest.raises(TypeError, match="CcxtLike"):
        await dm.preload_1h_klines(SYMBOL, CcxtLike())  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="kraken"):
        await dm.preload_1h_klines(SYMBOL, "kraken")
    with pytest.raises(UnknownSymbolError, match="NOPEUSDT"):
        await dm.preload_1h_klines("NOPEUSDT")
    with pytest.raises(UnknownSymbolError, match="NOPEUSDT"):
        await dm.subscribe_ticker("NOPEUSDT")
    with pytest.raises(UnknownSymbolError, match="NOPEUSDT"):
        await dm.check_new_1h_kline("NOPEUSDT")
    assert fake.exchange.stats.ws_connections == 0
    assert dm.feed.symbols == []
    await dm.close_websockets()
    with pytest.raises(UsageError, match="closed"):
        await dm.subscribe_ticker(SYMBOL)


async def test_live_klines_merge_with_the_preload(fake: Fake) -> None:
    dm = fake.manager()
    # Subscribed first: frames arriving during the preload are held, then released.
    await dm.subscribe_1m_klines(SYMBOL, "binanceus")
    await dm.preload_1m_klines(SYMBOL)
    # A minute of market time is 2 s here: a live final joins the preloaded rows.
    first = dm.get_buffer("klines_1m")["timestamp"].max()
    await eventually(lambda: dm.get_buffer("klines_1m")["timestamp"].max() != first)
    await dm.close_websockets()
    frame = dm.get_buffer("klines_1m")
    assert frame.height == 60
    opens = frame["timestamp"].dt.epoch("ms")
    assert (opens.diff().drop_nulls() == 60_000).all()
    low, high = opens.min(), opens.max()
    assert isinstance(low, int)
    assert isinstance(high, int)
    truth = fake.market.klines(SYMBOL, "1m", low, high, 60)
    assert frame["close"].to_list() == [float(str(row[4])) for row in truth]


async def test_debug_logs_fetches_buffer_updates_and_sockets(
    fake: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    dm = fake.manager(debug=True)
    assert logging.getLogger("pipeline").isEnabledFor(logging.DEBUG)
    await dm.preload_1d_klines(SYMBOL, days=2)
    await dm.subscribe_ticker(SYMBOL)
    await eventually(lambda: dm.get_buffer("ticker").height > 0)
    await dm.close_websockets()
    text = caplog.text
    assert "preloaded 3 1d klines of HBARUSDT" in text
    assert "HBARUSDT ticker <- Ticker(" in text
    assert "socket " in text
    assert " open: ws://127.0.0.1" in text


async def test_close_during_a_preload_ends_it(fake: Fake) -> None:
    dm = fake.manager()
    preload = asyncio.create_task(dm.preload_1m_klines(SYMBOL, minutes=3000))
    await asyncio.sleep(0)
    await dm.close_websockets()
    async with asyncio.timeout(5):
        await preload
    assert no_other_tasks()


async def test_cancelling_a_check_task_cancels_its_fetch(fake: Fake) -> None:
    dm = fake.manager()
    check = asyncio.create_task(dm.check_new_1h_kline(SYMBOL))
    await asyncio.sleep(0.01)
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check
    await eventually(no_other_tasks)
    await dm.close_websockets()
