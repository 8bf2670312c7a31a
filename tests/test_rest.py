"""The REST source against small real aiohttp servers on 127.0.0.1.

Each test serves exactly the answers (and faults) it needs. Waits go through an
injected clock and sleep, so a 20 s weight-window wait or a 7 s ban costs no
time, and the tests check exactly how long the client would have waited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from operators.events import RawMessage
from pipeline.errors import (
    BannedError,
    BinanceAPIError,
    ExchangeUnavailableError,
    PipelineError,
    RateLimitedError,
    UnknownSymbolError,
)
from pipeline.rest import RestClient
from pipeline.venues import BINANCE, BINANCE_US, get_venue

pytestmark = pytest.mark.asyncio

REAL_EXCHANGE_INFO = Path("/work/shared/data/binance-real/BINANCE_US.0")
MINUTE_MS = 60_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeTime:
    """A wall clock that only moves when the client sleeps."""

    def __init__(self, start: float = 1_700_000_020.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def serve(aiohttp_server: AiohttpServer, routes: dict[str, Handler]) -> str:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


def client(base: str, fake: FakeTime, **options: Any) -> RestClient:
    return RestClient(base, sleep=fake.sleep, clock=fake.clock, rand=lambda: 1.0, **options)


def record(rest: RestClient) -> list[RawMessage]:
    seen: list[RawMessage] = []
    rest.messages.subscribe(seen.append)
    return seen


def kline_row(open_time: int) -> list[Any]:
    return [open_time, "0.1", "0.2", "0.05", "0.15", "100.0", open_time + MINUTE_MS - 1, "15.0", 7]


def json_body(
    value: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(value), status=status, content_type="application/json", headers=headers
    )


# ---------------------------------------------------------------- venues


async def test_venue_presets_follow_the_docs() -> None:
    assert get_venue("binanceus") is BINANCE_US
    assert get_venue(" Binance ") is BINANCE
    assert (BINANCE_US.rest_url, BINANCE_US.ws_url) == (
        "https://api.binance.us",
        "wss://stream.binance.us:9443",
    )
    assert (BINANCE.weight_limit, BINANCE_US.weight_limit) == (6000, 1200)
    assert BINANCE.depth_weight(1000) == 50
    assert BINANCE_US.depth_weight(20) == 1
    assert BINANCE_US.request_weight("/api/v3/ticker/24hr", {"symbol": "X"}) == 1
    for venue in (BINANCE, BINANCE_US):
        assert (venue.ws_messages_per_second, venue.ws_max_streams) == (5, 1024)
        assert venue.ws_lifetime == 24 * 3600
    with pytest.raises(PipelineError, match="unknown venue 'kraken'"):
        get_venue("kraken")


# ---------------------------------------------------------------- responses as messages


async def test_every_response_body_is_emitted_as_a_raw_message(
    aiohttp_server: AiohttpServer,
) -> None:
    rows = [kline_row(0), kline_row(MINUTE_MS)]
    body = orjson.dumps(rows).decode().replace(",", ", ")  # odd spacing must survive

    async def klines(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    base = await serve(aiohttp_server, {"/api/v3/klines": klines})
    async with RestClient(base) as rest:
        seen = record(rest)
        before = time.time_ns()
        got = await rest.klines("hbarusdt", "1h", 2)
        after = time.time_ns()
    assert got == rows
    assert len(seen) == 1
    message = seen[0]
    assert message.kind == "rest"
    assert message.url == "/api/v3/klines?symbol=HBARUSDT&interval=1h&limit=2"
    assert (message.status, message.method, message.conn) == (200, "GET", 0)
    assert message.data == body
    assert before <= message.t <= after


async def test_error_responses_are_emitted_too_and_messages_complete_on_close(
    aiohttp_server: AiohttpServer,
) -> None:
    calls = 0

    async def depth(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(text="upstream hiccup", status=502)
        return json_body({"lastUpdateId": 7, "bids": [["1.0", "2.0"]], "asks": []})

    base = await serve(aiohttp_server, {"/api/v3/depth": depth})
    fake = FakeTime()
    rest = client(base, fake)
    seen = record(rest)
    done: list[bool] = []
    rest.messages.subscribe(on_completed=lambda: done.append(True))
    book = await rest.depth("HBARUSDT", 20)
    await rest.close()
    assert book["lastUpdateId"] == 7
    assert [(m.status, m.data) for m in seen] == [
        (502, "upstream hiccup"),
        (200, '{"lastUpdateId":7,"bids":[["1.0","2.0"]],"asks":[]}'),
    ]
    assert {m.url for m in seen} == {"/api/v3/depth?symbol=HBARUSDT&limit=20"}
    assert done == [True]


async def test_an_injected_clock_stamps_every_response_and_paces_nothing(
    aiohttp_server: AiohttpServer,
) -> None:
    calls = 0

    async def klines(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(text="upstream hiccup", status=503)
        return json_body([kline_row(0)])

    base = await serve(aiohttp_server, {"/api/v3/klines": klines})
    fake = FakeTime()
    # A market clock far from the wall clock, as a sped-up fake exchange has.
    market_ns = iter(range(5_000_000_000, 6_000_000_000, 1_000_000))
    rest = client(base, fake, clock_ns=lambda: next(market_ns))
    seen = record(rest)
    async with rest:
        await rest.klines("HBARUSDT", "1m", 1)
    # The 503 and the answer, stamped by the injected clock, once each, in order.
    assert [(m.status, m.t) for m in seen] == [(503, 5_000_000_000), (200, 5_001_000_000)]
    # The retry's backoff still ran on the wall clock `clock`.
    assert fake.sleeps
    assert fake.now > 1_700_000_020.0


async def test_injected_session_is_left_open(aiohttp_server: AiohttpServer) -> None:
    async def ticker(request: web.Request) -> web.Response:
        return json_body({"symbol": request.query["symbol"], "lastPrice": "0.07"})

    base = await serve(aiohttp_server, {"/api/v3/ticker/24hr": ticker})
    async with aiohttp.ClientSession() as session:
        async with RestClient(base, session=session) as rest:
            assert (await rest.ticker_24hr("hbarusdt"))["symbol"] == "HBARUSDT"
        assert not session.closed


# ---------------------------------------------------------------- klines paging


def kline_server(first_open: int, count: int, seen: list[dict[str, str]]) -> Handler:
    """Serve `count` one-minute klines from `first_open` the way Binance pages them."""
    last_open = first_open + (count - 1) * MINUTE_MS

    async def klines(request: web.Request) -> web.Response:
        query = dict(request.query)
        seen.append(query)
        limit = min(int(query.get("limit", 500)), 1000)
        start = int(query.get("startTime", first_open))
        end = int(query.get("endTime", last_open))
        opens = [t for t in range(first_open, last_open + 1, MINUTE_MS) if start <= t <= end]
        # Without startTime Binance returns the newest rows up to endTime.
        chosen = opens[:limit] if "startTime" in query else opens[-limit:]
        return json_body([kline_row(t) for t in chosen])

    return klines


async def test_klines_page_forward_from_start_time_past_1000_rows(
    aiohttp_server: AiohttpServer,
) -> None:
    seen: list[dict[str, str]] = []
    base = await serve(aiohttp_server, {"/api/v3/klines": kline_server(0, 2500, seen)})
    async with RestClient(base) as rest:
        messages = record(rest)
        rows = await rest.klines("HBARUSDT", "1m", 2400, start_time=0)
        rest_of_it = await rest.klines("HBARUSDT", "1m", 3000, start_time=2000 * MINUTE_MS)
    assert [row[0] for row in rows] == [i * MINUTE_MS for i in range(2400)]
    assert [(q["startTime"], q["limit"]) for q in seen[:3]] == [
        ("0", "1000"),
        (str(999 * MINUTE_MS + 1), "1000"),
        (str(1999 * MINUTE_MS + 1), "400"),
    ]
    # A short page means the exchange has no more: paging stops there.
    assert [row[0] for row in rest_of_it] == [i * MINUTE_MS for i in range(2000, 2500)]
    assert len(seen) == 4
    assert len(messages) == 4
    assert messages[1].url == (
        f"/api/v3/klines?symbol=HBARUSDT&interval=1m&startTime={999 * MINUTE_MS + 1}&limit=1000"
    )


async def test_klines_page_backward_when_no_start_time(aiohttp_server: AiohttpServer) -> None:
    seen: list[dict[str, str]] = []
    base = await serve(aiohttp_server, {"/api/v3/klines": kline_server(0, 2500, seen)})
    async with RestClient(base) as rest:
        rows = await rest.klines("HBARUSDT", "1m", 1500)
    assert [row[0] for row in rows] == [i * MINUTE_MS for i in range(1000, 2500)]
    assert [q.get("endTime") for q in seen] == [None, str(1500 * MINUTE_MS - 1)]
    assert [q["limit"] for q in seen] == ["1000", "500"]


# ---------------------------------------------------------------- weight


async def test_weight_header_is_tracked_and_the_client_waits_for_the_next_minute(
    aiohttp_server: AiohttpServer,
) -> None:
    fake = FakeTime(1_700_000_020.0)  # 40 s into a minute window
    arrivals: list[float] = []

    async def klines(request: web.Request) -> web.Response:
        arrivals.append(fake.now)
        used = 90 if len(arrivals) == 1 else 3
        return json_body([kline_row(0)], headers={"X-MBX-USED-WEIGHT-1M": str(used)})

    base = await serve(aiohttp_server, {"/api/v3/klines": klines})
    # Limit 100 with a 10 % margin: 90 is all the client allows itself.
    async with client(base, fake, weight_limit=100, weight_margin=0.1) as rest:
        await rest.klines("HBARUSDT", "1m", 1)
        assert rest.stats.used_weight == 90
        await rest.klines("HBARUSDT", "1m", 1)
        await rest.klines("HBARUSDT", "1m", 1)
    next_window = 1_700_000_040.0
    assert arrivals[0] == 1_700_000_020.0
    assert arrivals[1] >= next_window  # never sent in the exhausted minute
    assert fake.sleeps == [pytest.approx(next_window - 1_700_000_020.0 + 0.5)]
    assert arrivals[2] == arrivals[1]  # 3 of 90 used: no wait
    assert rest.stats.throttle_waits == 1
    assert (rest.stats.requests, rest.stats.max_used_weight, rest.stats.used_weight) == (3, 90, 3)
    assert rest.stats.weight_sent == 3 * BINANCE_US.klines_weight


async def test_concurrent_requests_share_the_budget(aiohttp_server: AiohttpServer) -> None:
    fake = FakeTime(1_700_000_020.0)
    arrivals: list[float] = []

    async def depth(request: web.Request) -> web.Response:
        arrivals.append(fake.now)
        return json_body({"lastUpdateId": 1, "bids": [], "asks": []})

    base = await serve(aiohttp_server, {"/api/v3/depth": depth})
    # depth limit 1000 weighs 10 on binance.us; 4 of them fit in 45.
    async with client(base, fake, weight_limit=50, weight_margin=0.1) as rest:
        await asyncio.gather(*(rest.depth("HBARUSDT", 1000) for _ in range(6)))
    # Four fit in the first minute; the fifth waited for the next one, and by the
    # time the sixth asked (the fake clock jumps at once) that minute had come.
    assert fake.sleeps == [20.5]
    assert len(arrivals) == 6
    assert rest.stats.throttle_waits == 1


# ---------------------------------------------------------------- 429 / 418


async def test_429_then_418_wait_the_whole_retry_after(aiohttp_server: AiohttpServer) -> None:
    fake = FakeTime()
    arrivals: list[float] = []

    async def ticker(request: web.Request) -> web.Response:
        arrivals.append(fake.now)
        if len(arrivals) == 1:
            return json_body(
                {"code": -1003, "msg": "Too much request weight used."},
                429,
                headers={"Retry-After": "3"},
            )
        if len(arrivals) == 2:
            return json_body(
                {"code": -1003, "msg": "IP banned."}, 418, headers={"Retry-After": "7"}
            )
        return json_body({"symbol": "HBARUSDT"})

    base = await serve(aiohttp_server, {"/api/v3/ticker/24hr": ticker})
    async with client(base, fake) as rest:
        seen = record(rest)
        assert (await rest.ticker_24hr("HBARUSDT"))["symbol"] == "HBARUSDT"
    t0 = arrivals[0]
    assert [t - t0 for t in arrivals] == [0.0, 3.0, 10.0]
    assert fake.sleeps == [3.0, 7.0]
    assert [m.status for m in seen] == [429, 418, 200]
    stats = rest.stats
    assert (stats.rate_limited, stats.banned, stats.retries, stats.requests) == (1, 1, 2, 3)


async def test_retry_after_blocks_every_request_of_the_client(
    aiohttp_server: AiohttpServer,
) -> None:
    fake = FakeTime()
    arrivals: list[tuple[str, float]] = []
    limited = False

    async def handler(request: web.Request) -> web.Response:
        nonlocal limited
        arrivals.append((request.path, fake.now))
        if not limited:
            limited = True
            return json_body({"code": -1003, "msg": "slow down"}, 429, headers={"Retry-After": "5"})
        server_ms = int(fake.now * 1000)
        return json_body({"serverTime": server_ms, "lastUpdateId": 1, "bids": [], "asks": []})

    base = await serve(aiohttp_server, {"/api/v3/time": handler, "/api/v3/depth": handler})
    async with client(base, fake) as rest:
        await rest.server_time()  # 429, then retried after 5 s
        await rest.depth("HBARUSDT")
    t0 = arrivals[0][1]
    assert [(path, t - t0) for path, t in arrivals] == [
        ("/api/v3/time", 0.0),
        ("/api/v3/time", 5.0),
        ("/api/v3/depth", 5.0),
    ]


async def test_rate_limit_beyond_patience_raises_typed_errors(
    aiohttp_server: AiohttpServer,
) -> None:
    async def too_long(request: web.Request) -> web.Response:
        return json_body(
            {"code": -1003, "msg": "Way too much."}, 429, headers={"Retry-After": "5000"}
        )

    async def banned(request: web.Request) -> web.Response:
        return json_body({"code": -1003, "msg": "banned"}, 418, headers={"Retry-After": "2"})

    base = await serve(aiohttp_server, {"/api/v3/klines": too_long, "/api/v3/time": banned})
    fake = FakeTime()
    async with client(base, fake, max_retry_after=900.0, max_attempts=3) as rest:
        with pytest.raises(RateLimitedError) as limited:
            await rest.klines("HBARUSDT", "1h", 5)
        assert fake.sleeps == []  # gave up without waiting 5000 s
        with pytest.raises(BannedError) as ban:
            await rest.server_time()
    assert limited.value.request == "/api/v3/klines?symbol=HBARUSDT&interval=1h&limit=5"
    assert limited.value.retry_after == 5000
    assert "Way too much." in str(limited.value)
    assert ban.value.request == "/api/v3/time"
    assert fake.sleeps == [2.0, 2.0]
    assert isinstance(ban.value, PipelineError)


# ---------------------------------------------------------------- transient faults


async def test_5xx_is_retried_with_capped_exponential_backoff(
    aiohttp_server: AiohttpServer,
) -> None:
    calls = 0

    async def time_(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls <= 3:
            return json_body({"code": -1001, "msg": "Internal error."}, 503)
        return json_body({"serverTime": 123})

    base = await serve(aiohttp_server, {"/api/v3/time": time_})
    fake = FakeTime()
    # rand() = 1.0 picks the top of each full-jitter range: 0.5, 1.0, then the 1.5 cap.
    async with client(base, fake, backoff_base=0.5, backoff_cap=1.5) as rest:
        assert await rest.server_time() == 123
    assert fake.sleeps == [0.5, 1.0, 1.5]
    assert (rest.stats.server_errors, rest.stats.retries) == (3, 3)


async def test_5xx_outlasting_the_retries_names_the_request(
    aiohttp_server: AiohttpServer,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(text="Service Unavailable", status=503)

    base = await serve(aiohttp_server, {"/api/v3/depth": broken})
    fake = FakeTime()
    async with client(base, fake, max_attempts=3) as rest:
        with pytest.raises(ExchangeUnavailableError) as failed:
            await rest.depth("HBARUSDT", 5)
    assert failed.value.request == "/api/v3/depth?symbol=HBARUSDT&limit=5"
    assert failed.value.attempts == 3
    assert "HTTP 503" in str(failed.value)
    assert len(fake.sleeps) == 2


async def test_timeouts_are_retried(aiohttp_server: AiohttpServer) -> None:
    release = asyncio.Event()
    calls = 0

    async def slow_then_fast(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
        return json_body({"serverTime": 5})

    base = await serve(aiohttp_server, {"/api/v3/time": slow_then_fast})
    fake = FakeTime()
    async with client(base, fake, timeout=0.2) as rest:
        assert await rest.server_time() == 5
    release.set()
    assert (rest.stats.timeouts, rest.stats.retries, calls) == (1, 1, 2)
    assert fake.sleeps == [0.5]


async def test_broken_connections_are_retried(aiohttp_server: AiohttpServer) -> None:
    calls = 0

    async def truncated_then_whole(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            response = web.StreamResponse(headers={"Content-Length": "100"})
            await response.prepare(request)
            await response.write(b'{"serverTi')
            assert request.transport is not None
            request.transport.abort()
            return response
        return json_body({"serverTime": 9})

    base = await serve(aiohttp_server, {"/api/v3/time": truncated_then_whole})
    fake = FakeTime()
    async with client(base, fake) as rest:
        seen = record(rest)
        assert await rest.server_time() == 9
    assert rest.stats.connection_errors == 1
    assert [m.data for m in seen] == ['{"serverTime":9}']  # no body, no message


# ---------------------------------------------------------------- refused requests


async def test_error_body_becomes_a_typed_error_naming_the_request(
    aiohttp_server: AiohttpServer,
) -> None:
    calls = 0

    async def bad(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return json_body({"code": -1120, "msg": "Invalid interval."}, 400)

    base = await serve(aiohttp_server, {"/api/v3/klines": bad})
    fake = FakeTime()
    async with client(base, fake) as rest:
        seen = record(rest)
        with pytest.raises(BinanceAPIError) as refused:
            await rest.klines("HBARUSDT", "7m", 3)
    error = refused.value
    assert (error.code, error.msg, error.status) == (-1120, "Invalid interval.", 400)
    assert error.request == "/api/v3/klines?symbol=HBARUSDT&interval=7m&limit=3"
    assert "/api/v3/klines?symbol=HBARUSDT&interval=7m&limit=3" in str(error)
    assert calls == 1  # a 4xx is the request's fault: never retried
    assert fake.sleeps == []
    assert [m.status for m in seen] == [400]


async def test_invalid_symbol_body_is_an_unknown_symbol_error(
    aiohttp_server: AiohttpServer,
) -> None:
    async def invalid(request: web.Request) -> web.Response:
        return json_body({"code": -1121, "msg": "Invalid symbol."}, 400)

    base = await serve(aiohttp_server, {"/api/v3/klines": invalid})
    async with RestClient(base) as rest:
        with pytest.raises(UnknownSymbolError) as unknown:
            await rest.klines("nosuchcoin", "1m", 10)
    assert unknown.value.symbols == ["NOSUCHCOIN"]
    assert unknown.value.code == -1121
    assert "'NOSUCHCOIN': Invalid symbol." in str(unknown.value)


def real_exchange_info() -> dict[str, Any]:
    line = REAL_EXCHANGE_INFO.read_text().splitlines()[0]
    body: dict[str, Any] = orjson.loads(line.split(": ", 1)[1])
    return body


async def test_check_symbols_against_a_real_exchange_info(aiohttp_server: AiohttpServer) -> None:
    """Binance.US in Oct 2021: HBARUSD listed, HBARUSDT not yet, XRPUSD on BREAK."""
    info = real_exchange_info()
    by_name = {entry["symbol"]: entry for entry in info["symbols"]}
    queries: list[str] = []

    async def exchange_info(request: web.Request) -> web.Response:
        queries.append(request.query_string)
        if "symbols" not in request.query:
            return json_body(info)
        wanted = orjson.loads(request.query["symbols"])
        if any(symbol not in by_name for symbol in wanted):
            return json_body({"code": -1121, "msg": "Invalid symbol."}, 400)
        return json_body({**info, "symbols": [by_name[s] for s in wanted]})

    base = await serve(aiohttp_server, {"/api/v3/exchangeInfo": exchange_info})
    async with RestClient(base) as rest:
        entries = await rest.check_symbols(["hbarusd", "BTCUSD"])
        assert list(entries) == ["HBARUSD", "BTCUSD"]
        assert entries["HBARUSD"]["status"] == "TRADING"
        with pytest.raises(UnknownSymbolError) as unknown:
            await rest.check_symbols(["HBARUSD", "HBARUSDT", "XRPUSD"])
    assert unknown.value.problems == {
        "HBARUSDT": "not listed in exchangeInfo",
        "XRPUSD": "status is 'BREAK', not 'TRADING'",
    }
    message = str(unknown.value)
    assert "HBARUSDT" in message
    assert "BREAK" in message
    assert queries[0] == 'symbols=["HBARUSD","BTCUSD"]'
    assert queries[-1] == ""  # fell back to the full list to name the culprits


async def test_server_time_estimates_the_clock_offset(aiohttp_server: AiohttpServer) -> None:
    fake = FakeTime(1_700_000_000.0)

    async def time_(request: web.Request) -> web.Response:
        return json_body({"serverTime": int(fake.now * 1000) + 2500})

    base = await serve(aiohttp_server, {"/api/v3/time": time_})
    async with client(base, fake) as rest:
        assert await rest.server_time() == 1_700_000_002_500
    assert rest.clock_offset_ms == 2500.0
    assert rest.round_trip_ms == 0.0


async def test_a_failing_subscriber_does_not_fail_the_fetch(aiohttp_server: AiohttpServer) -> None:
    async def time_(request: web.Request) -> web.Response:
        return json_body({"serverTime": 1})

    base = await serve(aiohttp_server, {"/api/v3/time": time_})
    async with RestClient(base) as rest:

        def explode(message: RawMessage) -> None:
            raise ValueError("a bug downstream")

        rest.messages.subscribe(explode)
        seen = record(rest)
        assert await rest.server_time() == 1
    assert len(seen) == 1  # the other subscriber still got it
    assert (rest.stats.observer_errors, rest.stats.requests) == (1, 1)
