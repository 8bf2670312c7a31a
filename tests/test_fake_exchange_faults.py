"""Each WebSocket fault switch of the fake exchange, seen from a real client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from pipeline.fake_exchange import Clock, FakeExchange, Faults, SyntheticMarket

pytestmark = pytest.mark.asyncio

T0 = int(datetime(2024, 11, 26, 12, 0, 30, tzinfo=UTC).timestamp() * 1000)
STREAM = "/ws/hbarusdt@depth5@100ms"
"""Ten frames a second, each with a strictly larger lastUpdateId."""

Client = TestClient[Any, Any]


async def client_for(aiohttp_client: AiohttpClient, faults: Faults) -> tuple[Client, FakeExchange]:
    ex = FakeExchange(SyntheticMarket(["HBARUSDT"], clock=Clock(start_ms=T0)), faults)
    return await aiohttp_client(ex.make_app()), ex


async def frames(
    ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = 2.0
) -> list[bytes]:
    """The next `count` text frames, raw."""
    out: list[bytes] = []
    while len(out) < count:
        msg = await ws.receive(timeout=timeout)
        assert msg.type == WSMsgType.TEXT, msg
        out.append(msg.data.encode())
    return out


async def test_drop_after_frames_ends_the_socket_without_a_close_frame(
    aiohttp_client: AiohttpClient,
) -> None:
    client, ex = await client_for(aiohttp_client, Faults(drop_after_frames=3))
    async with client.ws_connect(STREAM) as ws:
        got = await frames(ws, 3)
        msg = await ws.receive(timeout=2.0)
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)  # no CLOSE: the TCP just ended
        assert ws.close_code == 1006
    assert len(got) == 3
    assert ex.stats.faults["drop"] == 1
    assert ex.stats.closes["drop"] == 1


async def test_silent_after_frames_keeps_the_socket_open(aiohttp_client: AiohttpClient) -> None:
    client, ex = await client_for(aiohttp_client, Faults(silent_after_frames=2))
    async with client.ws_connect(STREAM) as ws:
        await frames(ws, 2)
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.5)
        assert not ws.closed
    assert ex.stats.faults["silence"] == 1
    assert ex.stats.frames_sent == 2


async def test_a_timed_silence_loses_frames_then_resumes(aiohttp_client: AiohttpClient) -> None:
    client, ex = await client_for(aiohttp_client, Faults(silent_after_frames=2, silent_for=0.5))
    async with client.ws_connect("/ws/hbarusdt@depth@100ms") as ws:
        before = [orjson.loads(f) for f in await frames(ws, 2)]
        after = orjson.loads((await frames(ws, 1))[0])
    assert before[1]["U"] == before[0]["u"] + 1
    # The diffs produced during the silence were never sent: the client sees a gap.
    assert after["U"] > before[1]["u"] + 1
    assert after["E"] - before[1]["E"] >= 400
    assert ex.stats.faults["silence"] == 1


async def test_garbage_every_nth_frame(aiohttp_client: AiohttpClient) -> None:
    client, ex = await client_for(aiohttp_client, Faults(garbage_every=2))
    async with client.ws_connect(STREAM) as ws:
        got = await frames(ws, 6)
    good = [orjson.loads(f) for f in got[0::2]]
    assert all("lastUpdateId" in g for g in good)
    bad = got[1::2]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(bad[0])  # truncated
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(bad[1])  # not JSON at all
    wrong = orjson.loads(bad[2])
    assert isinstance(wrong["lastUpdateId"], str)  # an integer sent as a string
    assert ex.stats.faults == {
        "garbage:truncated": 1,
        "garbage:not_json": 1,
        "garbage:wrong_types": 1,
    }


async def test_duplicate_every_nth_frame(aiohttp_client: AiohttpClient) -> None:
    client, ex = await client_for(aiohttp_client, Faults(duplicate_every=2))
    async with client.ws_connect(STREAM) as ws:
        got = await frames(ws, 6)
    ids = [orjson.loads(f)["lastUpdateId"] for f in got]
    assert ids[1] == ids[2]
    assert ids[4] == ids[5]
    assert ids[0] < ids[1] < ids[3] < ids[4]
    assert ex.stats.faults["duplicate"] == 2


async def test_duplicates_can_be_stale(aiohttp_client: AiohttpClient) -> None:
    client, _ = await client_for(aiohttp_client, Faults(duplicate_every=3, duplicate_lag=2))
    async with client.ws_connect(STREAM) as ws:
        got = await frames(ws, 4)
    ids = [orjson.loads(f)["lastUpdateId"] for f in got]
    assert ids[3] == ids[0]  # an old frame again, after newer ones
    assert ids[0] < ids[1] < ids[2]


async def test_reconnect_overlaps_the_last_connection(aiohttp_client: AiohttpClient) -> None:
    # Dropped right after its 4th frame, the first socket has received all it was sent.
    client, ex = await client_for(aiohttp_client, Faults(drop_after_frames=4, reconnect_overlap=2))
    async with client.ws_connect(STREAM) as ws:
        first = await frames(ws, 4)
        assert (await ws.receive(timeout=2.0)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)
    async with client.ws_connect(STREAM) as ws:
        second = await frames(ws, 3)
    assert second[:2] == first[-2:]
    assert orjson.loads(second[2])["lastUpdateId"] > orjson.loads(first[-1])["lastUpdateId"]
    assert ex.stats.faults["overlap"] == 2


async def test_only_the_first_connections_misbehave(aiohttp_client: AiohttpClient) -> None:
    client, ex = await client_for(aiohttp_client, Faults(drop_after_frames=2, faulty_connections=1))
    async with client.ws_connect(STREAM) as ws:
        await frames(ws, 2)
        assert (await ws.receive(timeout=2.0)).type in (WSMsgType.CLOSED, WSMsgType.ERROR)
    async with client.ws_connect(STREAM) as ws:
        assert len(await frames(ws, 5)) == 5
    assert ex.stats.faults["drop"] == 1


async def test_drop_connections_on_demand(aiohttp_client: AiohttpClient) -> None:
    client, ex = await client_for(aiohttp_client, Faults())
    async with client.ws_connect(STREAM) as ws:
        await frames(ws, 1)
        ex.drop_connections()
        while (msg := await ws.receive(timeout=2.0)).type == WSMsgType.TEXT:
            pass
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
        assert ws.close_code == 1006
    assert ex.stats.ws_open == 0
