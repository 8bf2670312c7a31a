"""The capture-fed market: recorded traffic served as a live exchange."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from pytest_aiohttp import AiohttpClient

from pipeline.errors import CaptureError
from pipeline.fake_exchange import (
    CaptureMarket,
    Clock,
    FakeExchange,
)

MS = 1_000_000
T0_NS = 1_732_600_000_000 * MS


def _real_dir() -> Path:
    root = os.environ.get("HBAR_SHARED_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared"
    return base / "data" / "binance-real"


REAL = _real_dir()
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"no real recordings at {REAL}")


def kline_frame(i: int) -> bytes:
    data = {"e": "kline", "E": 1_732_600_003_000 + i, "s": "HBARUSDT", "k": {"t": 1, "x": False}}
    return orjson.dumps({"stream": "hbarusdt@kline_1m", "data": data})


def write_capture(path: Path) -> None:
    """A small gzipped JSON Lines capture: frames 3 s after it opens, one of them broken."""
    lines: list[dict[str, Any]] = [
        {"t": T0_NS, "kind": "open", "conn": 1, "url": "wss://stream.binance.us:9443/stream?streams=hbarusdt@kline_1m"},
        {"t": T0_NS + 100 * MS, "kind": "rest", "method": "GET", "status": 200,
         "url": "/api/v3/klines?symbol=HBARUSDT&interval=1h&limit=2", "data": '[[1,"recorded"]]'},
    ]  # fmt: skip
    lines.extend(
        {
            "t": T0_NS + (3000 + 50 * i) * MS,
            "kind": "ws",
            "conn": 1,
            "data": kline_frame(i).decode(),
        }
        for i in range(4)
    )
    lines.append(
        {
            "t": T0_NS + 3300 * MS,
            "kind": "ws",
            "conn": 1,
            "data": '{"stream":"hbarusdt@kline_1m","data":{"e":"kli',
        }
    )
    with gzip.open(path, "wb") as f:
        for line in lines:
            f.write(orjson.dumps(line) + b"\n")


@pytest.mark.asyncio
async def test_capture_frames_replay_to_raw_and_combined_sockets(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "capture.jsonl.gz"
    write_capture(path)
    # The market clock starts an hour early; once both sockets listen, it jumps to
    # just before the frames, so none is missed however long connecting took.
    market = CaptureMarket(path, clock=Clock(start_ms=T0_NS // MS - 3_600_000))
    assert sorted(market.frames) == ["hbarusdt@kline_1m"]
    client = await aiohttp_client(FakeExchange(market).make_app())
    async with (
        client.ws_connect("/ws/hbarusdt@kline_1m") as raw,
        client.ws_connect("/stream?streams=hbarusdt@kline_1m") as combined,
    ):
        market.clock.advance(T0_NS // MS + 2900 - market.clock.now_ms())
        raw_got = [(await raw.receive(timeout=3.0)).data for _ in range(5)]
        combined_got = [(await combined.receive(timeout=3.0)).data for _ in range(5)]
    expected = [orjson.loads(kline_frame(i))["data"] for i in range(4)]
    assert [orjson.loads(t) for t in raw_got[:4]] == expected
    assert [orjson.loads(t)["data"] for t in combined_got[:4]] == expected
    assert raw_got[4] == '{"e":"kli'  # the broken frame, as broken as it was recorded
    assert combined_got[4] == '{"stream":"hbarusdt@kline_1m","data":{"e":"kli}'


@pytest.mark.asyncio
async def test_capture_rest_is_served_as_recorded_else_synthetic(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "capture.jsonl.gz"
    write_capture(path)
    client = await aiohttp_client(FakeExchange(CaptureMarket(path)).make_app())
    async with client.get("/api/v3/klines?symbol=HBARUSDT&interval=1h&limit=5") as r:
        assert (r.status, await r.text()) == (200, '[[1,"recorded"]]')
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "1"
    async with client.get("/api/v3/depth?symbol=HBARUSDT&limit=5") as r:
        assert r.status == 200
        assert len((await r.json())["bids"]) == 5
    async with client.get("/api/v3/depth?symbol=BTCUSDT") as r:
        assert r.status == 400  # not in the capture: unknown


def test_unreadable_capture_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError):
        CaptureMarket(tmp_path / "missing.jsonl")


@needs_real
@pytest.mark.asyncio
async def test_real_binance_us_recording_replays_consistently(
    aiohttp_client: AiohttpClient,
) -> None:
    """cryptofeed's recording: the recorded snapshot plus the replayed diffs make a book."""
    first_ms = 1633998274503
    market = CaptureMarket(
        [REAL / "BINANCE_US.ws.1.0", REAL / "BINANCE_US.http.0.0"],
        clock=Clock(start_ms=first_ms - 3_600_000, speed=10.0),
    )
    assert "compusdt@depth@100ms" in market.frames
    assert "omgbusd@kline_1m" in market.frames
    client = await aiohttp_client(FakeExchange(market).make_app())
    async with client.ws_connect("/ws/compusdt@depth@100ms") as ws:
        async with client.get("/api/v3/depth?symbol=COMPUSDT&limit=1000") as r:
            snapshot = await r.json()
        market.clock.advance(first_ms - market.clock.now_ms())  # play from the start
        last = snapshot["lastUpdateId"]
        applied = 0
        while applied < 10:
            event = orjson.loads((await ws.receive(timeout=5.0)).data)
            if event["u"] <= last:
                continue
            assert event["U"] <= last + 1 <= event["u"]
            last = event["u"]
            applied += 1
