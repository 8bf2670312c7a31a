"""The WebSocket side: `/ws`, `/ws/<streams>`, `/stream?streams=`, JSON methods, limits.

One handler task per socket reads the client; one writer task drains the
socket's queue (data frames from the hub and control replies, in order) and is
where the WebSocket faults happen; one timer task pings and enforces the pong
timeout and the connection's lifetime. Binance's rules, each adjustable through
`Limits`: at most 5 incoming messages (text, ping and pong frames alike) in any
second, else the socket is closed; at most 1024 streams; a ping every 3 minutes
that must be answered within 10; every socket closed at 24 hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from pipeline.fake_exchange._faults import Faults, corrupt
from pipeline.fake_exchange._hub import MAX_OVERLAP, StreamHub
from pipeline.fake_exchange._limits import Limits
from pipeline.fake_exchange._stats import Stats
from pipeline.fake_exchange._streams import StreamSpec, parse_stream

__all__ = ["WsServer"]

log = logging.getLogger(__name__)

_METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_CLOSE_TIMEOUT_S: Final = 2.0
_NO_FAULTS: Final = Faults()


class _Refused(Exception):
    """A JSON request the server answers with `{"error": {...}, "id": ...}`."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _wrap(stream: str, data: bytes) -> bytes:
    """The combined-stream envelope, built without re-serialising the payload."""
    return b'{"stream":"' + stream.encode() + b'","data":' + data + b"}"


