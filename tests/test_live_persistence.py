"""The live job's capture and store, against the fake exchange with a sped-up market clock.

A capture of a run replays to the run's own frames; a store makes the next run
load what it kept and fetch over REST only what is missing; a store survives
`kill -9` with every file readable.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from live_helpers import MINUTE_MS, SYMBOL, contiguous, market_truth, run_for
from polars.testing import assert_frame_equal

from pipeline.cli import main
from pipeline.fake_exchange import Clock, FakeExchange, SyntheticMarket
from pipeline.live import LiveRun
from pipeline.replay import replay
from sinks.capture_writer import CaptureWriter
from sinks.store import ParquetStore

SPEED = 30.0
KLINES_PATH = "/api/v3/klines"


async def run_once(
    urls: tuple[str, str],
    market: SyntheticMarket,
    seconds: float,
    *,
    capture: CaptureWriter | None = None,
    store: ParquetStore | None = None,
    store_books: bool = False,
) -> LiveRun:
    # Flushed often: a run of a few seconds must reach the store more than once.
    return await run_for(
        urls,
        market,
        seconds,
        capture=capture,
        store=store,
        store_books=store_books,
        flush_interval=0.2,
    )


@pytest.mark.asyncio
async def test_a_capture_replays_to_the_same_frames(tmp_path: Path) -> None:
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED))
    exchange = FakeExchange(market)
    urls = await exchange.start()
    path = tmp_path / "run.jsonl.zst"
    capture = CaptureWriter(path)
    try:
        live = await run_once(urls, market, 4.0, capture=capture)
    finally:
        await exchange.stop()
    assert capture.closed
    assert live.feed is not None
    # Every REST response and WebSocket message (opens and closes included) was recorded.
    assert live.rest is not None
    assert live.ws is not None
    assert capture.messages >= live.rest.stats.responses + live.ws.stats.frames
    assert capture.messages == live.feed.stats.messages
    replayed = replay(path)
    assert replayed.stats.messages == live.feed.stats.messages
    live_frames = live.feed.snapshot()[SYMBOL]
    replayed_frames = replayed.snapshot()[SYMBOL]
    # At least one candle closed during the run, so the WebSocket part is exercised.
    assert live.feed.stats.streams[f"{SYMBOL} kline_1m"].kept >= 1
    for buffer in ("klines_1m", "klines_1h", "klines_1d", "order_book", "ticker"):
        assert live_frames[buffer].height > 0, buffer
        assert_frame_equal(replayed_frames[buffer], live_frames[buffer])


@pytest.mark.asyncio
async def test_a_store_is_loaded_and_only_the_missing_range_fetched(tmp_path: Path) -> None:
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED))
    exchange = FakeExchange(market)
    urls = await exchange.start()
    root = tmp_path / "store"
    try:
        first = await run_once(urls, market, 3.0, store=ParquetStore(root))
        assert first.counters.store_loaded == 0
        assert first.counters.store_rows >= 60 + 72 + 60
        with ParquetStore(root, read_only=True) as reader:
            stored_1m = reader.read(SYMBOL, "klines_1m")
            assert reader.read(SYMBOL, "klines_1h").height == 72
            assert reader.read(SYMBOL, "klines_1d").height == 60
            # Books and tickers only with store_books.
            assert reader.read(SYMBOL, "ticker").is_empty()
        assert contiguous(stored_1m)
        assert_frame_equal(stored_1m, market_truth(market, stored_1m))

        # Five market minutes pass while nothing runs.
        market.clock.advance(5 * MINUTE_MS)
        requests_before = exchange.stats.rest_paths[KLINES_PATH]
        second = await run_once(urls, market, 2.0, store=ParquetStore(root), store_books=True)
    finally:
        await exchange.stop()
    assert second.feed is not None
    # The frames were filled from the store: 60 + 72 + 60 rows (the capacities).
    assert second.counters.store_loaded == 60 + 72 + 60
    # One preload request per interval, and only the rows since the stored ones.
    assert exchange.stats.rest_paths[KLINES_PATH] - requests_before == 3
    rest_1m = second.feed.stats.streams[f"{SYMBOL} kline_1m (rest)"].read
    assert 5 <= rest_1m <= 10, rest_1m  # a fresh preload reads 61
    assert second.feed.stats.streams[f"{SYMBOL} kline_1h (rest)"].read <= 2
    assert second.feed.stats.streams[f"{SYMBOL} kline_1d (rest)"].read <= 2
    frames = second.feed.snapshot()[SYMBOL]
    one_minute = frames["klines_1m"]
    assert one_minute.height == 60
    assert contiguous(one_minute)
    assert_frame_equal(one_minute, market_truth(market, one_minute))
    assert frames["klines_1h"].height == 72
    assert frames["klines_1d"].height == 60
    # The store holds both runs' candles without a hole, and the books of the second.
    with ParquetStore(root, read_only=True) as reader:
        stored_1m = reader.read(SYMBOL, "klines_1m")
        assert reader.read(SYMBOL, "ticker").height > 0
        assert reader.read(SYMBOL, "order_book").height > 0
    assert contiguous(stored_1m)
    assert stored_1m.height > 60 + 5
    assert_frame_equal(stored_1m, market_truth(market, stored_1m))
    assert_frame_equal(stored_1m.tail(60), one_minute)
    assert "store: 192 klines loaded" in second.summary()


def test_kill_9_leaves_no_torn_store_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    options = ["--store", str(root), "--store-books", "--capture", str(tmp_path / "c.jsonl")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "demo", "--duration", "60", *options],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "fake exchange at" in proc.stderr.readline()
        # The demo's market runs at 20x: a 1m candle closes every 3 s.
        time.sleep(4.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    files = sorted(root.glob("symbol=*/buffer=*/date=*/*.parquet"))
    assert any("buffer=klines_1m" in str(f) for f in files)
    for file in files:
        pl.read_parquet(file)
    # The store opens again (the dead process's lock is gone) and reads whole.
    with ParquetStore(root) as store:
        assert store.read(SYMBOL, "klines_1m").height >= 60
    # The capture replays up to the last flush (a torn last line counts as one bad line).
    assert replay(tmp_path / "c.jsonl").stats.messages > 100


@pytest.mark.asyncio
async def test_kill_9_then_restart_keeps_every_closed_kline_once(tmp_path: Path) -> None:
    """After kill -9 and a restart, the store holds what a run that never stopped would."""
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED))
    exchange = FakeExchange(market)
    urls = await exchange.start()
    root = tmp_path / "store"
    clock = market.clock
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("live_child.py")),
        *urls,
        str(root),
        # The market clock's origin, so the child stamps receive times on it too.
        repr(clock.now_ms()),
        repr(time.monotonic()),
        repr(SPEED),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            assert await child.stdout.readline() == b"ready\n"
        # A 1m candle closes every 2 s at 30x: let a few reach the store, then kill.
        first_close = clock.now_ms() // MINUTE_MS * MINUTE_MS + MINUTE_MS
        while clock.now_ms() < first_close + 3 * MINUTE_MS + 500:
            await asyncio.sleep(0.05)
    finally:
        child.kill()
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    try:
        for file in root.glob("symbol=*/buffer=*/date=*/*.parquet"):
            pl.read_parquet(file)  # every file whole
        with ParquetStore(root, read_only=True) as reader:
            killed_at = reader.read(SYMBOL, "klines_1m")
        assert killed_at.height > 60
        # Ten market minutes pass while nothing runs; then the restart backfills them.
        market.clock.advance(10 * MINUTE_MS)
        restarted = await run_once(urls, market, 2.0, store=ParquetStore(root))
    finally:
        await exchange.stop()
    assert restarted.feed is not None
    with ParquetStore(root, read_only=True) as reader:
        stored = reader.read(SYMBOL, "klines_1m")
    # Every closed candle from the first stored one to the last closed one, once,
    # as the market made them: what a run that never stopped would have stored.
    last_closed = market.clock.now_ms() // MINUTE_MS * MINUTE_MS - MINUTE_MS
    newest = stored["timestamp"].dt.epoch("ms").max()
    assert isinstance(newest, int)
    assert newest >= last_closed - MINUTE_MS
    assert stored["timestamp"].is_unique().all()
    assert contiguous(stored)
    assert stored.height >= killed_at.height + 10
    assert_frame_equal(stored, market_truth(market, stored))
    assert_frame_equal(stored.tail(60), restarted.feed.snapshot()[SYMBOL]["klines_1m"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--store-books"], "--store-books needs --store DIR"),
        (["run", "--capture-rotate-mb", "5"], "--capture-rotate-mb needs --capture FILE"),
        (["run", "--capture", "x.jsonl", "--capture-rotate-mb", "0"], "positive number"),
    ],
)
def test_cli_persistence_options_are_checked(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_store_in_use_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ParquetStore(tmp_path):
        assert main(["demo", "--duration", "1", "--store", str(tmp_path)]) == 2
    assert "being written by another process" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_stored_candles_not_closed_by_this_clock_are_not_loaded(tmp_path: Path) -> None:
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED))
    future = (market.clock.now_ms() // MINUTE_MS + 10) * MINUTE_MS
    with ParquetStore(tmp_path) as store:
        row = {"timestamp": [future], "open": [1.0], "high": [1.0], "low": [1.0]}
        row |= {"close": [1.0], "volume": [1.0]}
        frame = pl.DataFrame(row).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))
        store.append(SYMBOL, "klines_1m", frame)
    exchange = FakeExchange(market)
    urls = await exchange.start()
    try:
        live = await run_once(urls, market, 1.5, store=ParquetStore(tmp_path))
    finally:
        await exchange.stop()
    assert live.counters.store_loaded == 0
    assert live.feed is not None
    one_minute = live.feed.frames(SYMBOL)["klines_1m"].get()
    assert one_minute.height == 60
    assert_frame_equal(one_minute, market_truth(market, one_minute))
