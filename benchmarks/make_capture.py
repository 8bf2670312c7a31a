"""Generate a deterministic synthetic capture in the live Binance.US mix (DESIGN.md format).

    python benchmarks/make_capture.py OUT.jsonl.gz [--seconds 180] [--symbol HBARUSDT ...]
                                      [--faults reconnect,duplicate,stale,malformed|none]
                                      [--seed 0]

Per symbol and second: 10 `depth20@100ms` snapshots, 1 `24hrTicker`, 2 `kline_1m`
updates, and the closing `x: true` kline shortly after each minute; before the
socket opens, the REST preload the pipeline makes (1m/1h/1d klines, one row more
than each frame keeps, the forming candle last), and every 60 s the hourly REST
check. All symbols share one combined-stream connection.

Faults (`faults=`, any subset of `FAULTS`):
- `reconnect`: around a minute boundary the socket closes abnormally (1006), so
  the closing kline of that minute never arrives over the WebSocket; 1.5 s later
  a new connection opens and its first frames repeat the last frames the old one
  delivered (depth20, ticker, kline); then the 1m klines since the last final
  one are fetched over REST, as the pipeline does after a reconnect.
- `duplicate`: a closing kline and a ticker are delivered twice.
- `stale`: a depth20 snapshot is delivered again, late, after newer ones.
- `malformed`: a depth20 frame cut short mid-JSON.

The output depends only on the arguments: the same call writes the same bytes
(gzip without a timestamp, a seeded generator, integer prices). Compression
follows the suffix: `.gz`, `.zst`, anything else is plain JSON Lines. Writing is
streamed, so a 300k-message capture costs little memory.
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import sys
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import orjson
import zstandard

__all__ = ["DEFAULT_START_MS", "FAULTS", "CaptureInfo", "main", "make_capture"]

FAULTS: Final = frozenset({"reconnect", "duplicate", "stale", "malformed"})
DEFAULT_START_MS: Final = 1_732_600_000_000
"""2024-11-26 05:46:40 UTC: 40 s into a minute, so the first candle is already forming."""

WS_URL: Final = "wss://stream.binance.us:9443/stream?streams="
STEP_MS: Final = 100
"""One depth20 snapshot per symbol per step, as `@100ms` delivers them."""
LEVELS: Final = 20
PRELOAD: Final = {"1m": 61, "1h": 73, "1d": 61}
"""Rows each preload asks for: one more than the frame keeps (the forming candle)."""
INTERVAL_MS: Final = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}
_PRICE_SCALE: Final = 10**8
"""Prices are integers of 1e-8 (Binance's 8 decimals), so formatting is exact."""


def _dec(units: int) -> str:
    """An integer of 1e-8 units as Binance's 8-decimal string."""
    return f"{units // _PRICE_SCALE}.{units % _PRICE_SCALE:08d}"


@dataclass
class CaptureInfo:
    """What `make_capture` wrote: messages per stream kind (for benchmarks and tests)."""

    path: Path
    lines: int = 0
    per_kind: dict[str, int] = field(default_factory=dict)
    start_ms: int = 0
    end_ms: int = 0

    def count(self, kind: str) -> None:
        self.per_kind[kind] = self.per_kind.get(kind, 0) + 1
        self.lines += 1


@dataclass
class _Candle:
    open_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    """Whole units of the base asset."""
    trades: int
    first_trade: int

    def row(self, interval_ms: int) -> list[object]:
        """This candle as one row of a REST `/api/v3/klines` body."""
        quote = self.volume * self.close
        return [
            self.open_time,
            _dec(self.open),
            _dec(self.high),
            _dec(self.low),
            _dec(self.close),
            _dec(self.volume * _PRICE_SCALE),
            self.open_time + interval_ms - 1,
            _dec(quote),
            self.trades,
            _dec(self.volume * _PRICE_SCALE // 2),
            _dec(quote // 2),
            "0",
        ]


class _Symbol:
    """One symbol's synthetic market: a tick-size random walk and the messages it produces."""

    def __init__(
        self, name: str, rng: random.Random, tick: int, price: int, *, start_ms: int
    ) -> None:
        self.name = name
        self.lower = name.lower()
        self.rng = rng
        self.tick = tick
        self.mid = price
        self.update_id = rng.randrange(1_000_000, 900_000_000)
        self.bid_q = [rng.randrange(100, 60_000) for _ in range(LEVELS)]
        self.ask_q = [rng.randrange(100, 60_000) for _ in range(LEVELS)]
        self.trade_id = rng.randrange(10_000_000, 90_000_000)
        self.volume_24h = rng.randrange(50_000_000, 90_000_000)
        self.last_event = 0
        self.history = {iv: self._history(iv, n, start_ms) for iv, n in PRELOAD.items()}
        self.candle = self.history["1m"][-1]
        self.pending_final: int | None = None
        """The step at which the last closed minute's final kline will arrive."""

    def _history(self, interval: str, rows: int, now_ms: int) -> list[_Candle]:
        """`rows` candles ending with the one forming at `now_ms`, walked back from the price."""
        step = INTERVAL_MS[interval]
        current = now_ms - now_ms % step
        spread = {"1m": 3, "1h": 20, "1d": 120}[interval] * self.tick
        closes = [self.mid]
        for _ in range(rows - 1):
            closes.append(max(self.tick, closes[-1] + self.rng.randint(-2, 2) * spread))
        closes.reverse()
        candles = []
        for i, close in enumerate(closes):
            open_ = closes[i - 1] if i else close + self.rng.randint(-1, 1) * spread
            candles.append(
                _Candle(
                    open_time=current - (rows - 1 - i) * step,
                    open=open_,
                    high=max(open_, close) + self.rng.randint(0, 2) * self.tick,
                    low=max(self.tick, min(open_, close) - self.rng.randint(0, 2) * self.tick),
                    close=close,
                    volume=self.rng.randrange(1_000, 500_000) * step // 60_000,
                    trades=self.rng.randrange(10, 500),
                    first_trade=0,
                )
            )
        candles[-1].first_trade = self.trade_id
        return candles

    def step(self) -> None:
        """100 ms of market: the price may move a tick, a few levels change size."""
        rng = self.rng
        r = rng.random()
        if r < 0.06:
            self.mid += self.tick
        elif r < 0.12 and self.mid > 30 * self.tick:
            self.mid -= self.tick
        for _ in range(rng.randint(1, 3)):
            side = self.bid_q if rng.random() < 0.5 else self.ask_q
            side[rng.randrange(LEVELS)] = rng.randrange(100, 60_000)
        self.update_id += rng.randint(1, 6)
        c = self.candle
        c.close = self.mid
        c.high = max(c.high, self.mid)
        c.low = min(c.low, self.mid)
        traded = rng.randint(0, 3)
        c.volume += traded * rng.randrange(50, 3_000)
        c.trades += traded
        self.trade_id += traded
        self.volume_24h += traded * 500

    def depth20(self) -> str:
        tick, mid = self.tick, self.mid
        bids = ",".join(
            f'["{_dec(mid - i * tick)}","{q}.00000000"]' for i, q in enumerate(self.bid_q)
        )
        asks = ",".join(
            f'["{_dec(mid + (i + 1) * tick)}","{q}.00000000"]' for i, q in enumerate(self.ask_q)
        )
        return (
            f'{{"stream":"{self.lower}@depth20@100ms","data":{{"lastUpdateId":{self.update_id},'
            f'"bids":[{bids}],"asks":[{asks}]}}}}'
        )

    def ticker(self, event_ms: int) -> str:
        self.last_event = event_ms
        mid, tick = self.mid, self.tick
        first = self.history["1d"][-1].open
        volume = self.volume_24h
        return (
            f'{{"stream":"{self.lower}@ticker","data":{{"e":"24hrTicker","E":{event_ms},'
            f'"s":"{self.name}","p":"{"-" if mid < first else ""}{_dec(abs(mid - first))}",'
            f'"P":"0.000","w":"{_dec(mid)}","x":"{_dec(first)}","c":"{_dec(mid)}",'
            f'"Q":"{self.bid_q[0] % 5000}.00000000","b":"{_dec(mid)}",'
            f'"B":"{self.bid_q[0]}.00000000","a":"{_dec(mid + tick)}",'
            f'"A":"{self.ask_q[0]}.00000000","o":"{_dec(first)}","h":"{_dec(mid + 40 * tick)}",'
            f'"l":"{_dec(max(tick, mid - 40 * tick))}","v":"{volume}.00000000",'
            f'"q":"{_dec(volume * mid)}","O":{event_ms - 86_400_000},"C":{event_ms},'
            f'"F":{self.trade_id - 90_000},"L":{self.trade_id},"n":90001}}}}'
        )

    def kline(self, c: _Candle, event_ms: int, final: bool) -> str:
        return (
            f'{{"stream":"{self.lower}@kline_1m","data":{{"e":"kline","E":{event_ms},'
            f'"s":"{self.name}","k":{{"t":{c.open_time},"T":{c.open_time + 59_999},'
            f'"s":"{self.name}","i":"1m","f":{c.first_trade},"L":{self.trade_id},'
            f'"o":"{_dec(c.open)}","c":"{_dec(c.close)}","h":"{_dec(c.high)}",'
            f'"l":"{_dec(c.low)}","v":"{c.volume}.00000000","n":{c.trades},'
            f'"x":{"true" if final else "false"},"q":"{_dec(c.volume * c.close)}",'
            f'"V":"{c.volume // 2}.00000000","Q":"{_dec(c.volume // 2 * c.close)}","B":"0"}}}}}}'
        )

    def close_minute(self) -> None:
        """Finish the current 1m candle and start the next one."""
        done = self.candle
        self.candle = _Candle(
            open_time=done.open_time + 60_000,
            open=self.mid,
            high=self.mid,
            low=self.mid,
            close=self.mid,
            volume=0,
            trades=0,
            first_trade=self.trade_id + 1,
        )
        self.history["1m"].append(self.candle)

    def klines_body(self, interval: str, rows: int) -> str:
        candles = self.history[interval][-rows:]
        step = INTERVAL_MS[interval]
        return orjson.dumps([c.row(step) for c in candles]).decode()


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...


class _Writer:
    """Capture lines in receive order, to a plain, gzip or zstd file by suffix."""

    def __init__(self, path: Path, info: CaptureInfo) -> None:
        self.path = path
        self.info = info
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._out: _Sink
        if path.suffix == ".gz":
            # No name and no mtime in the header: same arguments, same bytes.
            self._out = gzip.GzipFile(
                filename="", mode="wb", fileobj=self._raw, compresslevel=6, mtime=0
            )
        elif path.suffix == ".zst":
            self._out = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)
        else:
            self._out = self._raw
        self._buffer = io.BytesIO()
        self._last_t = 0

    def write(self, t: int, kind: str, record: dict[str, object]) -> None:
        if t < self._last_t:
            raise AssertionError(f"capture lines out of receive order at t={t}")
        self._last_t = t
        self._buffer.write(orjson.dumps({"t": t, "kind": kind, **record}))
        self._buffer.write(b"\n")
        self.info.count(kind)
        if self._buffer.tell() > 1 << 20:
            self._flush()

    def _flush(self) -> None:
        self._out.write(self._buffer.getvalue())
        self._buffer = io.BytesIO()

    def close(self) -> None:
        self._flush()
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()


def _symbol_params(name: str, seed: int) -> tuple[random.Random, int, int]:
    rng = random.Random(zlib.crc32(f"{seed}:{name}".encode()))
    if name.startswith("HBAR"):
        return rng, 1_000, 7_123_000  # tick 0.00001, price 0.07123
    tick = 10 ** rng.randint(3, 6)
    return rng, tick, tick * rng.randint(2_000, 90_000)


def make_capture(
    path: str | Path,
    seconds: float = 180,
    symbols: Sequence[str] = ("HBARUSDT",),
    faults: Collection[str] = FAULTS,
    seed: int = 0,
    start_ms: int = DEFAULT_START_MS,
) -> CaptureInfo:
    """Write a synthetic capture of `seconds` of live traffic to `path`; see the module doc.

    `faults` is any subset of `FAULTS` (empty: a clean capture). Raises
    `ValueError` for an unknown fault or a non-positive duration.
    """
    unknown = set(faults) - FAULTS
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}: expected some of {sorted(FAULTS)}")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, not {seconds!r}")
    if not symbols:
        raise ValueError("at least one symbol is needed")
    path = Path(path)
    info = CaptureInfo(path=path, start_ms=start_ms)
    markets = [
        _Symbol(s.upper(), *_symbol_params(s.upper(), seed), start_ms=start_ms) for s in symbols
    ]
    writer = _Writer(path, info)
    try:
        _generate(writer, markets, seconds, set(faults), start_ms, random.Random(seed))
    finally:
        writer.close()
    info.end_ms = start_ms + int(seconds * 1000)
    return info


