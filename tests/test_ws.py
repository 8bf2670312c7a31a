"""The WebSocket source against small real aiohttp servers on 127.0.0.1.

`StreamServer` is a scripted combined-stream endpoint: it records every
connection (the streams in its URL, the requests it received and when, the pongs)
and runs the test's `behaviour` coroutine for each connection to send frames,
fall silent, or drop it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web
from pytest_aiohttp import AiohttpServer

from operators.events import RawMessage
from pipeline.errors import UsageError
from pipeline.ws import WsSource

pytestmark = pytest.mark.asyncio


@dataclass
class Session:
    """One connection as the server saw it."""

    index: int
    ws: web.WebSocketResponse
    url_streams: list[str]
    streams: list[str]
    opened: float
    requests: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    pong_seen: asyncio.Event = field(default_factory=asyncio.Event)


Behaviour = Callable[[Session], Awaitable[None]]


class StreamServer:
    """`/stream?streams=a/b` that answers SUBSCRIBE/UNSUBSCRIBE like Binance."""

    def __init__(self, behaviour: Behaviour, refuse_first: int = 0) -> None:
        self.behaviour = behaviour
        self.refuse_first = refuse_first
        self.attempts = 0
        self.sessions: list[Session] = []
        self.open: list[Session] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if self.attempts <= self.refuse_first:
            return web.Response(status=503, text="try later")
        # autoping off: the test wants to see the client's pongs itself.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        url_streams = request.query["streams"].split("/")
        session = Session(len(self.sessions), ws, url_streams, list(url_streams), time.monotonic())
        self.sessions.append(session)
        self.open.append(session)
        reader = asyncio.create_task(self._read(session))
        try:
            await self.behaviour(session)
            await reader  # until the client closes
        finally:
            self.open.remove(session)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await ws.close()
        return ws

    async def _read(self, session: Session) -> None:
        async for msg in session.ws:
            if msg.type is WSMsgType.PONG:
                session.pongs.append(msg.data)
                session.pong_seen.set()
            elif msg.type is WSMsgType.TEXT:
                request = orjson.loads(msg.data)
                session.requests.append((time.monotonic(), request))
                if request["method"] == "SUBSCRIBE":
                    session.streams += [s for s in request["params"] if s not in session.streams]
                elif request["method"] == "UNSUBSCRIBE":
                    session.streams = [s for s in session.streams if s not in request["params"]]
                if not session.ws.closed:
                    await session.ws.send_str(f'{{"result":null,"id":{request["id"]}}}')


async def start(aiohttp_server: AiohttpServer, server: StreamServer) -> str:
    app = web.Application()
    app.router.add_get("/stream", server.handle)
    test_server = await aiohttp_server(app)
    return str(test_server.make_url("")).rstrip("/").replace("http://", "ws://")


def frame(stream: str, n: int) -> str:
    return f'{{"stream":"{stream}","data":{{"n":{n}}}}}'


async def until(condition: Callable[[], bool], timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def forever(session: Session) -> None:
    """Keep the connection open until the client closes it."""
    await asyncio.Event().wait()


class Recorder:
    """Everything a source emits, in order."""

    def __init__(self, source: WsSource) -> None:
        self.messages: list[RawMessage] = []
        self.completed = False
        source.messages.subscribe(self.messages.append, on_completed=self._done)

    def _done(self) -> None:
        self.completed = True

    def of(self, kind: str) -> list[RawMessage]:
        return [m for m in self.messages if m.kind == kind]

    def numbers(self) -> list[int]:
        found: list[int] = []
        for m in self.of("ws"):
            body = orjson.loads(m.data)
            if "stream" in body:
                found.append(body["data"]["n"])
        return found


class RecordingSleep:
    """Backoff sleeps recorded, not slept (one loop turn instead)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def our_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith(("ws-reader-", "ws-supervisor")) and not task.done()
    ]


# ---------------------------------------------------------------- frames


