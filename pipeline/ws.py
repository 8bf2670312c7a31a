"""The WebSocket source: Binance combined streams that stay up for days.

`WsSource` keeps every requested stream flowing and pushes each text frame,
unparsed, with its receive time to `WsSource.messages` as a
`RawMessage(kind="ws")`, plus `open`/`close` messages when a socket opens,
closes or fails to connect. Parsing, deduplication and gap handling happen
downstream; this module only keeps the sockets alive and within the venue's
rules (web-socket-streams.md, "General WSS information" and "Websocket Limits"):

- Combined streams, `/stream?streams=a/b/c`, at most 1024 streams a connection:
  more streams open more connections (a *slot* each). Streams that would make
  the URL too long are added with `SUBSCRIBE` requests once connected.
- The server pings; aiohttp's autoping answers each ping with a pong at once.
- At most 5 incoming messages a second per connection, pongs included: the
  client's own requests go through a sliding-window limiter set to 4 a second,
  leaving room for a pong.
- Every connection is dropped at 24 hours: `renew_before` seconds earlier the
  slot opens a successor with the same streams, keeps both until the successor
  delivers data, then closes the old one. The overlap's frames arrive twice;
  the pipeline's dedupe drops them, and nothing is missed.
- A connection that delivers no frame for `silence_timeout` seconds is closed
  and replaced (a half-open TCP connection never says it is dead).
- After any failure the slot reconnects with capped exponential backoff and
  full jitter; the first retry comes within `backoff_base` seconds (1 s) and the
  attempt count resets only once data flows again, not on a mere connect.

One reader task per socket does nothing but read, stamp and push; a supervisor
task per slot connects, watches, renews and reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Final

import aiohttp
import orjson
import reactivex
from yarl import URL

from operators.events import KIND_CLOSE, KIND_OPEN, KIND_WS, REPLACED_REASON, RawMessage
from pipeline._hub import Hub, iterate
from pipeline._pacing import Sleep, SlidingWindowLimiter, backoff_delay
from pipeline.errors import UsageError
from pipeline.venues import BINANCE_US, Venue

__all__ = ["WsSource", "WsStats"]

log = logging.getLogger(__name__)

ABNORMAL_CLOSURE: Final = 1006
"""Close code reported when a socket ends without a close frame or never opens."""
NORMAL_CLOSURE: Final = 1000

# Connection ids are unique over the whole process, so captures of several
# sources (or several runs appended) never confuse two sockets.
_conn_ids = itertools.count(1)

# The server counts messages by its receive times; network jitter can bunch
# them, so the client's window is a little longer than the server's second.
_LIMIT_WINDOW: Final = 1.05

# Seconds to wait for a silent socket's close reply before dropping it anyway.
_SILENT_CLOSE_PATIENCE: Final = 1.0

_ENDED: Final = "ended"
_RENEW: Final = "renew"


@dataclass
class WsStats:
    """Counters for the run summary (all cumulative)."""

    connects: int = 0
    """Sockets opened."""
    reconnects: int = 0
    """Sockets opened to replace one that dropped, failed or fell silent."""
    renewals: int = 0
    """Planned handovers before the 24 h limit."""
    connect_failures: int = 0
    disconnects: int = 0
    dropped: int = 0
    """Sockets lost without a close frame (a dead network or server), not closed by us."""
    server_closes: int = 0
    """Sockets the server closed with a close frame (its 24 h limit, a policy), not us."""
    frames: int = 0
    bytes: int = 0
    """Characters of text frames (bytes, for Binance's ASCII JSON)."""
    silence_timeouts: int = 0
    requests_sent: int = 0
    """SUBSCRIBE/UNSUBSCRIBE requests sent."""
    observer_errors: int = 0
    """Exceptions raised by subscribers of `messages` (logged, then ignored)."""

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and the CLI summary)."""
        return asdict(self)


class _Conn:
    """One physical socket."""

    __slots__ = (
        "close_reason",
        "first_data",
        "frames",
        "id",
        "limiter",
        "opened",
        "send_lock",
        "streams",
        "task",
        "url",
        "ws",
    )

    def __init__(self, url: str, limiter: SlidingWindowLimiter) -> None:
        self.id = next(_conn_ids)
        self.url = url
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.task: asyncio.Task[None] | None = None
        self.opened = 0.0
        self.frames = 0
        self.first_data = asyncio.Event()
        self.close_reason: str | None = None
        """Set when this client closes the socket, and why."""
        self.streams: dict[str, None] = {}
        """Streams the server has been asked for on this socket, in order."""
        self.limiter = limiter
        self.send_lock = asyncio.Lock()


class _Slot:
    """Up to `max_streams` streams and the socket(s) carrying them."""

    __slots__ = ("live", "streams", "task")

    def __init__(self) -> None:
        self.streams: dict[str, None] = {}
        self.live: list[_Conn] = []
        """Open sockets: one, or two during a renewal."""
        self.task: asyncio.Task[None] | None = None


class WsSource:
    """Binance combined-stream WebSocket source with reconnects and 24 h renewal.

    Subscribe to `messages` (or iterate `stream()`), then `await start()` (or
    `async with WsSource(...)`); `subscribe()`/`unsubscribe()` change the
    streams at run time; `close()` stops everything cleanly.
    """

    def __init__(
        self,
        base_ws_url: str | None = None,
        streams: Iterable[str] = (),
        *,
        venue: Venue = BINANCE_US,
        session: aiohttp.ClientSession | None = None,
        max_streams: int | None = None,
        max_requests_per_second: int = 4,
        silence_timeout: float = 30.0,
        lifetime: float | None = None,
        renew_before: float = 600.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 5.0,
        max_url_length: int = 4000,
        streams_per_request: int = 200,
        rand: Callable[[], float] = random.random,
        sleep: Sleep = asyncio.sleep,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Create a source (nothing connects until `start()`).

        - `base_ws_url`: e.g. `wss://stream.binance.us:9443` (default: the venue's).
        - `max_streams`: streams per connection (default: the venue's 1024).
        - `max_requests_per_second`: SUBSCRIBE/UNSUBSCRIBE pace per connection;
          below the venue's 5 so a pong always fits.
        - `silence_timeout`: seconds without a frame before a socket is replaced.
        - `lifetime`: the server's connection lifetime (default: the venue's
          24 h); `renew_before`: how long before it a successor opens.
        - `backoff_base`, `backoff_cap`: reconnect backoff, seconds (full jitter).
        - `max_url_length`: streams beyond it are requested with SUBSCRIBE.
        - `rand`, `sleep`: injectable for tests (`sleep` paces backoff only).
        - `clock_ns`: the receive time (ns) stamped on every message, `open` and
          `close` included (a sped-up fake market passes its own clock); the
          watchdog, backoff and renewal timers stay on the event loop's clock.
        """
        lifetime = venue.ws_lifetime if lifetime is None else lifetime
        max_streams = venue.ws_max_streams if max_streams is None else max_streams
        if not 0 < renew_before < lifetime:
            raise UsageError(
                f"renew_before must be between 0 and the lifetime ({lifetime:g} s), "
                f"not {renew_before!r}"
            )
        if silence_timeout <= 0:
            raise UsageError(f"silence_timeout must be positive, not {silence_timeout!r}")
        if not 1 <= max_requests_per_second < venue.ws_messages_per_second:
            raise UsageError(
                f"max_requests_per_second must be from 1 to {venue.ws_messages_per_second - 1} "
                f"(the venue takes {venue.ws_messages_per_second} messages a second, pongs "
                f"included), not {max_requests_per_second!r}"
            )
        if max_streams < 1:
            raise UsageError(f"max_streams must be at least 1, not {max_streams!r}")
        self.venue = venue
        self.base_url = (base_ws_url or venue.ws_url).rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._max_streams = max_streams
        self._max_requests = max_requests_per_second
        self._silence = silence_timeout
        self._lifetime = lifetime
        self._renew_before = renew_before
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._max_url_length = max_url_length
        self._per_request = max(1, streams_per_request)
        self._rand = rand
        self._sleep = sleep
        self._clock_ns = clock_ns
        self._hub: Hub[RawMessage] = Hub(self._observer_failed)
        self._slots: list[_Slot] = []
        self._where: dict[str, _Slot] = {}
        self._request_ids = itertools.count(1)
        self._started = False
        self._closed = False
        self.stats = WsStats()
        self._add(streams)

    # ------------------------------------------------------------ public API

    @property
    def messages(self) -> reactivex.Observable[RawMessage]:
        """Frames (`ws`) and socket changes (`open`, `close`), in receive order."""
        return self._hub.observable

    def stream(self) -> AsyncGenerator[RawMessage, None]:
        """`messages` as an async iterator (unbounded queue; ends on `close()`).

        Wrap it in `contextlib.aclosing` when leaving the loop early.
        """
        return iterate(self._hub.observable)

    @property
    def streams(self) -> list[str]:
        """Every stream currently requested, in the order first requested."""
        return list(self._where)

    @property
    def connection_count(self) -> int:
        """Sockets open right now (a renewal briefly holds two per slot)."""
        return sum(len(slot.live) for slot in self._slots)

    async def __aenter__(self) -> WsSource:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open one connection per slot of up to `max_streams` streams."""
        if self._closed:
            raise UsageError("this WsSource is closed; make a new one")
        if self._started:
            return
        self._started = True
        if self._session is None:
            self._session = aiohttp.ClientSession()
        for slot in self._slots:
            self._launch(slot)

    async def subscribe(self, streams: Iterable[str]) -> None:
        """Add streams at run time (SUBSCRIBE on live sockets, new sockets past 1024)."""
        for slot in self._add(streams):
            if self._started and not self._closed:
                if slot.task is None:
                    self._launch(slot)
                else:
                    await self._sync_slot(slot)

    async def unsubscribe(self, streams: Iterable[str]) -> None:
        """Drop streams at run time; a slot left with none closes its socket."""
        touched: dict[int, _Slot] = {}
        for stream in streams:
            slot = self._where.pop(stream, None)
            if slot is not None:
                del slot.streams[stream]
                touched[id(slot)] = slot
        for slot in touched.values():
            if not self._started or self._closed:
                continue
            if slot.streams:
                await self._sync_slot(slot)
            else:
                self._slots.remove(slot)
                await self._stop_slot(slot, "no streams left")

    async def close(self) -> None:
        """Stop every task and close every socket; `messages` completes."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(self._stop_slot(slot, "client closed") for slot in self._slots))
        self._hub.on_completed()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------ streams and slots

    def _add(self, streams: Iterable[str]) -> list[_Slot]:
        touched: dict[int, _Slot] = {}
        for stream in streams:
            if not isinstance(stream, str) or not stream or "/" in stream or " " in stream:
                raise UsageError(f"invalid stream name {stream!r}")
            if stream in self._where:
                continue
            slot = next((s for s in self._slots if len(s.streams) < self._max_streams), None)
            if slot is None:
                slot = _Slot()
                self._slots.append(slot)
            slot.streams[stream] = None
            self._where[stream] = slot
            touched[id(slot)] = slot
        return list(touched.values())

    def _launch(self, slot: _Slot) -> None:
        slot.task = asyncio.create_task(self._supervise(slot), name="ws-supervisor")

    async def _stop_slot(self, slot: _Slot, reason: str) -> None:
        task = slot.task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(self._retire(slot, conn, reason) for conn in list(slot.live)))

    def _url_for(self, streams: list[str]) -> tuple[str, list[str]]:
        """The connect URL and the streams that fit in it (at least one)."""
        prefix = f"{self.base_url}/stream?streams="
        length = len(prefix)
        fit: list[str] = []
        for stream in streams:
            extra = len(stream) + (1 if fit else 0)
            if fit and length + extra > self._max_url_length:
                break
            fit.append(stream)
            length += extra
        return prefix + "/".join(fit), fit

    # ------------------------------------------------------------ one socket

    async def _open(self, slot: _Slot) -> _Conn | None:
        """Connect a socket carrying the slot's streams; None (and a `close`) on failure."""
        wanted = list(slot.streams)
        url, in_url = self._url_for(wanted)
        conn = _Conn(url, SlidingWindowLimiter(self._max_requests, _LIMIT_WINDOW))
        assert self._session is not None
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session.ws_connect(
                    URL(url, encoded=True),
                    autoping=True,
                    autoclose=True,
                    heartbeat=None,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self._close_timeout),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats.connect_failures += 1
            reason = f"connect failed: {_describe(exc)}"
            log.warning("ws #%d %s: %s", conn.id, url, reason)
            t = self._clock_ns()
            self._hub.on_next(RawMessage(t, KIND_CLOSE, conn.id, reason, url, ABNORMAL_CLOSURE))
            return None
        conn.ws = ws
        conn.opened = time.monotonic()
        conn.streams = dict.fromkeys(in_url)
        self.stats.connects += 1
        log.info("ws #%d open: %s (%d streams)", conn.id, url, len(wanted))
        self._hub.on_next(RawMessage(self._clock_ns(), KIND_OPEN, conn.id, "", url))
        conn.task = asyncio.create_task(self._read(conn), name=f"ws-reader-{conn.id}")
        slot.live.append(conn)
        # Streams beyond the URL, and any added while connecting.
        await self._sync(slot, conn)
        return conn

    async def _read(self, conn: _Conn) -> None:
        """The socket's only reader: stamp each text frame and push it, nothing more."""
        ws = conn.ws
        assert ws is not None
        receive = ws.receive
        emit = self._hub.on_next
        stats = self.stats
        cid = conn.id
        text_type = aiohttp.WSMsgType.TEXT
        time_ns = self._clock_ns
        code = ABNORMAL_CLOSURE
        reason = "connection lost without a close frame"
        try:
            while True:
                msg = await receive()
                if msg.type is text_type:
                    data: str = msg.data
                    t = time_ns()
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    data = bytes(msg.data).decode("utf-8", "replace")
                    t = time_ns()
                else:
                    if msg.type is aiohttp.WSMsgType.CLOSE:
                        code = int(msg.data)
                        reason = msg.extra or "closed by the server"
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        reason = f"protocol error: {_describe(msg.data)}"
                    break
                conn.frames += 1
                if conn.frames == 1:
                    conn.first_data.set()
                stats.frames += 1
                stats.bytes += len(data)
                emit(RawMessage(t, KIND_WS, cid, data))
        except asyncio.CancelledError:
            reason = conn.close_reason or "reader cancelled"
            raise
        except Exception as exc:
            reason = f"read failed: {_describe(exc)}"
            log.exception("ws #%d: reader failed", cid)
        finally:
            if conn.close_reason is not None:
                code, reason = NORMAL_CLOSURE, conn.close_reason
            else:
                if code == ABNORMAL_CLOSURE:
                    self.stats.dropped += 1
                else:
                    self.stats.server_closes += 1
                if not ws.closed:
                    await _quiet_close(ws)
            self.stats.disconnects += 1
            log.info("ws #%d closed: %d %s", cid, code, reason)
            self._hub.on_next(RawMessage(time_ns(), KIND_CLOSE, cid, reason, conn.url, code))

    async def _retire(
        self, slot: _Slot, conn: _Conn, reason: str, patience: float | None = None
    ) -> None:
        """Close a socket on purpose and wait for its reader to report the close."""
        if conn.close_reason is None:
            conn.close_reason = reason
        if conn.ws is not None and not conn.ws.closed:
            await _quiet_close(conn.ws, patience)
        if conn.task is not None:
            await asyncio.gather(conn.task, return_exceptions=True)
        if conn in slot.live:
            slot.live.remove(conn)

    async def _sync_slot(self, slot: _Slot) -> None:
        for conn in list(slot.live):
            await self._sync(slot, conn)

    async def _sync(self, slot: _Slot, conn: _Conn) -> None:
        """Send SUBSCRIBE/UNSUBSCRIBE until the socket carries exactly the slot's streams.

        Recomputed after every request, so changes made while waiting for the
        rate limiter are picked up; one request at a time per socket.
        """
        async with conn.send_lock:
            while conn.ws is not None and not conn.ws.closed and conn.close_reason is None:
                add = [s for s in slot.streams if s not in conn.streams]
                drop = [s for s in conn.streams if s not in slot.streams]
                if add:
                    method, params = "SUBSCRIBE", add[: self._per_request]
                elif drop:
                    method, params = "UNSUBSCRIBE", drop[: self._per_request]
                else:
                    return
                await conn.limiter.acquire()
                request_id = next(self._request_ids)
                text = orjson.dumps({"method": method, "params": params, "id": request_id})
                try:
                    await conn.ws.send_str(text.decode())
                except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                    # The reader sees the drop and the supervisor reconnects with every stream.
                    log.warning("ws #%d: %s failed: %s", conn.id, method, _describe(exc))
                    return
                self.stats.requests_sent += 1
                log.debug("ws #%d: %s %d streams (id %d)", conn.id, method, len(params), request_id)
                for stream in params:
                    if method == "SUBSCRIBE":
                        conn.streams[stream] = None
                    else:
                        conn.streams.pop(stream, None)

    # ------------------------------------------------------------ supervision

    async def _supervise(self, slot: _Slot) -> None:
        """Keep one socket of this slot alive for as long as the source runs."""
        attempt = 0
        conn: _Conn | None = None
        dropped = False
        while True:
            try:
                if conn is None:
                    conn = await self._open(slot)
                    if conn is None:
                        await self._pause(attempt)
                        attempt += 1
                        continue
                    if dropped:
                        self.stats.reconnects += 1
                if await self._watch(slot, conn) == _RENEW:
                    conn, failed = await self._renew(slot, conn)
                    if failed:
                        await self._pause_unless_ended(conn, attempt)
                        attempt += 1
                    continue
                # The socket is gone. Only data proves the last connect worked.
                if conn.frames:
                    attempt = 0
                if conn in slot.live:
                    slot.live.remove(conn)
                conn = None
                dropped = True
                await self._pause(attempt)
                attempt += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ws supervisor failed; carrying on")
                await self._pause(attempt)
                attempt += 1

    async def _watch(self, slot: _Slot, conn: _Conn) -> str:
        """Wait until the socket ends (`_ENDED`) or is due for renewal (`_RENEW`).

        Closes it after `silence_timeout` seconds without a frame.
        """
        assert conn.task is not None
        period = self._silence / 4.0
        seen = conn.frames
        last_change = time.monotonic()
        renew_at = conn.opened + self._lifetime - self._renew_before
        while True:
            if conn.task.done():
                return _ENDED
            now = time.monotonic()
            if now >= renew_at:
                return _RENEW
            done, _ = await asyncio.wait({conn.task}, timeout=min(period, renew_at - now))
            if done:
                return _ENDED
            now = time.monotonic()
            if conn.frames != seen:
                seen, last_change = conn.frames, now
            elif now - last_change >= self._silence:
                self.stats.silence_timeouts += 1
                log.warning("ws #%d: no data for %.1f s; reconnecting", conn.id, now - last_change)
                reason = f"silence timeout: no data for {self._silence:g} s"
                await self._retire(slot, conn, reason, _SILENT_CLOSE_PATIENCE)
                return _ENDED

    async def _renew(self, slot: _Slot, old: _Conn) -> tuple[_Conn, bool]:
        """Open a successor before the server drops `old`; hand over once it has data.

        Returns the socket to watch next and whether the renewal failed.
        """
        age = time.monotonic() - old.opened
        log.info("ws #%d: %.0f s old, opening its successor", old.id, age)
        new = await self._open(slot)
        if new is None:
            return old, True
        assert new.task is not None
        assert old.task is not None
        first = asyncio.create_task(new.first_data.wait())
        try:
            await asyncio.wait(
                {first, new.task, old.task},
                timeout=self._silence,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        if new.first_data.is_set():
            await self._retire(slot, old, REPLACED_REASON)
            self.stats.renewals += 1
            return new, False
        if not new.task.done() and old.task.done():
            # The old one went first; the new one is all there is.
            if old in slot.live:
                slot.live.remove(old)
            return new, False
        if not new.task.done():
            self.stats.silence_timeouts += 1
            reason = "silence timeout: successor delivered no data"
            await self._retire(slot, new, reason, _SILENT_CLOSE_PATIENCE)
        elif new in slot.live:
            slot.live.remove(new)
        return old, True

    async def _pause(self, attempt: int) -> None:
        delay = backoff_delay(attempt, self._backoff_base, self._backoff_cap, self._rand)
        log.info("ws: reconnecting in %.2f s (attempt %d)", delay, attempt + 1)
        await self._sleep(delay)

    async def _pause_unless_ended(self, conn: _Conn, attempt: int) -> None:
        """Back off before another renewal try, but wake at once if `conn` dies."""
        assert conn.task is not None
        pause = asyncio.create_task(self._pause(attempt))
        try:
            await asyncio.wait({pause, conn.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pause.cancel()
            await asyncio.gather(pause, return_exceptions=True)

    def _observer_failed(self, exc: Exception, observer: object) -> None:
        # A subscriber's bug must not take the feed (or the other subscribers) down.
        self.stats.observer_errors += 1
        log.error("a subscriber of WsSource.messages raised", exc_info=exc)


async def _quiet_close(ws: aiohttp.ClientWebSocketResponse, patience: float | None = None) -> None:
    """Close a socket, swallowing what a dying connection throws.

    `patience` bounds the wait for the server's close reply: a silent socket is
    likely half-open and will never answer.
    """
    try:
        async with asyncio.timeout(patience):
            await ws.close()
    except (aiohttp.ClientError, ConnectionError, TimeoutError, RuntimeError) as exc:
        log.debug("closing a websocket failed: %s", _describe(exc))


def _describe(exc: object) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
