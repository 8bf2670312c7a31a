"""A market fed by a capture: recorded frames played back to subscribers at recorded pace.

The capture (DESIGN.md's JSON Lines, or a cryptofeed recording; read by
`pipeline.capture`) is loaded once. Each WebSocket frame is filed under its
stream: the combined-stream envelope names it; a raw frame takes the name from
its socket's URL (`/ws/<stream>`) or, failing that, from its payload (event type
and symbol). Malformed recorded frames are kept and replayed, still malformed
(a raw socket gets the recorded text): they are part of what a replay tests.

The market clock starts at the capture's first receive time and runs at `speed`;
a stream's producer sends each frame when the clock reaches the frame's receive
time, so every subscriber sees the capture as a live feed from the moment it
subscribes. REST requests are answered with the recorded response for the same
path, symbol and interval (the latest one recorded by now); anything never
recorded falls back to a synthetic market over the capture's symbols.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from os import PathLike
from typing import Final, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import orjson

from operators.events import RawMessage
from pipeline.capture import Capture, merge_messages
from pipeline.fake_exchange._clock import Clock
from pipeline.fake_exchange._market import RecordedResponse
from pipeline.fake_exchange._streams import StreamSpec
from pipeline.fake_exchange._synthetic import SyntheticMarket

__all__ = ["CaptureMarket"]

log = logging.getLogger(__name__)

_STREAM_FIELD: Final = re.compile(rb'"stream"\s*:\s*"([^"]+)"')
_DATA_FIELD: Final = re.compile(rb'"data"\s*:\s*')
_EVENT_STREAMS: Final = {
    "depthUpdate": "depth",
    "24hrTicker": "ticker",
    "24hrMiniTicker": "miniTicker",
    "aggTrade": "aggTrade",
    "trade": "trade",
}


class _Recorded(NamedTuple):
    t_ms: int
    path: str
    query: dict[str, str]
    status: int
    body: str


def _single_stream(url: str) -> str | None:
    """The stream of a raw single-stream socket URL (`.../ws/<stream>`), else None."""
    path = urlsplit(url).path
    if "/ws/" not in path:
        return None
    names = [n for n in path.split("/ws/", 1)[1].split("/") if n]
    return names[0] if len(names) == 1 else None


def _infer_stream(payload: dict[str, object]) -> str | None:
    """A raw payload's stream name, from its event type and symbol."""
    symbol = payload.get("s")
    if not isinstance(symbol, str):
        return None
    sym = symbol.lower()
    event = payload.get("e")
    if event == "kline":
        k = payload.get("k")
        interval = k.get("i") if isinstance(k, dict) else None
        return f"{sym}@kline_{interval}" if isinstance(interval, str) else None
    if isinstance(event, str) and event in _EVENT_STREAMS:
        return f"{sym}@{_EVENT_STREAMS[event]}"
    if event is None and {"u", "b", "a"} <= payload.keys():
        return f"{sym}@bookTicker"
    return None


def _aliases(name: str) -> list[str]:
    """Names a capture may have filed the same depth stream under."""
    if "@depth" not in name:
        return []
    if name.endswith("@100ms"):
        return [name.removesuffix("@100ms")]
    return [name + "@100ms"]


