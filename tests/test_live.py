"""The live main job against the fake exchange on 127.0.0.1, with a sped-up market clock.

The synthetic market is deterministic, so the 1m frame a run ends with can be
checked row for row against the market's own REST rows for the same open times.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from live_helpers import SYMBOL, contiguous, market_clock_ns, market_truth, run_against
from polars.testing import assert_frame_equal

from pipeline.cli import main
from pipeline.errors import UnknownSymbolError
from pipeline.fake_exchange import Clock, FakeExchange, Faults, SyntheticMarket
from pipeline.live import LiveRun
from pipeline.replay import replay
from sinks.schemas import KLINES
from sinks.store import ParquetStore

SPEED = 30.0


@pytest.mark.asyncio
async def test_a_run_fills_every_frame() -> None:
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED))
    live = await run_against(FakeExchange(market), market, 4.0)
    assert live.feed is not None
    frames = {name: f.get() for name, f in live.feed.frames(SYMBOL).items()}
    assert frames["klines_1h"].height == 72
    assert frames["klines_1d"].height == 60
    assert frames["order_book"].height > 0
    assert frames["ticker"].height > 0
    one_minute = frames["klines_1m"]
    assert one_minute.height == 60
    assert one_minute.schema == KLINES
    assert contiguous(one_minute)
    # Only finals: every row equals the closed candle the market reports now.
    assert_frame_equal(one_minute, market_truth(market, one_minute))
    # The candles that closed during the run came over the WebSocket.
    assert live.feed.stats.streams[f"{SYMBOL} kline_1m"].kept >= 1
    assert "accounted for: all" in live.summary()


@pytest.mark.asyncio
async def test_unknown_symbol_fails_before_subscribing() -> None:
    exchange = FakeExchange(SyntheticMarket([SYMBOL]))
    rest_url, ws_url = await exchange.start()
    try:
        live = LiveRun(["NOPEUSDT"], rest_url=rest_url, ws_url=ws_url)
        with pytest.raises(UnknownSymbolError, match="NOPEUSDT"):
            await live.run()
        assert exchange.stats.ws_connections == 0
    finally:
        await exchange.stop()


@pytest.mark.asyncio
async def test_a_dropped_socket_is_reconnected_and_backfilled() -> None:
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED))
    exchange = FakeExchange(market, faults=Faults(drop_after_frames=150, faulty_connections=1))
    # Reconnecting 2.5 s later is 75 market seconds: at least one final 1m kline is missed.
    ws_options: dict[str, object] = {"backoff_base": 2.5, "rand": lambda: 0.999}
    live = await run_against(exchange, market, 6.0, ws_options=ws_options)
    assert exchange.stats.faults, "the fault never happened"
    assert live.ws is not None
    assert live.ws.stats.reconnects == 1
    assert live.counters.reconnect_backfills == 1
    assert live.feed is not None
    # The backfill brought rows beyond the preload's 61.
    assert live.feed.stats.streams[f"{SYMBOL} kline_1m (rest)"].read > 61
    one_minute = live.feed.frames(SYMBOL)["klines_1m"].get()
    assert one_minute.height == 60
    assert contiguous(one_minute)
    assert_frame_equal(one_minute, market_truth(market, one_minute))
    summary = live.summary()
    assert "1 reconnects" in summary
    assert "1 reconnect backfills" in summary


@pytest.mark.asyncio
async def test_a_gap_is_fetched_over_rest() -> None:
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=SPEED))
    # 2.5 s of silence on the only socket: 75 market seconds of frames are lost.
    faults = Faults(silent_after_frames=100, silent_for=2.5)
    live = await run_against(FakeExchange(market, faults=faults), market, 6.0)
    assert live.feed is not None
    assert live.feed.stats.gaps
    assert live.counters.gaps_repaired == len(live.feed.stats.gaps)
    one_minute = live.feed.frames(SYMBOL)["klines_1m"].get()
    assert contiguous(one_minute)
    assert_frame_equal(one_minute, market_truth(market, one_minute))
    assert f"{live.counters.gaps_repaired} gaps repaired" in live.summary()


@pytest.mark.asyncio
async def test_1h_and_1d_are_polled() -> None:
    market = SyntheticMarket([SYMBOL, "BTCUSDT"], clock=Clock(speed=SPEED))
    exchange = FakeExchange(market)
    rest_url, ws_url = await exchange.start()
    live = LiveRun(
        [SYMBOL, "BTCUSDT"],
        rest_url=rest_url,
        ws_url=ws_url,
        clock_ns=market_clock_ns(market),
        poll_periods={"1h": 0.5, "1d": 1.0},
    )

    def answered() -> int:
        return exchange.stats.rest_paths["/api/v3/klines"]

    # Waits on the polls themselves, not a deadline: a loaded machine may take
    # seconds over the preload. Every poll is one klines request on top of the
    # six of the preload.
    run = asyncio.ensure_future(live.run())
    try:
        async with asyncio.timeout(30):
            while not (live.counters.polls >= 4 and answered() == 6 + live.counters.polls):
                await asyncio.sleep(0.02)
    finally:
        live.stop()
        await run
        await exchange.stop()
    assert live.feed is not None
    for symbol in (SYMBOL, "BTCUSDT"):
        frames = live.feed.frames(symbol)
        assert len(frames["klines_1h"]) == 72
        assert len(frames["klines_1d"]) == 60


def test_cli_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "3"]) == 0
    err = capsys.readouterr().err
    assert "frames HBARUSDT: klines_1m 60/60, klines_1h 72/72, klines_1d 60/60" in err
    assert "reconnects" in err


@pytest.mark.asyncio
async def test_stop_ends_a_start_up_that_hangs() -> None:
    # A port nobody listens on: the REST client would retry with backoff for a while.
    live = LiveRun([SYMBOL], rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9")
    asyncio.get_running_loop().call_later(0.3, live.stop)
    async with asyncio.timeout(5):
        await live.run()
    assert not live.ready.is_set()
    assert live.rest is not None
    assert live.rest.stats.connection_errors >= 1


@pytest.fixture
def exchange_in_thread() -> Iterator[tuple[str, str]]:
    """A fake exchange on its own event loop in a thread, for the synchronous CLI."""
    loop = asyncio.new_event_loop()
    exchange = FakeExchange(SyntheticMarket([SYMBOL]))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    urls = asyncio.run_coroutine_threadsafe(exchange.start(), loop).result(timeout=10)
    try:
        yield urls
    finally:
        asyncio.run_coroutine_threadsafe(exchange.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_cli_unknown_symbol_exits_2_with_one_line(
    exchange_in_thread: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    rest_url, ws_url = exchange_in_thread
    argv = ["run", "--symbol", "NOPEUSDT", "--rest-url", rest_url, "--ws-url", ws_url]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "NOPEUSDT" in err


def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    capture, store = tmp_path / "capture.jsonl.gz", tmp_path / "store"
    options = ["--dump", str(tmp_path), "--capture", str(capture), "--store", str(store)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "demo", "--duration", "60", *options],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    assert "fake exchange at" in proc.stderr.readline()
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "frames HBARUSDT: klines_1m 60/60" in err
    assert (tmp_path / SYMBOL / "klines_1h.parquet").exists()
    # The capture was closed whole (a gzip stream cut short would not read) and
    # the store flushed: both hold what the run saw.
    replayed = replay(capture)
    assert replayed.stats.lines is not None
    assert replayed.stats.lines.bad == 0
    dumped = pl.read_parquet(tmp_path / SYMBOL / "klines_1h.parquet")
    assert_frame_equal(replayed.snapshot()[SYMBOL]["klines_1h"], dumped)
    with ParquetStore(store, read_only=True) as reader:
        assert reader.read(SYMBOL, "klines_1h").height == 72
