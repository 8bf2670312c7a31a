"""The fake exchange's WebSocket side over real loopback sockets."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from pipeline.fake_exchange import Clock, FakeExchange, Limits, SyntheticMarket

pytestmark = pytest.mark.asyncio

MINUTE = 60_000
T0 = int(datetime(2024, 11, 26, 12, 0, tzinfo=UTC).timestamp() * 1000)
"""A minute boundary: the candle opening at T0 - 1 minute closes here."""

Client = TestClient[Any, Any]
DEFAULT_LIMITS = Limits()


def exchange(
    start_ms: int = T0 + 30_000, speed: float = 1.0, limits: Limits = DEFAULT_LIMITS
) -> FakeExchange:
    return FakeExchange(SyntheticMarket(["HBARUSDT"], clock=Clock(start_ms, speed)), limits=limits)


async def client_for(aiohttp_client: AiohttpClient, ex: FakeExchange) -> Client:
    return await aiohttp_client(ex.make_app())


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 2.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == WSMsgType.TEXT, msg
    return orjson.loads(msg.data)


async def reply_to(ws: aiohttp.ClientWebSocketResponse, request_id: object) -> Any:
    """Skip data frames up to the reply carrying `request_id`."""
    while True:
        body = await receive(ws)
        is_reply = isinstance(body, dict) and ("result" in body or "error" in body)
        if is_reply and body.get("id") == request_id:
            return body


async def test_raw_stream_sends_bare_payloads(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    async with client.ws_connect("/ws/hbarusdt@depth5@100ms") as ws:
        body = await receive(ws)
    assert set(body) == {"lastUpdateId", "bids", "asks"}
    assert len(body["bids"]) == len(body["asks"]) == 5


async def test_combined_streams_are_wrapped(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    seen: dict[str, Any] = {}
    async with client.ws_connect("/stream?streams=hbarusdt@depth5@100ms/hbarusdt@ticker") as ws:
        while len(seen) < 2:
            body = await receive(ws)
            assert set(body) == {"stream", "data"}
            seen[body["stream"]] = body["data"]
    ticker = seen["hbarusdt@ticker"]
    assert ticker["e"] == "24hrTicker"
    assert ticker["s"] == "HBARUSDT"
    assert list(ticker) == [
        "e", "E", "s", "p", "P", "w", "x", "c", "Q", "b", "B", "a", "A",
        "o", "h", "l", "v", "q", "O", "C", "F", "L", "n",
    ]  # fmt: skip


async def test_subscribe_list_properties_unsubscribe(aiohttp_client: AiohttpClient) -> None:
    ex = exchange()
    client = await client_for(aiohttp_client, ex)
    async with client.ws_connect("/ws") as ws:
        await ws.send_str('{"method":"SUBSCRIBE","params":["hbarusdt@depth5@100ms"],"id":1}')
        assert await receive(ws) == {"result": None, "id": 1}
        assert "lastUpdateId" in await receive(ws)  # raw: no envelope on /ws
        await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":2}')
        assert await reply_to(ws, 2) == {"result": ["hbarusdt@depth5@100ms"], "id": 2}
        await asyncio.sleep(0.3)
        await ws.send_str('{"method":"SET_PROPERTY","params":["combined",true],"id":3}')
        assert await reply_to(ws, 3) == {"result": None, "id": 3}
        assert (await receive(ws))["stream"] == "hbarusdt@depth5@100ms"
        await ws.send_str('{"method":"GET_PROPERTY","params":["combined"],"id":4}')
        assert await reply_to(ws, 4) == {"result": True, "id": 4}
        await asyncio.sleep(0.3)
        await ws.send_str('{"method":"UNSUBSCRIBE","params":["hbarusdt@depth5@100ms"],"id":5}')
        assert await reply_to(ws, 5) == {"result": None, "id": 5}
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.3)
    assert ex.stats.control_replies == 5


async def test_bad_requests_get_error_replies(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    async with client.ws_connect("/ws") as ws:
        await ws.send_str("{not json")
        body = await receive(ws)
        assert body["error"]["code"] == 3
        assert body["error"]["msg"].startswith("Invalid JSON")
        await ws.send_str('{"params":[],"id":7}')
        assert await receive(ws) == {
            "error": {"code": 2, "msg": "Invalid request: missing field `method`"},
            "id": 7,
        }
        await ws.send_str('{"method":"SUBSCRIBEE","params":[],"id":8}')
        assert (await receive(ws))["error"]["msg"].startswith(
            "Invalid request: unknown variant `SUBSCRIBEE`"
        )
        await ws.send_str('{"method":"SUBSCRIBE","params":[],"id":"x"}')
        assert (await receive(ws))["error"] == {
            "code": 2,
            "msg": "Invalid request: request ID must be an unsigned integer",
        }
        await asyncio.sleep(1.0)
        await ws.send_str('{"method":"SUBSCRIBE","params":["not asdfads"],"id":9}')
        assert await receive(ws) == {
            "error": {"code": 2, "msg": "Invalid request: invalid stream"},
            "id": 9,
        }


async def test_unknown_symbol_is_accepted_then_silent(aiohttp_client: AiohttpClient) -> None:
    ex = exchange()
    client = await client_for(aiohttp_client, ex)
    async with client.ws_connect("/ws") as ws:
        await ws.send_str('{"method":"SUBSCRIBE","params":["nopeusdt@depth5@100ms"],"id":1}')
        assert await receive(ws) == {"result": None, "id": 1}
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.4)
    assert ex.stats.silent_subscriptions["nopeusdt@depth5@100ms"] == 1


async def test_more_than_five_messages_a_second_closes_the_socket(
    aiohttp_client: AiohttpClient,
) -> None:
    ex = exchange()
    client = await client_for(aiohttp_client, ex)
    async with client.ws_connect("/ws") as ws:
        for i in range(6):
            await ws.send_str(f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}')
        replies = 0
        while True:
            msg = await ws.receive(timeout=2.0)
            if msg.type != WSMsgType.TEXT:
                break
            replies += 1
        assert msg.type == WSMsgType.CLOSE
        assert ws.close_code == 1008
    assert replies == 5
    assert ex.stats.closes["rate_limit"] == 1


async def test_stream_cap(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange(limits=Limits(ws_max_streams=2)))
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(
            "/stream?streams=hbarusdt@ticker/hbarusdt@bookTicker/hbarusdt@depth"
        )
    assert info.value.status == 400
    async with client.ws_connect("/stream?streams=hbarusdt@ticker") as ws:
        await ws.send_str(
            '{"method":"SUBSCRIBE","params":["hbarusdt@bookTicker","hbarusdt@depth"],"id":1}'
        )
        body = await reply_to(ws, 1)
        assert body["error"]["code"] == 2
        assert "at most 2 streams" in body["error"]["msg"]


async def test_server_pings_and_answered_pongs_keep_the_socket(
    aiohttp_client: AiohttpClient,
) -> None:
    ex = exchange(limits=Limits(ws_ping_interval_s=0.25, ws_pong_timeout_s=0.6))
    client = await client_for(aiohttp_client, ex)
    async with client.ws_connect("/ws") as ws:  # aiohttp answers pings while receiving
        with pytest.raises(asyncio.TimeoutError):
            # Each ping restarts receive()'s own timeout: bound the whole wait instead.
            await asyncio.wait_for(ws.receive(), timeout=1.0)
        assert not ws.closed
    assert ex.stats.pings_sent >= 2
    assert ex.stats.pongs_received >= 2
    assert ex.stats.closes["pong_timeout"] == 0


async def test_unanswered_pings_close_the_socket(aiohttp_client: AiohttpClient) -> None:
    ex = exchange(limits=Limits(ws_ping_interval_s=0.2, ws_pong_timeout_s=0.5))
    client = await client_for(aiohttp_client, ex)
    started = time.monotonic()
    async with client.ws_connect("/ws", autoping=False) as ws:
        while True:
            msg = await ws.receive(timeout=3.0)
            if msg.type != WSMsgType.PING:
                break
        assert msg.type == WSMsgType.CLOSE
        assert ws.close_code == 1008
    assert time.monotonic() - started >= 0.6
    assert ex.stats.closes["pong_timeout"] == 1


async def test_sockets_close_at_the_end_of_their_lifetime(aiohttp_client: AiohttpClient) -> None:
    ex = exchange(limits=Limits(ws_lifetime_s=0.3))
    client = await client_for(aiohttp_client, ex)
    async with client.ws_connect("/ws/hbarusdt@ticker") as ws:
        while True:
            msg = await ws.receive(timeout=3.0)
            if msg.type != WSMsgType.TEXT:
                break
        assert msg.type == WSMsgType.CLOSE
        assert ws.close_code == 1001
    assert ex.stats.closes["lifetime"] == 1


async def test_final_kline_frame_equals_the_rest_row(aiohttp_client: AiohttpClient) -> None:
    # 5 market seconds before a close, at double speed: updates, then the final frame.
    ex = exchange(start_ms=T0 - 5000, speed=2.0)
    client = await client_for(aiohttp_client, ex)
    frames: list[Any] = []
    async with client.ws_connect("/ws/hbarusdt@kline_1m") as ws:
        while not frames or not frames[-1]["k"]["x"]:
            frames.append(await receive(ws, timeout=4.0))
    final = frames[-1]["k"]
    assert final["t"] == T0 - MINUTE
    assert final["T"] == T0 - 1
    assert [f["k"]["x"] for f in frames[:-1]] == [False] * (len(frames) - 1)
    assert len(frames) >= 2  # at least one update came before the final frame
    assert frames[0]["k"]["t"] == final["t"]
    assert float(frames[0]["k"]["v"]) <= float(final["v"])
    async with client.get(
        f"/api/v3/klines?symbol=HBARUSDT&interval=1m&startTime={final['t']}&limit=1"
    ) as r:
        (row,) = await r.json()
    assert row == [
        final["t"], final["o"], final["h"], final["l"], final["c"], final["v"], final["T"],
        final["q"], final["n"], final["V"], final["Q"], "0",
    ]  # fmt: skip


async def test_depth_diffs_continue_the_rest_snapshot(aiohttp_client: AiohttpClient) -> None:
    client = await client_for(aiohttp_client, exchange())
    url = "/stream?streams=hbarusdt@depth@100ms/hbarusdt@depth20@100ms"
    async with client.ws_connect(url) as ws:
        buffered: list[Any] = []
        snapshots: dict[int, Any] = {}
        while len(buffered) < 3:
            body = await receive(ws)
            if body["stream"] == "hbarusdt@depth@100ms":
                buffered.append(body["data"])
        async with client.get("/api/v3/depth?symbol=HBARUSDT&limit=1000") as r:
            snap = await r.json()
        bids = dict(snap["bids"])
        asks = dict(snap["asks"])
        last = snap["lastUpdateId"]
        applied = compared = 0

        def apply(event: Any) -> None:
            nonlocal last, applied
            if event["u"] <= last:
                return  # older than the snapshot
            assert (
                event["U"] <= last + 1 <= event["u"]
            )  # the first one straddles it, then contiguous
            for side, changes in ((bids, event["b"]), (asks, event["a"])):
                for price, qty in changes:
                    if float(qty) == 0:
                        side.pop(price, None)
                    else:
                        side[price] = qty
            last = event["u"]
            applied += 1

        def compare() -> None:
            nonlocal compared
            top = snapshots.pop(last, None)
            if top is not None:
                assert sorted(bids.items(), key=lambda kv: -float(kv[0]))[:20] == [
                    tuple(x) for x in top["bids"]
                ]
                assert sorted(asks.items(), key=lambda kv: float(kv[0]))[:20] == [
                    tuple(x) for x in top["asks"]
                ]
                compared += 1

        for event in buffered:
            apply(event)
        while compared < 5 or applied < 5:
            body = await receive(ws)
            if body["stream"] == "hbarusdt@depth@100ms":
                apply(body["data"])
            else:
                snapshots[body["data"]["lastUpdateId"]] = body["data"]
            compare()
    assert applied >= 5
