"""Replay end to end: a hand-built capture with every fault gives exactly DESIGN.md's frames.

The capture (`scenario`) is written line by line below, each line with the
outcome DESIGN.md's semantics give it; the expected frames and the expected
summary are spelled out in full, not computed.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from capture_builders import (
    MS,
    REAL,
    CaptureBuilder,
    depth20,
    kline,
    kline_row,
    needs_real,
    rows_body,
    ticker,
)
from polars.testing import assert_frame_equal

from operators.events import Connected, Disconnected, Gap
from pipeline.capture import LineCounts
from pipeline.cli import sample_capture
from pipeline.clock import ReplayScheduler
from pipeline.config import FeedConfig
from pipeline.errors import CaptureError, UsageError
from pipeline.feed import Feed
from pipeline.replay import replay
from pipeline.stats import RunStats
from sinks.book_frame import BookFrame
from sinks.dump import dump_frames
from sinks.schemas import KLINES, ORDER_BOOK, SCHEMAS, TICKER

SYMBOL = "HBARUSDT"
M0 = 1_700_000_040_000
"""A minute's open time (ms): the candle forming when the capture starts."""
H0 = M0 - M0 % 3_600_000
D0 = M0 - M0 % 86_400_000
MIN = 60_000
CAPACITIES = {"klines_1m": 4, "klines_1h": 2, "klines_1d": 2, "order_book": 12, "ticker": 3}

TICK_A = ("1.25", "3", "1.26", "1", "1.255", "0.5", "1000", "1255")
TICK_B = ("1.27", "2", "1.28", "4", "1.275", "1.5", "1100", "1390")
ETH_TICK = ("2000.1", "1", "2000.2", "2", "2000.15", "0.1", "50", "100000")
BOOK_100 = ([("1.25", "3"), ("1.24", "4"), ("1.23", "5")], [("1.26", "1"), ("1.27", "2")])
BOOK_105 = (
    [("1.25", "2"), ("1.24", "4"), ("1.22", "7")],
    [("1.26", "1.5"), ("1.27", "2"), ("1.29", "9")],
)
BOOK_110 = ([("1.25", "1"), ("1.24", "4")], [("1.26", "3")])


def ns(ms: int, extra_ns: int = 0) -> int:
    return ms * MS + extra_ns


def klines_url(interval: str, extra: str = "") -> str:
    return f"/api/v3/klines?symbol={SYMBOL}&interval={interval}{extra}"