async def test_combined_stream_frames_arrive_raw_with_receive_times(
    aiohttp_server: AiohttpServer,
) -> None:
    sent = [frame("hbarusdt@kline_1m", n) for n in range(3)]

    async def three_frames(session: Session) -> None:
        for text in sent:
            await session.ws.send_str(text)
        await forever(session)

    server = StreamServer(three_frames)
    base = await start(aiohttp_server, server)
    source = WsSource(base, ["hbarusdt@kline_1m", "hbarusdt@depth20@100ms"])
    seen = Recorder(source)
    before = time.time_ns()
    async with source:
        await until(lambda: len(seen.of("ws")) == 3)
        after = time.time_ns()
        assert source.connection_count == 1
    assert server.sessions[0].url_streams == ["hbarusdt@kline_1m", "hbarusdt@depth20@100ms"]
    opened, *frames, closed = seen.messages
    assert opened.kind == "open"
    assert opened.url == f"{base}/stream?streams=hbarusdt@kline_1m/hbarusdt@depth20@100ms"
    assert [m.data for m in frames] == sent
    assert all(m.kind == "ws" and m.conn == opened.conn for m in frames)
    times = [m.t for m in frames]
    assert before <= opened.t <= times[0] <= times[1] <= times[2] <= after
    assert (closed.kind, closed.conn, closed.status, closed.data) == (
        "close",
        opened.conn,
        1000,
        "client closed",
    )
    assert seen.completed
    assert source.stats.frames == 3
    assert source.stats.bytes == sum(len(text) for text in sent)
    assert our_tasks() == []


async def test_an_injected_clock_stamps_frames_opens_and_closes(
    aiohttp_server: AiohttpServer,
) -> None:
    async def two_frames(session: Session) -> None:
        await session.ws.send_str(frame("a@trade", 1))
        await session.ws.send_str(frame("a@trade", 2))
        await forever(session)

    # The first attempt is refused: its `close` is stamped by the injected clock too.
    base = await start(aiohttp_server, StreamServer(two_frames, refuse_first=1))
    ticks = itertools.count(7_000_000_000, 1_000)
    source = WsSource(
        base, ["a@trade"], clock_ns=lambda: next(ticks), sleep=RecordingSleep(), backoff_base=0.01
    )
    seen = Recorder(source)
    async with source:
        await until(lambda: len(seen.of("ws")) == 2)
    assert [m.kind for m in seen.messages] == ["close", "open", "ws", "ws", "close"]
    # Every message took the next tick of the injected clock, none the wall clock.
    assert [m.t for m in seen.messages] == [7_000_000_000 + 1_000 * i for i in range(5)]


async def test_stream_is_also_an_async_iterator(aiohttp_server: AiohttpServer) -> None:
    async def two_frames(session: Session) -> None:
        await session.ws.send_str(frame("a@trade", 1))
        await session.ws.send_str(frame("a@trade", 2))
        await forever(session)

    base = await start(aiohttp_server, StreamServer(two_frames))
    kinds: list[str] = []
    async with WsSource(base, ["a@trade"]) as source, aclosing(source.stream()) as stream:
        async for message in stream:
            kinds.append(message.kind)
            if len(kinds) == 3:
                break
    assert kinds == ["open", "ws", "ws"]


async def test_server_ping_is_answered_with_a_pong(aiohttp_server: AiohttpServer) -> None:
    async def ping(session: Session) -> None:
        await session.ws.ping(b"are you there")
        await forever(session)

    server = StreamServer(ping)
    base = await start(aiohttp_server, server)
    async with WsSource(base, ["a@trade"]):
        await until(lambda: bool(server.sessions) and server.sessions[0].pong_seen.is_set())
    assert server.sessions[0].pongs == [b"are you there"]


# ---------------------------------------------------------------- failures


async def test_server_drop_reconnects_within_a_second_and_resubscribes(
    aiohttp_server: AiohttpServer,
) -> None:
    async def drop_first(session: Session) -> None:
        await session.ws.send_str(frame("a@trade", session.index))
        if session.index == 0:
            await until(lambda: "b@trade" in session.streams)
            await session.ws.close(code=1001, message=b"going away")
            return
        await forever(session)

    server = StreamServer(drop_first)
    base = await start(aiohttp_server, server)
    sleep = RecordingSleep()
    source = WsSource(base, ["a@trade"], sleep=sleep)
    seen = Recorder(source)
    async with source:
        await until(lambda: len(seen.of("ws")) >= 1)
        await source.subscribe(["b@trade"])
        await until(lambda: len(server.sessions) == 2 and len(seen.numbers()) == 2)
    # Data had flowed, so the first retry comes within a second (full jitter of 1 s).
    assert len(sleep.delays) == 1
    assert 0.0 <= sleep.delays[0] <= 1.0
    # The replacement asks for everything, the stream added at run time included.
    assert server.sessions[1].url_streams == ["a@trade", "b@trade"]
    closes = seen.of("close")
    first, second = seen.of("open")
    assert first.conn != second.conn
    assert (closes[0].conn, closes[0].status, closes[0].data) == (first.conn, 1001, "going away")
    assert source.stats.reconnects == 1
    assert source.stats.connects == 2