class CaptureMarket:
    """Recorded traffic served as a live market (see the module docstring)."""

    def __init__(
        self,
        paths: str | PathLike[str] | Sequence[str | PathLike[str]],
        *,
        speed: float = 1.0,
        clock: Clock | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(paths, str | PathLike):
            paths = [paths]
        captures = [Capture(p) for p in paths]
        self.frames: dict[str, list[tuple[int, bytes]]] = {}
        self.unattributed = 0
        """Recorded frames no stream could be found for (not replayed)."""
        self._rest: list[_Recorded] = []
        first_ms = self._load(merge_messages(captures))
        self.clock = clock if clock is not None else Clock(start_ms=first_ms, speed=speed)
        symbols = sorted(
            {name.split("@", 1)[0].upper() for name in self.frames if not name.startswith("!")}
            | {r.query["symbol"] for r in self._rest if "symbol" in r.query}
        )
        self._fallback = SyntheticMarket(symbols, clock=self.clock, seed=seed)

    def _load(self, messages: Iterable[RawMessage]) -> int | None:
        urls: dict[int, str] = {}
        first_ms: int | None = None
        for msg in messages:
            t_ms = msg.t // 1_000_000
            if first_ms is None:
                first_ms = t_ms
            if msg.kind == "open":
                urls[msg.conn] = msg.url
            elif msg.kind == "rest" and msg.method == "GET":
                parts = urlsplit(msg.url)
                query = dict(parse_qsl(parts.query))
                self._rest.append(_Recorded(t_ms, parts.path, query, msg.status, msg.data))
            elif msg.kind == "ws":
                self._file(t_ms, msg.data.encode(), urls.get(msg.conn, ""))
        for frames in self.frames.values():
            frames.sort(key=lambda f: f[0])
        return first_ms

    def _file(self, t_ms: int, text: bytes, url: str) -> None:
        """File one recorded frame under its stream (its payload without the envelope)."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            if "stream" in obj and "data" in obj and isinstance(obj["stream"], str):
                self.frames.setdefault(obj["stream"], []).append((t_ms, orjson.dumps(obj["data"])))
                return
            if "result" in obj or "error" in obj:
                return  # a reply to the recorder's own request, not market data
            name = _single_stream(url) or _infer_stream(obj)
            if name is not None:
                self.frames.setdefault(name, []).append((t_ms, text))
                return
        else:
            # Malformed as recorded: keep it whole for the stream it claims, if any.
            m = _STREAM_FIELD.search(text)
            name = m.group(1).decode() if m else _single_stream(url)
            if name is not None:
                d = _DATA_FIELD.search(text) if m else None
                data = text[d.end() :].removesuffix(b"}") if d else text
                self.frames.setdefault(name, []).append((t_ms, data))
                return
        self.unattributed += 1

    # ---------------------------------------------------------------- WebSocket
    def stream(self, spec: StreamSpec) -> AsyncIterator[bytes] | None:
        for name in (spec.name, *_aliases(spec.name)):
            frames = self.frames.get(name)
            if frames:
                return self._replay(frames)
        return None

    async def _replay(self, frames: list[tuple[int, bytes]]) -> AsyncIterator[bytes]:
        clock = self.clock
        start = bisect.bisect_left(frames, clock.now_ms(), key=lambda f: f[0])
        for t_ms, data in frames[start:]:
            await clock.sleep_until(t_ms)
            yield data

    # --------------------------------------------------------------------- REST
    def recorded_rest(self, path: str, query: Mapping[str, str]) -> RecordedResponse | None:
        matches = [
            rec
            for rec in self._rest
            if rec.path == path
            and all(rec.query.get(k) == query.get(k) for k in ("symbol", "interval"))
        ]
        if not matches:
            return None
        now = self.clock.now_ms()
        past = [rec for rec in matches if rec.t_ms <= now]
        best = past[-1] if past else matches[0]
        return best.status, best.body

    # ------------------------------------------------- the rest: synthetic data
    def listed_symbols(self) -> list[str]:
        return self._fallback.listed_symbols()

    def has_symbol(self, symbol: str) -> bool:
        return self._fallback.has_symbol(symbol)

    def symbol_entry(self, symbol: str) -> dict[str, object]:
        return self._fallback.symbol_entry(symbol)

    def klines(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[object]]:
        return self._fallback.klines(symbol, interval, start_ms, end_ms, limit)

    def depth(self, symbol: str, limit: int) -> dict[str, object]:
        return self._fallback.depth(symbol, limit)

    def ticker_24hr(self, symbol: str) -> dict[str, object]:
        return self._fallback.ticker_24hr(symbol)

    def book_ticker(self, symbol: str) -> dict[str, object]:
        return self._fallback.book_ticker(symbol)