def scenario() -> CaptureBuilder:
    """The capture, in receive order; each comment says what happens to the line."""
    c = CaptureBuilder()
    # REST preload at M0 + 0.4 s: two closed rows (final), the row that closed only
    # 0.4 s before receipt (not final yet: its final comes over the WebSocket) and
    # the forming candle (not final).
    c.rest(ns(M0 + 400, 250_000), klines_url("1m", "&limit=4"), rows_body([
        kline_row(M0 - 3 * MIN, ("1.0", "1.5", "0.5", "1.2", "10")),
        kline_row(M0 - 2 * MIN, ("1.2", "1.6", "1.1", "1.3", "11")),
        kline_row(M0 - MIN, ("1.3", "1.4", "1.2", "1.25", "12")),
        kline_row(M0, ("1.25", "1.3", "1.2", "1.28", "1")),
    ]))  # fmt: skip
    hour, day = 3_600_000, 86_400_000
    c.rest(ns(M0 + 450), klines_url("1h", "&limit=3"), rows_body([
        kline_row(H0 - 2 * hour, ("1.0", "1.1", "0.9", "1.05", "500"), hour),
        kline_row(H0 - hour, ("1.05", "1.2", "1.0", "1.1", "600"), hour),
        kline_row(H0, ("1.1", "1.3", "1.1", "1.28", "50"), hour),
    ]))  # fmt: skip
    c.rest(ns(M0 + 460), klines_url("1d", "&limit=2"), rows_body([
        kline_row(D0 - day, ("0.9", "1.2", "0.8", "1.0", "90000"), day),
        kline_row(D0, ("1.0", "1.3", "1.0", "1.28", "4000"), day),
    ]))  # fmt: skip
    c.open(ns(M0 + 500), 1)
    # The final of M0 - 1 min, 0.9 s late: kept (with its own values).
    c.ws(ns(M0 + 900), kline(SYMBOL, M0 - MIN, ("1.3", "1.45", "1.2", "1.26", "12.5"), True, M0))
    c.ws(ns(M0 + 1000, 700_000), depth20(SYMBOL, 100, *BOOK_100))  # kept
    c.ws(ns(M0 + 1050), ticker(SYMBOL, M0 + 1000, TICK_A))  # kept
    c.ws(ns(M0 + 1100), depth20(SYMBOL, 100, *BOOK_100))  # unchanged book, same id: duplicate
    c.ws(ns(M0 + 1200), depth20(SYMBOL, 105, *BOOK_105))  # kept
    c.ws(ns(M0 + 1300), depth20(SYMBOL, 103, *BOOK_100))  # older id, late: stale
    c.ws(ns(M0 + 1400), depth20(SYMBOL, 110, *BOOK_110))  # kept; snapshot 100 falls out
    forming = kline(SYMBOL, M0, ("1.28", "1.3", "1.2", "1.29", "2"), False, M0 + 2000)
    c.ws(ns(M0 + 2000), forming)  # not final
    c.ws(ns(M0 + 2100), forming)  # the same frame again: duplicate
    c.ws(ns(M0 + 2200), ticker(SYMBOL, M0 + 2000, TICK_B))  # kept
    c.ws(ns(M0 + 2300), ticker(SYMBOL, M0 + 1500, TICK_A))  # older event time: stale
    c.ws(ns(M0 + 2400), ticker(SYMBOL, M0 + 2000, TICK_B))  # same event time: duplicate
    c.ws(ns(M0 + 2500), ticker("ETHUSDT", M0 + 2400, ETH_TICK))  # another symbol: kept
    c.ws(ns(M0 + 2600), '{"stream":"hbarusdt@aggTrade","data":{"e":"aggTrade"}}')  # ignored
    c.ws(ns(M0 + 2700), '{"result":null,"id":1}')  # a control reply: ignored
    c.ws(ns(M0 + 2800), '{"stream":"hbarusdt@depth20@100ms","data":{"lastUp')  # bad JSON
    c.ws(ns(M0 + 2900), kline(SYMBOL, M0, ("1.28", "1.3", "1.2", "1.29", "2"), "true", M0))  # bad
    c.ws(ns(M0 + 3000), depth20(SYMBOL, 111, *BOOK_110).replace('"1.25"', "1.25"))  # bad
    c.ws(ns(M0 + 3100), ticker(SYMBOL, M0 + 3000, TICK_A, drop="E"))  # bad: no event time
    c.raw_line(b"this line is not a capture record")  # a bad capture line
    final_m0 = kline(SYMBOL, M0, ("1.28", "1.35", "1.2", "1.3", "20"), True, M0 + MIN)
    c.ws(ns(M0 + MIN + 800), final_m0)  # kept
    # A reconnect: the new socket starts with frames the old one delivered.
    c.close(ns(M0 + MIN + 1000), 1)
    c.open(ns(M0 + MIN + 1500), 2)
    c.ws(ns(M0 + MIN + 1600), final_m0, conn=2)  # duplicate
    c.ws(ns(M0 + MIN + 1700), depth20(SYMBOL, 110, *BOOK_110), conn=2)  # duplicate
    c.ws(ns(M0 + MIN + 1800), ticker(SYMBOL, M0 + 2000, TICK_B), conn=2)  # duplicate
    # The 1m klines since the last final kept, after the reconnect.
    c.rest(ns(M0 + MIN + 2500), klines_url("1m", f"&startTime={M0}"), rows_body([
        kline_row(M0, ("1.28", "1.35", "1.2", "1.3", "20")),  # as the WebSocket's: duplicate
        kline_row(M0 + MIN, ("1.3", "1.4", "1.28", "1.38", "5")),  # forming: not final
    ]))  # fmt: skip
    # The final of M0 + 1 min never comes: at M0 + 2 min + 10 s the gap detector's
    # timer (on the capture's clock) reports it, then M0 + 2 min's final is kept.
    c.ws(
        ns(M0 + 3 * MIN + 500),
        kline(SYMBOL, M0 + 2 * MIN, ("1.4", "1.5", "1.35", "1.45", "30"), True, M0 + 3 * MIN),
        conn=2,
    )
    # A backfill of the missing minute: kept, inserted in open-time order.
    c.rest(ns(M0 + 3 * MIN + 1000), klines_url("1m", f"&startTime={M0 + MIN}&limit=1"), rows_body(
        [kline_row(M0 + MIN, ("1.3", "1.42", "1.28", "1.4", "25"))]
    ))  # fmt: skip
    # The same open time again with other values: the later one replaces it.
    c.ws(
        ns(M0 + 3 * MIN + 2000),
        kline(SYMBOL, M0 + 2 * MIN, ("1.4", "1.55", "1.35", "1.45", "31"), True, M0 + 3 * MIN),
        conn=2,
    )
    # A final kline older than every row of the full frame: unchanged.
    c.rest(ns(M0 + 3 * MIN + 3000), klines_url("1m", "&limit=1"), rows_body(
        [kline_row(M0 - 3 * MIN, ("9", "9", "9", "9", "9"))]
    ))  # fmt: skip
    c.rest(ns(M0 + 3 * MIN + 4000), klines_url("1m", "&limit=0"), "[]")  # no rows: ignored
    c.rest(ns(M0 + 3 * MIN + 5000), klines_url("1m"), "[[1, 2")  # bad JSON body
    c.rest(ns(M0 + 3 * MIN + 6000), "/api/v3/exchangeInfo", "{}")  # not folded: ignored
    c.rest(ns(M0 + 3 * MIN + 7000), f"/api/v3/depth?symbol={SYMBOL}&limit=1000",
           '{"lastUpdateId":120,"bids":[],"asks":[]}')  # no local book: ignored  # fmt: skip
    c.ws(ns(M0 + 3 * MIN + 8000), '{"stream":"hbarusdt@depth@100ms","data":{"e":"depthUpdate",'
         '"E":1,"s":"HBARUSDT","U":1,"u":2,"b":[],"a":[]}}', conn=2)  # ignored  # fmt: skip
    c.rest(ns(M0 + 3 * MIN + 9000), klines_url("1m"), '{"code":-1003,"msg":"Too many."}', 429)
    return c