async def test_backoff_grows_until_data_flows_again(aiohttp_server: AiohttpServer) -> None:
    async def script(session: Session) -> None:
        # Attempts 1-2 are refused (HTTP 503), session 0 dies without data,
        # session 1 delivers a frame then dies, session 2 stays.
        if session.index == 0:
            await session.ws.close(code=1011, message=b"internal error")
            return
        await session.ws.send_str(frame("a@trade", session.index))
        if session.index == 1:
            await asyncio.sleep(0.05)
            await session.ws.close(code=1001, message=b"going away")
            return
        await forever(session)

    server = StreamServer(script, refuse_first=2)
    base = await start(aiohttp_server, server)
    sleep = RecordingSleep()
    source = WsSource(base, ["a@trade"], sleep=sleep, rand=lambda: 1.0, backoff_cap=3.0)
    seen = Recorder(source)
    async with source:
        await until(lambda: len(server.sessions) == 3 and len(seen.of("ws")) == 2)
    # Full jitter at its top (rand = 1): 1, 2, then 4 capped at 3; data resets to 1.
    assert sleep.delays == [1.0, 2.0, 3.0, 1.0]
    failures = [m for m in seen.of("close") if m.data.startswith("connect failed")]
    assert len(failures) == 2
    assert all(m.status == 1006 and "503" in m.data for m in failures)
    assert len({m.conn for m in seen.of("close")}) == len(seen.of("close"))  # ids never reused
    assert source.stats.connect_failures == 2


async def test_silence_watchdog_replaces_a_quiet_connection(
    aiohttp_server: AiohttpServer,
) -> None:
    async def quiet_first(session: Session) -> None:
        await session.ws.send_str(frame("a@trade", session.index))
        if session.index == 0:
            await forever(session)  # open, but says nothing more
        while True:
            await asyncio.sleep(0.02)
            await session.ws.send_str(frame("a@trade", 99))

    server = StreamServer(quiet_first)
    base = await start(aiohttp_server, server)
    source = WsSource(base, ["a@trade"], silence_timeout=0.3, sleep=RecordingSleep())
    seen = Recorder(source)
    async with source:
        await until(lambda: len(server.sessions) == 2 and len(seen.of("ws")) >= 5)
        assert source.stats.silence_timeouts == 1
    quiet = seen.of("close")[0]
    assert quiet.conn == seen.of("open")[0].conn
    assert quiet.data.startswith("silence timeout")


# ---------------------------------------------------------------- subscriptions


async def test_runtime_subscribe_and_unsubscribe_respect_the_message_rate(
    aiohttp_server: AiohttpServer,
) -> None:
    server = StreamServer(forever)
    base = await start(aiohttp_server, server)
    extra = [f"s{i}@trade" for i in range(7)]
    async with WsSource(base, ["a@trade"]) as source:
        seen = Recorder(source)
        await until(lambda: len(server.sessions) == 1)
        for stream in extra:
            await source.subscribe([stream])
        await source.unsubscribe(["a@trade"])
        await source.unsubscribe(["s0@trade", "s1@trade"])
        await source.subscribe(["s3@trade"])  # already there: nothing to send
        session = server.sessions[0]
        await until(lambda: len(session.requests) == 9)
        await until(lambda: len(seen.of("ws")) == 9)
        assert session.streams == [f"s{i}@trade" for i in range(2, 7)]
        assert source.streams == session.streams
    times = [t for t, _ in session.requests]
    # Any one second holds at most 4 of the client's messages: a pong still fits under 5.
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 1.0) <= 4
    methods = [request["method"] for _, request in session.requests]
    assert methods == ["SUBSCRIBE"] * 7 + ["UNSUBSCRIBE"] * 2
    ids = [request["id"] for _, request in session.requests]
    assert len(set(ids)) == 9
    replies = [orjson.loads(m.data) for m in seen.of("ws")]
    assert sorted(reply["id"] for reply in replies) == sorted(ids)
    assert source.stats.requests_sent == 9


