"""Fidelity: ccxt's own `binanceus` client, unchanged but for its base URL, works against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio
from pytest_aiohttp import AiohttpServer

from pipeline.fake_exchange import Clock, FakeExchange, SyntheticMarket

pytestmark = pytest.mark.asyncio

T0 = int(datetime(2024, 11, 26, 12, 0, 30, tzinfo=UTC).timestamp() * 1000)


@pytest_asyncio.fixture
async def binanceus(aiohttp_server: AiohttpServer) -> AsyncIterator[Any]:
    ex = FakeExchange(SyntheticMarket(["HBARUSDT", "BTCUSDT"], clock=Clock(start_ms=T0)))
    server = await aiohttp_server(ex.make_app())
    client = ccxt.binanceus({"enableRateLimit": False})
    base = str(server.make_url("/api/v3"))
    for key in ("public", "private"):
        client.urls["api"][key] = base
    try:
        yield client
    finally:
        await client.close()


async def test_ccxt_loads_markets(binanceus: Any) -> None:
    markets = await binanceus.load_markets()
    hbar = markets["HBAR/USDT"]
    assert hbar["id"] == "HBARUSDT"
    assert hbar["spot"] is True
    assert hbar["precision"]["price"] == pytest.approx(0.00001)
    assert hbar["precision"]["amount"] == pytest.approx(0.1)


async def test_ccxt_fetch_ohlcv(binanceus: Any) -> None:
    candles = await binanceus.fetch_ohlcv("HBAR/USDT", "1m", limit=60)
    assert len(candles) == 60
    times = [c[0] for c in candles]
    assert times == sorted(times)
    assert times[1] - times[0] == 60_000
    for ts, o, h, lo, c, v in candles:
        assert isinstance(ts, int)
        assert lo <= min(o, c) <= max(o, c) <= h
        assert v > 0
    since = await binanceus.fetch_ohlcv("HBAR/USDT", "1h", since=T0 - 10 * 3600_000, limit=5)
    # `since` falls inside the 02:00 candle: the first one returned opens at 03:00.
    assert [c[0] for c in since] == [T0 - 30_000 - h * 3600_000 for h in (9, 8, 7, 6, 5)]


async def test_ccxt_fetch_order_book(binanceus: Any) -> None:
    book = await binanceus.fetch_order_book("HBAR/USDT", limit=20)
    assert len(book["bids"]) == len(book["asks"]) == 20
    assert book["bids"][0][0] < book["asks"][0][0]
    assert isinstance(book["nonce"], int)
    best = await binanceus.fetch_ticker("HBAR/USDT")
    assert best["symbol"] == "HBAR/USDT"
    assert best["bid"] < best["ask"]


async def test_ccxt_sees_binance_errors(binanceus: Any) -> None:
    await binanceus.load_markets()
    with pytest.raises(ccxt.BadRequest):
        await binanceus.publicGetKlines({"symbol": "HBARUSDT", "interval": "7m"})
    with pytest.raises(ccxt.BadSymbol):
        await binanceus.publicGetDepth({"symbol": "NOPEUSDT"})