# ---------------------------------------------------------------- expected frames


def frame(schema: pl.Schema, rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """A frame of `schema` from rows; timestamps as ms integers, decimals as strings."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    series = []
    for (name, dtype), values in zip(schema.items(), columns, strict=True):
        if dtype == pl.Datetime("ms", "UTC"):
            s = pl.Series(name, values, dtype=pl.Int64).cast(dtype)
        elif dtype == pl.Float64:
            s = pl.Series(name, [float(v) for v in values], dtype=dtype)
        else:
            s = pl.Series(name, values, dtype=dtype)
        series.append(s)
    return pl.DataFrame(series)


def klines(rows: Sequence[tuple[int, str, str, str, str, str]]) -> pl.DataFrame:
    return frame(KLINES, rows)


def book_rows(t_ms: int, update_id: int, book: tuple[list[Any], list[Any]]) -> list[list[Any]]:
    bids, asks = book
    return [[t_ms, update_id, "bid", i, p, q] for i, (p, q) in enumerate(bids)] + [
        [t_ms, update_id, "ask", i, p, q] for i, (p, q) in enumerate(asks)
    ]


def ticker_row(event_ms: int, values: Sequence[str]) -> list[Any]:
    return [event_ms, event_ms, *values]


EXPECTED_HBAR = {
    "klines_1m": klines([
        (M0 - MIN, "1.3", "1.45", "1.2", "1.26", "12.5"),
        (M0, "1.28", "1.35", "1.2", "1.3", "20"),
        (M0 + MIN, "1.3", "1.42", "1.28", "1.4", "25"),
        (M0 + 2 * MIN, "1.4", "1.55", "1.35", "1.45", "31"),
    ]),
    "klines_1h": klines([
        (H0 - 7_200_000, "1.0", "1.1", "0.9", "1.05", "500"),
        (H0 - 3_600_000, "1.05", "1.2", "1.0", "1.1", "600"),
    ]),
    "klines_1d": klines([(D0 - 86_400_000, "0.9", "1.2", "0.8", "1.0", "90000")]),
    "order_book": frame(
        ORDER_BOOK, book_rows(M0 + 1200, 105, BOOK_105) + book_rows(M0 + 1400, 110, BOOK_110)
    ),
    "ticker": frame(TICKER, [ticker_row(M0 + 1000, TICK_A), ticker_row(M0 + 2000, TICK_B)]),
}  # fmt: skip
EXPECTED_ETH = {
    "klines_1m": frame(KLINES, []),
    "klines_1h": frame(KLINES, []),
    "klines_1d": frame(KLINES, []),
    "order_book": frame(ORDER_BOOK, []),
    "ticker": frame(TICKER, [ticker_row(M0 + 2400, ETH_TICK)]),
}

EXPECTED_STREAMS = {
    # label: (msgs, read, kept, duplicate, stale, non-final, unchanged, ignored, bad)
    "HBARUSDT kline_1m": (8, 8, 4, 2, 0, 1, 0, 0, 1),
    "HBARUSDT kline_1m (rest)": (4, 8, 3, 1, 0, 3, 1, 0, 0),
    "HBARUSDT kline_1h (rest)": (1, 3, 2, 0, 0, 1, 0, 0, 0),
    "HBARUSDT kline_1d (rest)": (1, 2, 1, 0, 0, 1, 0, 0, 0),
    "HBARUSDT depth20": (7, 7, 3, 2, 1, 0, 0, 0, 1),
    "HBARUSDT ticker": (6, 6, 2, 2, 1, 0, 0, 0, 1),
    "ETHUSDT ticker": (1, 1, 1, 0, 0, 0, 0, 0, 0),
    "HBARUSDT aggTrade": (1, 1, 0, 0, 0, 0, 0, 1, 0),
    "ws control replies": (1, 1, 0, 0, 0, 0, 0, 1, 0),
    "ws (stream unknown)": (1, 1, 0, 0, 0, 0, 0, 0, 1),
    "rest /api/v3/klines": (2, 2, 0, 0, 0, 0, 0, 1, 1),
    "rest /api/v3/klines status 429": (1, 1, 0, 0, 0, 0, 0, 1, 0),
    "rest /api/v3/exchangeInfo": (1, 1, 0, 0, 0, 0, 0, 1, 0),
    "HBARUSDT depth (rest)": (1, 1, 0, 0, 0, 0, 0, 1, 0),
    "HBARUSDT depth": (1, 1, 0, 0, 0, 0, 0, 1, 0),
}


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    return scenario().write(tmp_path / "scenario.jsonl")


def run(path: Path | Sequence[Path]) -> Feed:
    return replay(path, config=FeedConfig(capacities=CAPACITIES))


def test_frames_are_exactly_what_design_md_defines(capture: Path) -> None:
    feed = run(capture)
    assert feed.symbols == ["HBARUSDT", "ETHUSDT"]
    for symbol, expected in (("HBARUSDT", EXPECTED_HBAR), ("ETHUSDT", EXPECTED_ETH)):
        frames = feed.frames(symbol)
        assert list(frames) == list(expected)
        for buffer, want in expected.items():
            assert_frame_equal(frames[buffer].get(), want, check_exact=True)


def test_summary_accounts_for_every_line(capture: Path) -> None:
    stats = run(capture).stats
    got = {c.label: c.row() for c in stats.streams.values() if c.read}
    assert got == EXPECTED_STREAMS
    assert stats.problems() == []
    assert stats.lines == LineCounts(lines=41, messages=40, bad=1, bad_reasons={"invalid JSON": 1})
    assert stats.messages == 40
    assert stats.bad == 6  # four frames, a REST body, a capture line
    text = stats.render()
    assert "accounted for: all 40 messages" in text
    assert re.search(r"\nHBARUSDT kline_1m \(rest\) +4 +8 +3 +1 +0 +3 +1 +0 +0\n", text)
    assert "bad line x1: invalid JSON" in text


def test_connections_and_gaps_on_the_capture_clock(capture: Path) -> None:
    feed = run(capture)
    assert feed.stats.connections == [
        Connected(1, "wss://stream.binance.us:9443/stream", ns(M0 + 500)),
        Disconnected(1, 1006, "abnormal closure", ns(M0 + MIN + 1000)),
        Connected(2, "wss://stream.binance.us:9443/stream", ns(M0 + MIN + 1500)),
    ]
    # Reported by the staleness timer when the clock passed M0 + 2 min + 10 s
    # (the close of M0 + 1 min's candle plus grace), not when the next kline came.
    assert feed.stats.gaps == [Gap(SYMBOL, "1m", M0 + MIN, M0 + 2 * MIN, ns(M0 + 2 * MIN + 10_000))]


def test_replaying_twice_gives_identical_dumps(capture: Path, tmp_path: Path) -> None:
    first = dump_frames(run(capture).snapshot(), tmp_path / "a")
    second = dump_frames(run(capture).snapshot(), tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [
        p.relative_to(tmp_path / "b") for p in second
    ]
    assert len(first) == 10
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    eth_klines = pl.read_parquet(tmp_path / "a" / "ETHUSDT" / "klines_1m.parquet")
    assert eth_klines.schema == SCHEMAS["klines_1m"]
    assert eth_klines.height == 0
    assert_frame_equal(
        pl.read_parquet(tmp_path / "a" / "HBARUSDT" / "order_book.parquet"),
        EXPECTED_HBAR["order_book"],
    )


def test_paced_replay_sleeps_to_the_recorded_pace_and_folds_the_same(capture: Path) -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    paced = replay(
        capture,
        speed=4.0,
        config=FeedConfig(capacities=CAPACITIES),
        sleep=sleep,
        clock=lambda: now[0],
    )
    # From the first message to the last: 3 min 9 s - 0.4 s, at 4x.
    assert sum(slept) == pytest.approx((3 * 60 + 9 - 0.40025) / 4)
    assert all(s > 0 for s in slept)
    fast = run(capture)
    for buffer, frame_ in fast.frames(SYMBOL).items():
        assert_frame_equal(paced.frames(SYMBOL)[buffer].get(), frame_.get())
    assert paced.stats.gaps == fast.stats.gaps


def test_merged_captures_give_the_frames_of_one(capture: Path, tmp_path: Path) -> None:
    lines = scenario().lines
    # Split by kind: REST bodies in one file, everything else in another (as
    # cryptofeed records them), passed in either order.
    rest = [line for line in lines if b'"kind":"rest"' in line]
    other = [line for line in lines if b'"kind":"rest"' not in line]
    (tmp_path / "rest.jsonl").write_bytes(b"".join(rest))
    (tmp_path / "ws.jsonl").write_bytes(b"".join(other))
    for order in (["ws", "rest"], ["rest", "ws"]):
        feed = run([tmp_path / f"{name}.jsonl" for name in order])
        for buffer, want in EXPECTED_HBAR.items():
            assert_frame_equal(feed.frames(SYMBOL)[buffer].get(), want)
        assert feed.stats.problems() == []


def test_default_capacities_and_buffer_config(capture: Path) -> None:
    feed = replay(capture)
    assert {b: f.capacity for b, f in feed.frames(SYMBOL).items()} == {
        "klines_1m": 60, "klines_1h": 72, "klines_1d": 60, "order_book": 1000, "ticker": 1000,
    }  # fmt: skip
    assert len(feed.frames(SYMBOL)["klines_1m"]) == 6
    assert len(feed.frames(SYMBOL)["order_book"]) == 14


def test_unknown_symbol_and_bad_speed(capture: Path) -> None:
    feed = run(capture)
    with pytest.raises(UsageError, match=r"unknown symbol 'BTCUSDT': symbols seen: HBARUSDT"):
        feed.frames("BTCUSDT")
    assert feed.frames("hbarusdt").keys() == EXPECTED_HBAR.keys()
    for speed in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="speed must be a positive number"):
            replay(capture, speed=speed)


def test_unreadable_capture_raises_before_anything_runs(capture: Path, tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"cannot open capture .*missing\.jsonl"):
        replay([capture, tmp_path / "missing.jsonl"])
    with pytest.raises(CaptureError, match="no capture given"):
        replay([])


def test_events_and_gaps_observables(capture: Path) -> None:
    feed = Feed(FeedConfig(capacities=CAPACITIES), ReplayScheduler(), RunStats(lines=LineCounts()))
    hbar: list[Any] = []
    everything: list[Any] = []
    gaps: list[Gap] = []
    done: list[str] = []
    feed.events("hbarusdt").subscribe(hbar.append, on_completed=lambda: done.append("hbar"))
    feed.events().subscribe(everything.append)
    feed.gaps().subscribe(gaps.append, on_completed=lambda: done.append("gaps"))
    replay(capture, feed=feed)
    # Every event that changed a frame, in order: 2 + 2 + 1 kline preload rows,
    # 3 WebSocket finals, the backfill, the correction, 3 snapshots, 2 tickers.
    assert len(hbar) == 15
    assert len(everything) == 16  # and ETHUSDT's ticker
    assert [type(e).__name__ for e in hbar[:3]] == ["Kline"] * 3
    assert gaps == feed.stats.gaps
    assert done == ["hbar", "gaps"]


@needs_real
@pytest.mark.parametrize(
    ("names", "closed"),
    [
        (["BINANCE_US.ws.1.0", "BINANCE_US.http.0.0", "BINANCE_US.0"], {"OMGBUSD": 1}),
        (["BINANCE.ws.1.0", "BINANCE.http.0.0"], {}),
        (
            ["BINANCE_TR.ws.1.0", "BINANCE_TR.http.0.0"],
            {"BELBTC": 1, "ELFBUSD": 1, "LTCBRL": 1, "XEMUSDT": 1},
        ),
    ],
)
def test_real_recordings_replay_with_every_line_accounted_for(
    names: list[str], closed: dict[str, int]
) -> None:
    paths = [REAL / name for name in names]
    feed = replay(paths)
    stats = feed.stats
    assert stats.problems() == []
    assert stats.lines is not None
    assert stats.lines.lines == sum(len(p.read_bytes().splitlines()) for p in paths)
    assert stats.lines.bad == 0
    assert stats.bad == 0
    assert stats.connections[0].conn == 1
    # The closed 1m klines (x: true) each recording holds.
    kept = {s: len(feed.frames(s)["klines_1m"]) for s in feed.symbols}
    assert {s: n for s, n in kept.items() if n} == closed


# ---------------------------------------------------------------- the bundled sample


@functools.cache
def _make_capture_module() -> Any:
    # benchmarks/ is a folder of scripts, not a package: load the generator by path.
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "make_capture.py"
    spec = importlib.util.spec_from_file_location("make_capture", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_capture", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_bundled_sample_is_what_the_generator_writes(tmp_path: Path) -> None:
    make_capture = _make_capture_module().make_capture
    fresh = tmp_path / "sample_hbarusdt.jsonl.gz"
    info = make_capture(fresh, 180)
    # Compared decompressed: another zlib build may compress the same bytes differently.
    assert gzip.decompress(fresh.read_bytes()) == gzip.decompress(sample_capture().read_bytes())
    assert sample_capture().stat().st_size < 300_000
    assert info.per_kind == {"rest": 6, "open": 2, "ws": 2298, "close": 1}


def test_bundled_sample_replays_full_frames_and_every_fault() -> None:
    feed = replay(sample_capture())
    stats = feed.stats
    assert stats.problems() == []
    assert feed.symbols == ["HBARUSDT"]
    sizes = {b: (len(f), f.capacity) for b, f in feed.frames("HBARUSDT").items()}
    assert sizes["klines_1m"] == (60, 60)
    assert sizes["klines_1h"] == (72, 72)
    assert sizes["klines_1d"] == (60, 60)
    assert sizes["order_book"] == (1000, 1000)
    streams = stats.streams
    assert streams["HBARUSDT depth20"].stale >= 2  # the stale frame, the reconnect overlap
    assert streams["HBARUSDT depth20"].duplicate >= 1
    assert streams["HBARUSDT ticker"].duplicate >= 2  # the duplicate, the overlap
    assert streams["HBARUSDT kline_1m"].duplicate >= 1
    assert streams["ws (stream unknown)"].bad == 1  # the frame cut short
    assert [type(e).__name__ for e in stats.connections] == [
        "Connected",
        "Disconnected",
        "Connected",
    ]
    # The minute lost in the outage comes from the REST fetch after the reconnect.
    klines = feed.frames("HBARUSDT")["klines_1m"].get()
    minutes = klines["timestamp"].dt.epoch("ms").to_list()
    assert minutes == list(range(minutes[0], minutes[0] + 60 * 60_000, 60_000))
    assert stats.gaps == []


def test_make_capture_is_parametric_and_clean_by_request(tmp_path: Path) -> None:
    make_capture = _make_capture_module().make_capture
    path = tmp_path / "two.jsonl.zst"
    info = make_capture(path, 30, symbols=("HBARUSDT", "ETHUSDT"), faults=(), seed=3)
    assert info.per_kind["ws"] > 2 * 30 * 12
    feed = replay(path)
    assert feed.symbols == ["HBARUSDT", "ETHUSDT"]
    assert feed.stats.problems() == []
    assert feed.stats.bad == 0
    dropped = sum(c.duplicate + c.stale + c.unchanged for c in feed.stats.streams.values())
    assert dropped == sum(c.duplicate for c in feed.stats.streams.values() if "(rest)" in c.label)
    with pytest.raises(ValueError, match="unknown faults"):
        make_capture(tmp_path / "x.jsonl", 10, faults=("gremlins",))


class _RecordingBook:
    """A stand-in local book: keeps what the feed hands it (the `book` hook's contract)."""

    def __init__(self, symbol: str, scheduler: Any) -> None:
        self.symbol = symbol
        self.frame = BookFrame(symbol)
        self.events: list[Any] = []

    def push(self, event: Any) -> bool:
        self.events.append(event)
        return type(event).__name__ != "Disconnected"


def test_local_book_hook_gets_diffs_snapshots_and_disconnects(capture: Path) -> None:
    books: dict[str, _RecordingBook] = {}

    def factory(symbol: str, scheduler: Any) -> _RecordingBook:
        books[symbol] = _RecordingBook(symbol, scheduler)
        return books[symbol]

    feed = replay(capture, config=FeedConfig(capacities=CAPACITIES), local_book=factory)
    assert sorted(books) == ["ETHUSDT", "HBARUSDT"]
    kinds = [type(e).__name__ for e in books["HBARUSDT"].events]
    assert kinds == ["Disconnected", "BookSnapshot", "DepthDiff"]
    assert [type(e).__name__ for e in books["ETHUSDT"].events] == ["Disconnected"]
    assert list(feed.frames(SYMBOL)) == [*EXPECTED_HBAR, "book"]
    assert feed.snapshot()[SYMBOL]["book"].schema == SCHEMAS["book"]
    streams = {c.label: c.row() for c in feed.stats.streams.values() if c.read}
    assert streams["HBARUSDT depth (rest)"] == (1, 1, 1, 0, 0, 0, 0, 0, 0)
    assert streams["HBARUSDT depth"] == (1, 1, 1, 0, 0, 0, 0, 0, 0)
    assert feed.stats.problems() == []


@pytest.mark.parametrize(
    ("capacities", "message"),
    [
        ({"klines_1m": 0}, "from 1 to"),
        ({"klines_1m": True}, "from 1 to"),
        ({"candles": 5}, "unknown buffer 'candles'"),
    ],
)
def test_bad_buffer_sizes(capacities: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        FeedConfig(capacities=capacities)
