"""The fake exchange's REST side over a real loopback socket: layouts, errors, weights."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from pipeline.fake_exchange import Clock, FakeExchange, Faults, Limits, SyntheticMarket

pytestmark = pytest.mark.asyncio

MINUTE = 60_000
NO_FAULTS = Faults()
DEFAULT_LIMITS = Limits()
MANDATORY = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
ILLEGAL = "Illegal characters found in parameter '{}'; legal range is '{}'."
T0 = int(datetime(2024, 11, 26, 12, 0, 30, tzinfo=UTC).timestamp() * 1000)


class WallClock:
    """A wall clock the test steps by hand (weight windows and bans run on it)."""

    def __init__(self) -> None:
        self.t = 1_700_000_040.0  # the start of a minute

    def __call__(self) -> float:
        return self.t


def exchange(
    limits: Limits = DEFAULT_LIMITS,
    faults: Faults = NO_FAULTS,
    wall: WallClock | None = None,
) -> FakeExchange:
    market = SyntheticMarket(["HBARUSDT", "BTCUSDT"], clock=Clock(start_ms=T0))
    return FakeExchange(market, faults, limits, wall_clock=wall or WallClock())


async def client_for(aiohttp_client: AiohttpClient, ex: FakeExchange) -> TestClient[Any, Any]:
    return await aiohttp_client(ex.make_app())


async def get(client: TestClient[Any, Any], path: str) -> tuple[int, Any, dict[str, str]]:
    async with client.get(path) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_ping_time_and_weight_headers(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    status, body, headers = await get(client, "/api/v3/ping")
    assert (status, body) == (200, {})
    assert headers["X-MBX-USED-WEIGHT-1M"] == headers["X-MBX-USED-WEIGHT"] == "1"
    assert headers["Content-Type"].startswith("application/json")
    status, body, headers = await get(client, "/api/v3/time")
    assert status == 200
    assert T0 <= body["serverTime"] < T0 + 60_000
    assert headers["X-MBX-USED-WEIGHT-1M"] == "2"


async def test_exchange_info_all_one_some_and_unknown(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    status, body, _ = await get(client, "/api/v3/exchangeInfo")
    assert status == 200
    assert {"timezone", "serverTime", "rateLimits", "exchangeFilters", "symbols"} <= body.keys()
    assert [s["symbol"] for s in body["symbols"]] == ["HBARUSDT", "BTCUSDT"]
    hbar = body["symbols"][0]
    assert (hbar["baseAsset"], hbar["quoteAsset"], hbar["status"]) == ("HBAR", "USDT", "TRADING")
    filters = {f["filterType"]: f for f in hbar["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.00001000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.10000000"
    weight = body["rateLimits"][0]
    assert (weight["rateLimitType"], weight["limit"]) == ("REQUEST_WEIGHT", 1200)

    status, body, _ = await get(client, "/api/v3/exchangeInfo?symbol=BTCUSDT")
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT"]
    status, body, _ = await get(client, '/api/v3/exchangeInfo?symbols=["BTCUSDT","HBARUSDT"]')
    assert [s["symbol"] for s in body["symbols"]] == ["BTCUSDT", "HBARUSDT"]
    status, body, _ = await get(client, "/api/v3/exchangeInfo?symbol=NOPEUSDT")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})


async def test_klines_layout_and_forming_candle_last(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    status, rows, headers = await get(client, "/api/v3/klines?symbol=HBARUSDT&interval=1m")
    assert status == 200
    assert len(rows) == 500
    assert headers["X-MBX-USED-WEIGHT-1M"] == "1"  # Binance.US: klines weigh 1
    opens = [r[0] for r in rows]
    assert opens == list(range(opens[0], opens[0] + 500 * MINUTE, MINUTE))
    forming = rows[-1]
    assert forming[0] <= T0 <= forming[6]  # it contains "now"
    assert [type(x).__name__ for x in forming] == [
        "int", "str", "str", "str", "str", "str", "int", "str", "int", "str", "str", "str",
    ]  # fmt: skip


async def test_klines_paging_by_start_time(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    m0 = T0 - 30_000  # 12:00:00
    start = m0 - 30 * MINUTE - 30_000
    _, page1, _ = await get(
        client, f"/api/v3/klines?symbol=HBARUSDT&interval=1m&startTime={start}&limit=10"
    )
    # startTime inside a candle: paging starts at the next open.
    assert page1[0][0] == m0 - 30 * MINUTE
    _, page2, _ = await get(
        client, f"/api/v3/klines?symbol=HBARUSDT&interval=1m&startTime={page1[-1][0] + 1}&limit=10"
    )
    assert page2[0][0] == page1[-1][0] + MINUTE
    _, both, _ = await get(
        client, f"/api/v3/klines?symbol=HBARUSDT&interval=1m&startTime={page1[0][0]}&limit=20"
    )
    assert both == page1 + page2  # pages join exactly: no gap, no overlap, same values
    end = m0 - 5 * MINUTE
    _, tail, _ = await get(
        client,
        f"/api/v3/klines?symbol=HBARUSDT&interval=1m&startTime={page1[0][0]}&endTime={end}&limit=1000",
    )
    assert tail[-1][0] == end
    assert len(tail) == 26


async def test_depth_layout_and_weight_by_limit(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    used = 0
    for limit, weight in ((5, 1), (100, 1), (500, 5), (1000, 10), (5000, 50)):
        status, body, headers = await get(client, f"/api/v3/depth?symbol=HBARUSDT&limit={limit}")
        used += weight
        assert status == 200
        assert int(headers["X-MBX-USED-WEIGHT-1M"]) == used
        assert set(body) == {"lastUpdateId", "bids", "asks"}
        assert len(body["bids"]) == min(limit, 1000)  # the synthetic book is 1000 levels deep
        assert all(isinstance(p, str) and isinstance(q, str) for p, q in body["bids"][:5])
    bids = [float(p) for p, _ in body["bids"]]
    asks = [float(p) for p, _ in body["asks"]]
    assert bids == sorted(bids, reverse=True)
    assert asks == sorted(asks)
    assert bids[0] < asks[0]


async def test_tickers(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    status, body, _ = await get(client, "/api/v3/ticker/24hr?symbol=HBARUSDT")
    assert status == 200
    assert list(body) == [
        "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "prevClosePrice",
        "lastPrice", "lastQty", "bidPrice", "bidQty", "askPrice", "askQty", "openPrice",
        "highPrice", "lowPrice", "volume", "quoteVolume", "openTime", "closeTime",
        "firstId", "lastId", "count",
    ]  # fmt: skip
    _, all_of_them, headers = await get(client, "/api/v3/ticker/24hr")
    assert [t["symbol"] for t in all_of_them] == ["HBARUSDT", "BTCUSDT"]
    assert headers["X-MBX-USED-WEIGHT-1M"] == str(1 + 40)
    _, mini, _ = await get(client, "/api/v3/ticker/24hr?symbol=HBARUSDT&type=MINI")
    assert "bidPrice" not in mini
    assert "lastPrice" in mini
    _, book, _ = await get(client, "/api/v3/ticker/bookTicker?symbol=HBARUSDT")
    assert list(book) == ["symbol", "bidPrice", "bidQty", "askPrice", "askQty"]
    _, price, _ = await get(client, "/api/v3/ticker/price?symbol=HBARUSDT")
    assert set(price) == {"symbol", "price"}


@pytest.mark.parametrize(
    ("query", "code", "msg"),
    [
        ("interval=1m", -1102, MANDATORY.format("symbol")),
        ("symbol=HBARUSDT", -1102, MANDATORY.format("interval")),
        ("symbol=hbarusdt&interval=1m", -1100, ILLEGAL.format("symbol", "^[A-Z0-9-_.]{1,20}$")),
        ("symbol=HBARUSDT&interval=1m&limit=ten", -1100, ILLEGAL.format("limit", "^[0-9]{1,20}$")),
        ("symbol=HBARUSDT&interval=7m", -1120, "Invalid interval."),
        ("symbol=NOPEUSDT&interval=1m", -1121, "Invalid symbol."),
        ("symbol=HBARUSDT&interval=1m&limit=1001", -1130,
         "Data sent for parameter 'limit' is not valid."),
        ("symbol=HBARUSDT&interval=1m&startTime=2&endTime=1", -1023,
         "Start time is greater than end time."),
        ("symbol=HBARUSDT&interval=1m&foo=1", -1104,
         "Not all sent parameters were read; read '2' parameter(s) but was sent '3'."),
        ("symbol=HBARUSDT&symbol=BTCUSDT&interval=1m", -1101,
         "Duplicate values for a parameter detected."),
        ("symbol=HBARUSDT&interval=1m&limit=", -1105, "Parameter 'limit' was empty."),
    ],
)  # fmt: skip
async def test_klines_errors(
    aiohttp_client: AiohttpClient, query: str, code: int, msg: str
) -> None:
    client = await client_for(aiohttp_client, exchange())
    status, body, headers = await get(client, f"/api/v3/klines?{query}")
    assert status == 400
    assert body == {"code": code, "msg": msg}
    assert headers["X-MBX-USED-WEIGHT-1M"] == "1"  # refused requests are charged too


async def test_429_then_418_with_retry_after(aiohttp_client: AiohttpClient) -> None:
    wall = WallClock()
    client = await client_for(aiohttp_client, exchange(Limits(weight_per_minute=12), wall=wall))
    wall.t += 15  # 45 s left in the window
    for _ in range(12):
        status, _, headers = await get(client, "/api/v3/klines?symbol=HBARUSDT&interval=1m&limit=1")
        assert status == 200
    assert headers["X-MBX-USED-WEIGHT-1M"] == "12"
    status, body, headers = await get(client, "/api/v3/ping")
    assert status == 429
    assert body["code"] == -1003
    assert "current limit is 12 request weight per 1 MINUTE" in body["msg"]
    assert headers["Retry-After"] == "45"
    assert headers["X-MBX-USED-WEIGHT-1M"] == "13"
    # Not backing off: banned for 2 minutes, longer the next time.
    status, body, headers = await get(client, "/api/v3/ping")
    assert status == 418
    assert body["code"] == -1003
    assert "IP banned until 1700000175000" in body["msg"]
    assert headers["Retry-After"] == "120"
    wall.t += 100
    status, _, headers = await get(client, "/api/v3/time")
    assert (status, headers["Retry-After"]) == (418, "20")
    wall.t += 21  # the ban is over, and so is the window
    status, _, headers = await get(client, "/api/v3/ping")
    assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, "1")


async def test_weight_window_resets(aiohttp_client: AiohttpClient) -> None:
    wall = WallClock()
    client = await client_for(aiohttp_client, exchange(Limits(weight_per_minute=3), wall=wall))
    statuses = [(await get(client, "/api/v3/ping"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    wall.t += 60
    status, _, headers = await get(client, "/api/v3/ping")
    assert status == 200
    assert headers["X-MBX-USED-WEIGHT-1M"] == "1"


async def test_binance_spot_weights(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange(Limits(venue="binance")))
    _, _, headers = await get(client, "/api/v3/klines?symbol=HBARUSDT&interval=1m&limit=1")
    assert headers["X-MBX-USED-WEIGHT-1M"] == "2"
    _, _, headers = await get(client, "/api/v3/exchangeInfo")
    assert headers["X-MBX-USED-WEIGHT-1M"] == "22"
    _, _, headers = await get(client, "/api/v3/depth?symbol=HBARUSDT")
    assert headers["X-MBX-USED-WEIGHT-1M"] == "27"


async def test_injected_429_and_418(aiohttp_client: AiohttpClient) -> None:
    ex = exchange(faults=Faults(rest_throttle=2, rest_ban=1, retry_after=7))
    client = await client_for(aiohttp_client, ex)
    got = [await get(client, "/api/v3/ping") for _ in range(4)]
    assert [g[0] for g in got] == [429, 429, 418, 200]
    assert all(g[2]["Retry-After"] == "7" for g in got[:3])
    assert all(g[1]["code"] == -1003 for g in got[:3])
    assert ex.stats.faults["rest_throttle"] == 2
    assert ex.stats.faults["rest_ban"] == 1
    ex.faults = Faults(rest_ban=1)  # re-armed while running
    assert (await get(client, "/api/v3/ping"))[0] == 418
    assert ex.stats.rest_statuses == {429: 2, 418: 2, 200: 1}