async def test_more_than_1024_streams_take_two_connections(aiohttp_server: AiohttpServer) -> None:
    server = StreamServer(forever)
    base = await start(aiohttp_server, server)
    streams = [f"sym{i:04d}usdt@kline_1m" for i in range(1030)]
    async with WsSource(base, streams) as source:
        seen = Recorder(source)
        await until(lambda: sum(len(s.streams) for s in server.sessions) == 1030)
        assert source.connection_count == 2
        counts = sorted(len(s.streams) for s in server.sessions)
        # Dropping the second connection's streams closes it.
        await source.unsubscribe(streams[1024:])
        assert source.connection_count == 1
        assert [m.data for m in seen.of("close")] == ["no streams left"]
    assert counts == [6, 1024]
    assert sorted(s for session in server.sessions for s in session.streams) == sorted(streams)
    big = next(s for s in server.sessions if len(s.streams) == 1024)
    # The URL stays short; the rest came as SUBSCRIBE requests.
    assert len(big.url_streams) < 1024
    assert len(big.requests) >= 1


async def test_invalid_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="renew_before"):
        WsSource("ws://127.0.0.1:1", ["a@trade"], lifetime=10.0, renew_before=20.0)
    with pytest.raises(UsageError, match="max_requests_per_second"):
        WsSource("ws://127.0.0.1:1", ["a@trade"], max_requests_per_second=5)
    with pytest.raises(UsageError, match="invalid stream name 'a/b'"):
        WsSource("ws://127.0.0.1:1", ["a/b"])


# ---------------------------------------------------------------- 24 h lifetime


async def test_lifetime_switchover_overlaps_and_misses_nothing(
    aiohttp_server: AiohttpServer,
) -> None:
    lifetime = 1.5
    numbers = itertools.count()

    async def limited_life(session: Session) -> None:
        # The server drops every connection at its lifetime, like the 24 h cut.
        await asyncio.sleep(lifetime)
        await session.ws.close(code=1001, message=b"lifetime reached")

    server = StreamServer(limited_life)

    async def broadcast() -> None:
        # One numbered sequence sent to every open connection, in order.
        while True:
            n = next(numbers)
            for session in list(server.open):
                if not session.ws.closed:
                    await session.ws.send_str(frame("a@trade", n))
            await asyncio.sleep(0.005)

    base = await start(aiohttp_server, server)
    sender = asyncio.create_task(broadcast())
    source = WsSource(
        base, ["a@trade"], lifetime=lifetime, renew_before=0.7, sleep=RecordingSleep()
    )
    seen = Recorder(source)
    try:
        async with source:
            await until(lambda: source.stats.renewals >= 3, timeout=4.5)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    got = seen.numbers()
    assert set(got) == set(range(min(got), max(got) + 1))  # no gap anywhere
    assert len(got) > len(set(got))  # the overlap delivered some numbers twice
    reasons = [m.data for m in seen.of("close")]
    assert "lifetime reached" not in reasons  # every socket was retired before the cut
    assert all(reason.startswith("replaced by a newer") for reason in reasons[:-1])
    assert source.stats.reconnects == 0


async def test_a_failing_subscriber_does_not_stop_the_feed(aiohttp_server: AiohttpServer) -> None:
    async def frames(session: Session) -> None:
        for n in range(5):
            await session.ws.send_str(frame("a@trade", n))
        await forever(session)

    base = await start(aiohttp_server, StreamServer(frames))
    source = WsSource(base, ["a@trade"])

    def explode(message: RawMessage) -> None:
        if message.kind == "ws":
            raise ValueError("a bug downstream")

    source.messages.subscribe(explode)
    seen = Recorder(source)
    async with source:
        await until(lambda: len(seen.of("ws")) == 5)
    assert source.stats.observer_errors == 5
    assert source.stats.connects == 1
