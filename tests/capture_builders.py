"""Build Binance frames, REST bodies and capture lines by hand, for replay tests.

Values are given as decimal strings (as Binance sends them) so a test states
exactly what the frames should hold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from operators.events import RawMessage


def shared_data() -> Path:
    """The real recordings: `$HBAR_SHARED_DIR/data/binance-real`, else `../shared` by the repo."""
    root = os.environ.get("HBAR_SHARED_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared"
    return base / "data" / "binance-real"


REAL = shared_data()
"""cryptofeed's real Binance recordings (read-only)."""
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"no real recordings at {REAL}")

Level = tuple[str, str]
MS = 1_000_000
"""Nanoseconds in a millisecond."""


def kline(
    symbol: str,
    open_time: int,
    ohlcv: Sequence[str],
    final: bool | str,
    event_ms: int,
    interval: str = "1m",
    length_ms: int = 60_000,
) -> str:
    """A `<symbol>@kline_<interval>` frame (`final` may be a string, to break the layout)."""
    o, h, lo, c, v = ohlcv
    data = {
        "e": "kline",
        "E": event_ms,
        "s": symbol,
        "k": {
            "t": open_time,
            "T": open_time + length_ms - 1,
            "s": symbol,
            "i": interval,
            "f": 100,
            "L": 200,
            "o": o,
            "c": c,
            "h": h,
            "l": lo,
            "v": v,
            "n": 101,
            "x": final,
            "q": "0",
            "V": "0",
            "Q": "0",
            "B": "0",
        },
    }
    return orjson.dumps({"stream": f"{symbol.lower()}@kline_{interval}", "data": data}).decode()


def depth20(symbol: str, last_update_id: int, bids: Sequence[Level], asks: Sequence[Level]) -> str:
    data = {
        "lastUpdateId": last_update_id,
        "bids": [list(b) for b in bids],
        "asks": [list(a) for a in asks],
    }
    return orjson.dumps({"stream": f"{symbol.lower()}@depth20@100ms", "data": data}).decode()


def ticker(symbol: str, event_ms: int, values: Sequence[str], drop: str = "") -> str:
    """A `24hrTicker`: `values` are best bid, bid qty, best ask, ask qty, last, last qty,
    volume, quote volume; `drop` names a field to leave out."""
    b, bq, a, aq, c, cq, v, q = values
    data: dict[str, object] = {
        "e": "24hrTicker",
        "E": event_ms,
        "s": symbol,
        "p": "0",
        "P": "0",
        "w": c,
        "x": c,
        "c": c,
        "Q": cq,
        "b": b,
        "B": bq,
        "a": a,
        "A": aq,
        "o": c,
        "h": c,
        "l": c,
        "v": v,
        "q": q,
        "O": event_ms - 86_400_000,
        "C": event_ms,
        "F": 1,
        "L": 2,
        "n": 2,
    }
    data.pop(drop, None)
    return orjson.dumps({"stream": f"{symbol.lower()}@ticker", "data": data}).decode()


def kline_row(open_time: int, ohlcv: Sequence[str], length_ms: int = 60_000) -> list[object]:
    """One row of a REST `/api/v3/klines` body."""
    o, h, lo, c, v = ohlcv
    return [open_time, o, h, lo, c, v, open_time + length_ms - 1, "0", 1, "0", "0", "0"]


def rows_body(rows: Sequence[list[object]]) -> str:
    return orjson.dumps(list(rows)).decode()


class CaptureBuilder:
    """Capture lines in the order they are added (receive times are the caller's)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def ws(self, t: int, data: str, conn: int = 1) -> None:
        self._add({"t": t, "kind": "ws", "conn": conn, "data": data})

    def rest(self, t: int, url: str, data: str, status: int = 200) -> None:
        self._add({"t": t, "kind": "rest", "method": "GET", "url": url, "status": status,
                   "data": data})  # fmt: skip

    def open(self, t: int, conn: int, url: str = "wss://stream.binance.us:9443/stream") -> None:
        self._add({"t": t, "kind": "open", "conn": conn, "url": url})

    def close(self, t: int, conn: int, code: int = 1006, reason: str = "abnormal closure") -> None:
        self._add({"t": t, "kind": "close", "conn": conn, "code": code, "reason": reason})

    def raw_line(self, line: bytes) -> None:
        self.lines.append(line.rstrip(b"\n") + b"\n")

    def _add(self, record: dict[str, object]) -> None:
        self.lines.append(orjson.dumps(record) + b"\n")

    def write(self, path: Path) -> Path:
        path.write_bytes(b"".join(self.lines))
        return path


def raw_ws(t: int, data: str, conn: int = 1) -> RawMessage:
    return RawMessage(t, "ws", conn, data)