def _ns(ms: int, jitter_us: int = 0) -> int:
    return ms * 1_000_000 + jitter_us * 1000


@dataclass
class _Faults:
    """Where each requested fault goes, and whether it has been placed yet."""

    wanted: set[str]
    duplicate_from: int
    stale_at: int
    malformed_from: int
    outage: tuple[int, int] | None
    stale_text: str = ""
    placed: set[str] = field(default_factory=set)

    def due(self, name: str, step: int, from_step: int) -> bool:
        if name.split("-")[0] in self.wanted and step >= from_step and name not in self.placed:
            self.placed.add(name)
            return True
        return False


def _generate(
    writer: _Writer,
    markets: list[_Symbol],
    seconds: float,
    faults: set[str],
    start_ms: int,
    rng: random.Random,
) -> None:
    # Preload: every symbol's 1m/1h/1d klines, 60 ms apart, before the socket opens.
    t_ms = start_ms
    for m in markets:
        for interval, rows in PRELOAD.items():
            t_ms += 60
            _rest_klines(writer, _ns(t_ms, rng.randrange(1000)), m, interval, rows)
    streams = "/".join(
        f"{m.lower}@{s}" for m in markets for s in ("kline_1m", "depth20@100ms", "ticker")
    )
    url = WS_URL + streams
    conn = 1
    t_ms += 100
    writer.write(_ns(t_ms), "open", {"conn": conn, "url": url})

    first = t_ms // STEP_MS + 1
    last = (start_ms + int(seconds * 1000)) // STEP_MS
    plan = _Faults(
        wanted=set(faults),
        duplicate_from=first + (last - first) // 4,
        stale_at=first + (last - first) // 3,
        malformed_from=first + (last - first) // 2,
        outage=_outage_steps(first, last) if "reconnect" in faults else None,
    )
    recent: list[str] = []  # the last frames delivered, for the reconnect overlap
    delivered_final: dict[str, int] = {m.name: m.history["1m"][-2].open_time for m in markets}

    for step in range(first, last):
        step_ms = step * STEP_MS
        frames = _step_frames(markets, step, step_ms, rng)
        if plan.outage is not None and plan.outage[0] <= step < plan.outage[1]:
            if step == plan.outage[0]:
                close = {"conn": conn, "code": 1006, "reason": "abnormal closure"}
                writer.write(_ns(step_ms), "close", close)
            continue  # the socket is down: whatever the exchange sent is lost
        reopened = plan.outage is not None and step == plan.outage[1]
        if reopened:
            conn += 1
            writer.write(_ns(step_ms), "open", {"conn": conn, "url": url})
            # The new socket starts with frames the old one had delivered.
            for text in recent[-4:]:
                writer.write(_ns(step_ms, 500), "ws", {"conn": conn, "data": text})
            floor = _ns(step_ms, 600)
            frames = [(max(t, floor), tag, i, text) for t, tag, i, text in frames]
        for t, tag, market, text in frames:
            if tag == "depth" and market == 0:
                if step == plan.stale_at:
                    plan.stale_text = text
                if plan.due("malformed", step, plan.malformed_from):
                    text = text[: len(text) // 2]
            writer.write(t, "ws", {"conn": conn, "data": text})
            recent.append(text)
            if tag == "final":
                delivered_final[markets[market].name] = markets[market].history["1m"][-2].open_time
            if tag in ("final", "ticker") and plan.due(
                f"duplicate-{tag}", step, plan.duplicate_from
            ):
                writer.write(t + 3_000, "ws", {"conn": conn, "data": text})
            stale_due = tag == "depth" and market == 0 and plan.stale_text
            if stale_due and plan.due("stale", step, plan.stale_at + 3):
                writer.write(t + 1_000, "ws", {"conn": conn, "data": plan.stale_text})
        del recent[:-8]
        if reopened:
            # After a reconnect the 1m klines since the last final kept are fetched.
            for m in markets:
                since = delivered_final[m.name]
                rows = sum(1 for c in m.history["1m"] if c.open_time >= since)
                query = f"symbol={m.name}&interval=1m&startTime={since}&limit=1000"
                body = m.klines_body("1m", rows)
                _rest(writer, _ns(step_ms, 95_000), f"/api/v3/klines?{query}", body)
        # The hourly check, every 60 s after the preload.
        if (step_ms - start_ms) % 60_000 == 0 and step_ms > start_ms:
            for m in markets:
                _rest_klines(writer, _ns(step_ms, 99_000), m, "1h", 2)


def _step_frames(
    markets: list[_Symbol], step: int, step_ms: int, rng: random.Random
) -> list[tuple[int, str, int, str]]:
    """One step's frames, (receive time, tag, market index, text), in receive order."""
    frames: list[tuple[int, str, int, str]] = []
    for index, m in enumerate(markets):
        m.step()
        if step_ms % 60_000 == 0:
            # A minute closed: its final kline comes 0.2 to 1.8 s late, and the
            # stream says nothing of the new candle before it.
            m.close_minute()
            m.pending_final = step + rng.randint(2, 18)
        if m.pending_final == step:
            m.pending_final = None
            text = m.kline(m.history["1m"][-2], step_ms, final=True)
            frames.append((_ns(step_ms, rng.randrange(5_000)), "final", index, text))
        elif m.pending_final is None and step % 5 == (index + 2) % 5:
            text = m.kline(m.candle, step_ms, final=False)
            frames.append((_ns(step_ms, rng.randrange(90_000)), "kline", index, text))
        frames.append((_ns(step_ms, 10_000 + rng.randrange(80_000)), "depth", index, m.depth20()))
        if step % 10 == index % 10:
            text = m.ticker(step_ms - rng.randrange(1, 40))
            frames.append((_ns(step_ms, rng.randrange(10_000)), "ticker", index, text))
    frames.sort()
    return frames


def _outage_steps(first: int, last: int) -> tuple[int, int] | None:
    """Steps [close, reopen): around a minute boundary in the middle of the run, if any.

    The socket is down from 0.8 s before the boundary to 2.5 s after it, so the
    minute's closing kline (0.2 to 1.8 s late) is always lost, and the REST fetch
    after the reopen sees that candle closed over a second before.
    """
    boundaries = [s for s in range(first + 20, last - 60) if (s * STEP_MS) % 60_000 == 0]
    if boundaries:
        b = boundaries[len(boundaries) // 2]
        return b - 8, b + 25
    middle = (first + last) // 2
    return (middle, middle + 15) if last - first > 60 else None


def _rest(writer: _Writer, t: int, url: str, body: str) -> None:
    writer.write(t, "rest", {"method": "GET", "url": url, "status": 200, "data": body})


def _rest_klines(writer: _Writer, t: int, m: _Symbol, interval: str, rows: int) -> None:
    query = f"symbol={m.name}&interval={interval}&limit={rows}"
    _rest(writer, t, f"/api/v3/klines?{query}", m.klines_body(interval, rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--symbol", action="append", dest="symbols")
    parser.add_argument(
        "--faults", default=",".join(sorted(FAULTS)), help="comma-separated, or 'none'"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faults = set() if args.faults == "none" else {f for f in args.faults.split(",") if f}
    info = make_capture(args.out, args.seconds, args.symbols or ("HBARUSDT",), faults, args.seed)
    print(f"{info.path}: {info.lines} lines {info.per_kind}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