class _Connection:
    """One client socket."""

    def __init__(
        self,
        server: WsServer,
        number: int,
        request: web.Request,
        ws: web.WebSocketResponse,
        combined: bool,
    ) -> None:
        self.server = server
        self.number = number
        self.request = request
        self.ws = ws
        self.combined = combined
        self.streams: dict[str, StreamSpec] = {}
        limit = server.faults().faulty_connections
        self.faulty = limit is None or number <= limit
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.frames = 0
        self._garbage = 0
        self._sent: deque[bytes] = deque(maxlen=MAX_OVERLAP)
        self._silent_until = 0.0
        self._incoming: deque[float] = deque()
        self._unanswered_since: float | None = None
        self._closing = False
        self.opened = time.monotonic()

    # --------------------------------------------------------------- incoming
    def deliver(self, stream: str, data: bytes) -> None:
        if self._closing:
            return
        if self.queue.qsize() >= self.server.limits.ws_queue_frames:
            self._closing = True
            self.server.stats.closes["slow_client"] += 1
            self.abort()
            return
        self.queue.put_nowait((stream, data))

    async def reply(self, body: dict[str, object]) -> None:
        """Answer a request at once (replies may overtake queued data, as on Binance)."""
        if self.silent or self._closing:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_frame(orjson.dumps(body), WSMsgType.TEXT)
            self.server.stats.control_replies += 1

    def too_chatty(self) -> bool:
        """Count one incoming message; True when the last second held more than allowed."""
        now = time.monotonic()
        incoming = self._incoming
        incoming.append(now)
        while incoming and now - incoming[0] >= 1.0:
            incoming.popleft()
        return len(incoming) > self.server.limits.ws_messages_per_second

    def closed_by_client(self) -> None:
        """The socket ended without the server asking: count it as the client's doing."""
        if not self._closing:
            self._closing = True
            self.server.stats.closes["client"] += 1

    def pong_received(self) -> None:
        self._unanswered_since = None
        self.server.stats.pongs_received += 1

    @property
    def silent(self) -> bool:
        return time.monotonic() < self._silent_until

    # --------------------------------------------------------------- outgoing
    async def write_loop(self) -> None:
        """Drain the queue onto the socket; the WebSocket faults happen here."""
        queue = self.queue
        try:
            while True:
                stream, data = await queue.get()
                if self.silent:
                    continue
                if not await self._send_data(stream, data):
                    return
        except (ConnectionError, RuntimeError):
            # The socket went away under us; the reader notices and cleans up.
            return

    async def _send_data(self, stream: str, data: bytes) -> bool:
        """Send one payload, misbehaving as told; False once the socket is dropped."""
        faults = self.server.faults() if self.faulty else _NO_FAULTS
        stats = self.server.stats
        frame = _wrap(stream, data) if self.combined else data
        n = self.frames + 1
        if faults.garbage_every and n % faults.garbage_every == 0:
            kind, frame = corrupt(frame, self._garbage)
            self._garbage += 1
            stats.faults[f"garbage:{kind}"] += 1
        await self.ws.send_frame(frame, WSMsgType.TEXT)
        self.server.hub.remember(stream, data)
        self.frames = n
        stats.frames_sent += 1
        stats.frames_by_stream[stream] += 1
        sent = self._sent
        sent.append(frame)
        if faults.duplicate_every and n % faults.duplicate_every == 0:
            again = sent[-1 - min(faults.duplicate_lag, len(sent) - 1)]
            await self.ws.send_frame(again, WSMsgType.TEXT)
            stats.frames_sent += 1
            stats.frames_by_stream[stream] += 1
            stats.faults["duplicate"] += 1
        if faults.drop_after_frames and n >= faults.drop_after_frames:
            stats.faults["drop"] += 1
            stats.closes["drop"] += 1
            self._closing = True
            self.abort()
            return False
        if faults.silent_after_frames and n == faults.silent_after_frames:
            stats.faults["silence"] += 1
            span = faults.silent_for if faults.silent_for is not None else float("inf")
            self._silent_until = time.monotonic() + span
        return True

    async def timer_loop(self) -> None:
        """Ping, close a socket that stopped answering pings, close at the end of its life."""
        limits = self.server.limits
        stats = self.server.stats
        interval, timeout = limits.ws_ping_interval_s, limits.ws_pong_timeout_s
        end_of_life = self.opened + limits.ws_lifetime_s
        next_ping = self.opened + interval
        while True:
            deadline = min(next_ping, end_of_life)
            if self._unanswered_since is not None:
                deadline = min(deadline, self._unanswered_since + timeout)
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            if now >= end_of_life:
                await self.close(WSCloseCode.GOING_AWAY, "lifetime", b"Connection lifetime reached")
                return
            if self.silent:
                # A stalled server neither pings nor expects pongs.
                self._unanswered_since = None
                next_ping = max(next_ping, now + interval)
                continue
            if self._unanswered_since is not None and now - self._unanswered_since >= timeout:
                await self.close(WSCloseCode.POLICY_VIOLATION, "pong_timeout", b"Pong timeout")
                return
            if now >= next_ping:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.ping(str(int(time.time() * 1000)).encode())
                    stats.pings_sent += 1
                if self._unanswered_since is None:
                    self._unanswered_since = now
                next_ping = now + interval

    async def close(self, code: int, reason: str, message: bytes) -> None:
        """Close with a close frame (once), counting why."""
        if self._closing:
            return
        self._closing = True
        self.server.stats.closes[reason] += 1
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await self.ws.close(code=code, message=message)

    def abort(self) -> None:
        """Drop the TCP connection: no close frame, as a dying server or network does."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    # ---------------------------------------------------------- subscriptions
    def subscribe(self, specs: list[StreamSpec]) -> None:
        server = self.server
        overlap = server.faults().reconnect_overlap if self.faulty else 0
        for spec in specs:
            if spec.name in self.streams:
                continue
            if overlap:
                # A reconnecting client first sees what the last connection saw last.
                for data in server.hub.recent(spec.name, min(overlap, MAX_OVERLAP)):
                    self.queue.put_nowait((spec.name, data))
                    server.stats.faults["overlap"] += 1
            self.streams[spec.name] = spec
            server.hub.subscribe(spec, self)

    def unsubscribe(self, names: list[str]) -> None:
        for name in names:
            if self.streams.pop(name, None) is not None:
                self.server.hub.unsubscribe(name, self)

    def release(self) -> None:
        self.unsubscribe(list(self.streams))

    async def handle_text(self, text: str | bytes) -> None:
        """Answer one JSON request (SUBSCRIBE, UNSUBSCRIBE, ...)."""
        request_id: object = None
        try:
            try:
                body = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise _Refused(3, f"Invalid JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise _Refused(2, "Invalid request: expected an object")
            request_id = body.get("id")
            answer = self._method(body)
        except _Refused as refused:
            answer = {"error": {"code": refused.code, "msg": refused.msg}, "id": request_id}
        await self.reply(answer)

    def _method(self, body: dict[str, object]) -> dict[str, object]:
        method = body.get("method")
        if method is None:
            raise _Refused(2, "Invalid request: missing field `method`")
        if method not in _METHODS:
            raise _Refused(
                2,
                f"Invalid request: unknown variant `{method}`, expected one of "
                + ", ".join(f"`{m}`" for m in _METHODS),
            )
        request_id = body.get("id")
        if not self.server.valid_id(request_id):
            raise _Refused(2, "Invalid request: request ID must be an unsigned integer")
        params = body.get("params", [])
        if not isinstance(params, list):
            raise _Refused(2, "Invalid request: params must be an array")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) for p in params):
                raise _Refused(2, "Invalid request: invalid stream")
            names: list[str] = params
            if method == "UNSUBSCRIBE":
                self.unsubscribe(names)
            else:
                self.subscribe(self.server.specs(names, already=len(self.streams)))
            return {"result": None, "id": request_id}
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                raise _Refused(2, "Invalid request: too many parameters")
            return {"result": list(self.streams), "id": request_id}
        if not params or not isinstance(params[0], str):
            raise _Refused(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise _Refused(0, "Unknown property")
        if method == "GET_PROPERTY":
            return {"result": self.combined, "id": request_id}
        if len(params) != 2 or not isinstance(params[1], bool):
            raise _Refused(1, "Invalid value type: expected Boolean")
        self.combined = params[1]
        return {"result": None, "id": request_id}


class WsServer:
    """The WebSocket endpoints of one fake exchange."""

    def __init__(
        self, hub: StreamHub, limits: Limits, stats: Stats, faults: Callable[[], Faults]
    ) -> None:
        self.hub = hub
        self.limits = limits
        self.stats = stats
        self.faults = faults
        self.connections: set[_Connection] = set()
        self._numbers = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self._raw)
        app.router.add_get("/ws/{streams:.+}", self._raw)
        app.router.add_get("/stream", self._combined)

    def valid_id(self, request_id: object) -> bool:
        if self.limits.venue == "binance" and (
            # Binance spot also takes strings (up to 36 characters) and null.
            request_id is None or (isinstance(request_id, str) and len(request_id) <= 36)
        ):
            return True
        return isinstance(request_id, int) and not isinstance(request_id, bool) and request_id >= 0

    def specs(self, names: list[str], already: int = 0) -> list[StreamSpec]:
        """Parse stream names; `_Refused` if one is invalid or there would be too many."""
        specs = []
        for name in names:
            spec = parse_stream(name)
            if spec is None:
                raise _Refused(2, "Invalid request: invalid stream")
            specs.append(spec)
        if already + len({s.name for s in specs}) > self.limits.ws_max_streams:
            limit = self.limits.ws_max_streams
            raise _Refused(
                2, f"Invalid request: a connection can listen to at most {limit} streams"
            )
        return specs

    async def close_all(self) -> None:
        """Close every socket (server shutdown)."""
        await asyncio.gather(
            *(
                c.close(WSCloseCode.GOING_AWAY, "shutdown", b"Server shutdown")
                for c in self.connections
            )
        )

    def drop_all(self) -> None:
        """Drop every socket without a close frame."""
        for conn in list(self.connections):
            self.stats.closes["drop"] += 1
            conn.abort()

    async def _raw(self, request: web.Request) -> web.StreamResponse:
        names = [n for n in request.match_info.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=False)

    async def _combined(self, request: web.Request) -> web.StreamResponse:
        names = [n for n in request.query.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=True)

    async def _serve(
        self, request: web.Request, names: list[str], *, combined: bool
    ) -> web.StreamResponse:
        try:
            specs = self.specs(names)
        except _Refused as refused:
            return web.json_response({"code": refused.code, "msg": refused.msg}, status=400)
        ws = web.WebSocketResponse(
            autoping=False, heartbeat=None, compress=False, timeout=_CLOSE_TIMEOUT_S
        )
        if not ws.can_prepare(request).ok:
            return web.json_response({"code": -1, "msg": "WebSocket upgrade expected"}, status=400)
        await ws.prepare(request)
        conn = _Connection(self, next(self._numbers), request, ws, combined)
        self.connections.add(conn)
        self.stats.ws_connections += 1
        self.stats.ws_open += 1
        loop = asyncio.get_running_loop()
        writer = loop.create_task(conn.write_loop(), name=f"fake-exchange ws#{conn.number} writer")
        timer = loop.create_task(conn.timer_loop(), name=f"fake-exchange ws#{conn.number} timer")
        log.debug("ws#%d opened %s", conn.number, request.path_qs)
        try:
            conn.subscribe(specs)
            await self._read(conn)
        finally:
            log.debug("ws#%d closed after %d frames", conn.number, conn.frames)
            conn.release()
            self.connections.discard(conn)
            self.stats.ws_open -= 1
            for task in (writer, timer):
                task.cancel()
            for task in (writer, timer):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return ws

    async def _read(self, conn: _Connection) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                conn.closed_by_client()
                return
            if conn.too_chatty():
                await conn.close(WSCloseCode.POLICY_VIOLATION, "rate_limit", b"Too many requests")
                return
            if kind == WSMsgType.PING:
                if not conn.silent:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.pong(msg.data)
            elif kind == WSMsgType.PONG:
                conn.pong_received()
            elif kind in (WSMsgType.TEXT, WSMsgType.BINARY):
                await conn.handle_text(msg.data)
