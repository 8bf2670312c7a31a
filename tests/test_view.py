"""The live view: pure rendering of hand-built states, sampling, and the driver on real runs.

The live (ANSI) mode is checked by replaying what it wrote through a tiny
terminal (`screen`), so the tests see the screen a person would see.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from live_helpers import live_run

import pipeline.view._terminal as view_module
from operators.events import BookSnapshot
from pipeline.cli import main
from pipeline.fake_exchange import Clock, FakeExchange, SyntheticMarket
from pipeline.live import LiveRun
from pipeline.view import (
    Candle,
    LiveView,
    Sampler,
    StreamRow,
    SymbolView,
    TickerView,
    Top,
    ViewState,
    collect,
    render,
    status_line,
    view_mode,
)
from pipeline.view._state import _top as _top  # the book reader, tested on its own
from sinks.rolling_frame import new_frame

SYMBOL = "HBARUSDT"
MIN_0 = 1_732_600_800_000
"""2024-11-26 06:00 UTC, a candle's open time."""
ROOT = Path(__file__).resolve().parents[1]


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


_TOKEN = re.compile(r"(\x1b\[\??\d*[A-Za-z]|\n)")


def screen(text: str) -> list[str]:
    """What a terminal shows after `text`, for the escapes the view uses (F, K, J, ?25)."""
    lines, row, col = [""], 0, 0
    for token in _TOKEN.split(text):
        if not token:
            continue
        if token == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif token.startswith("\x1b["):
            code, letter = token[2:-1], token[-1]
            if code.startswith("?"):
                continue
            if letter == "F":
                row, col = max(0, row - int(code or 1)), 0
            elif letter == "K":
                lines[row] = lines[row][:col]
            elif letter == "J":
                lines[row] = lines[row][:col]
                del lines[row + 1 :]
        else:
            lines[row] = lines[row][:col] + token + lines[row][col + len(token) :]
            col += len(token)
    return lines


# ---------------------------------------------------------------------- pure rendering
def running_state() -> ViewState:
    candles = tuple(
        Candle(MIN_0 + i * 60_000, 0.0712 + i * 1e-4, 0.0715, 0.0710, 0.0713, 12345.6)
        for i in range(3)
    )
    symbol = SymbolView(
        SYMBOL,
        streams=(
            StreamRow("kline_1m", 0.5, 12, 1, 0.3, 12),
            StreamRow("depth20", 10.0, 200, 199, 0.1, 200),
            StreamRow("ticker", 1.0, 20, 20, 2.4, 20),
            StreamRow("rest", 0.0, 3, 192, 75.0, 195),
        ),
        klines_1m=candles,
        last_1h=Candle(MIN_0 - 3_600_000, 0.07, 0.072, 0.069, 0.0711, 1e6),
        last_1d=Candle(MIN_0 - 6 * 3_600_000, 0.07, 0.072, 0.069, 0.0705, 1e8),
        top=Top(
            0.07119,
            1234.0,
            0.07121,
            5678.5,
        ),
        ticker=TickerView(0.0712, 123_456_789.4, 8_765_432.1),
        fill=(("klines_1m", 60, 60), ("order_book", 1000, 1000)),
    )
    return ViewState(
        phase="running",
        elapsed=72.4,
        venue="binanceus",
        remaining=47.6,
        symbols=(symbol,),
        sockets_open=1,
        reconnects=2,
        gaps_seen=3,
        gaps_repaired=2,
        retries=1,
        bad=4,
        rest_in_flight=1,
        used_weight=23,
        weight_limit=1200,
    )


def test_render_a_running_state() -> None:
    lines = render(running_state())
    assert lines == [
        "hbar-data binanceus HBARUSDT: running, 1m12s (stops in 47s)",
        "  stream                  msgs/s     msgs     kept  last msg",
        "  HBARUSDT kline_1m          0.5       12        1       <1s",
        "  HBARUSDT depth20          10.0      200      199       <1s",
        "  HBARUSDT ticker            1.0       20       20        2s",
        "  HBARUSDT rest              0.0        3      192     1m15s  (195 rows)",
        "  reconnects 2, gaps repaired 2/3, retries 1, bad 4, REST in flight 1, weight 23/1200",
        "  HBARUSDT  last 0.0712  24h volume 123,456,789 (quote 8,765,432)",
        "    book  bid 0.07119 x 1,234  ask 0.07121 x 5,678  spread 0.00002 (2.8 bp)",
        "    1m    06:00  o 0.0712  h 0.0715  l 0.071  c 0.0713  v 12,346",
        "          06:01  o 0.0713  h 0.0715  l 0.071  c 0.0713  v 12,346",
        "          06:02  o 0.0714  h 0.0715  l 0.071  c 0.0713  v 12,346",
        "    1h 11-26 05:00 close 0.0711    1d 2024-11-26 close 0.0705",
        "    rows  1m 60/60  order_book 1000/1000",
    ]


def test_render_start_up_progress() -> None:
    state = ViewState(
        phase="preloading",
        elapsed=1.2,
        venue="binanceus",
        symbols=(SymbolView(SYMBOL, (StreamRow("kline_1m", 0.0, 0, 0, None),)),),
        sockets_open=1,
        preload_requests=3,
        preload_answered=2,
        rest_rows=134,
        rest_in_flight=1,
    )
    lines = render(state)
    assert lines[:4] == [
        "hbar-data binanceus HBARUSDT: preloading, 1s",
        "  [x] checking symbols  HBARUSDT",
        "  [x] opening sockets   1 open",
        "  [>] preloading        2 of 3 REST requests answered, 134 rows loaded",
    ]
    # No message yet: no age; the preload's request in flight is the progress line's job.
    assert lines[5] == "  HBARUSDT kline_1m          0.0        0        0         -"
    assert lines[6] == "  reconnects 0, gaps repaired 0/0, retries 0, bad 0"
    assert (
        "[>] opening sockets   0 open"
        in render(ViewState(phase="opening sockets", elapsed=0.0, symbols=(SymbolView(SYMBOL),)))[2]
    )


def test_render_a_one_sided_book_and_an_empty_symbol() -> None:
    state = ViewState(
        phase="running",
        elapsed=5,
        symbols=(SymbolView(SYMBOL, top=Top(None, None, 1.5, 2.0)), SymbolView("BTCUSDT")),
    )
    lines = render(state)
    assert "    book  bid -  ask 1.5 x 2" in lines
    assert not any("BTCUSDT " in line for line in lines[1:])


def test_status_line_is_one_compact_line() -> None:
    line = status_line(running_state())
    assert "\n" not in line
    assert line == (
        "1m12s running | HBARUSDT kline_1m 0.5/s <1s, depth20 10.0/s <1s, ticker 1.0/s 2s, "
        "last 0.0712, bid/ask 0.07119/0.07121 | reconnects 2, gaps repaired 2/3, retries 1, "
        "bad 4, REST in flight 1, weight 23/1200"
    )
    starting = ViewState(
        phase="preloading", elapsed=3, preload_requests=3, preload_answered=1, rest_rows=61
    )
    assert "| 1 of 3 REST requests answered, 61 rows loaded |" in status_line(starting)


def test_sampler_rates_over_the_window_and_ages_to_one_sample() -> None:
    sampler = Sampler(now=10.0)
    sampler.sample({"a": 0, "b": 3}, 10.0)
    sampler.sample({"a": 5, "b": 3}, 10.25)
    sampler.sample({"a": 8, "b": 3}, 10.5)
    sampler.roll(11.0)
    assert sampler.rate("a") == 8.0
    assert sampler.rate("b") == 3.0  # counted from 0: it moved inside the window
    assert sampler.age("a", 12.0) == 1.5
    assert sampler.age("never", 12.0) is None
    sampler.sample({"a": 8, "b": 3}, 11.5)
    sampler.roll(13.0)
    assert sampler.rate("a") == 0.0
    assert sampler.age("a", 13.0) == 2.5


def test_top_of_book_is_the_newest_snapshot_however_deep() -> None:
    frame = new_frame("order_book")
    assert _top(frame) is None
    bids = [[f"{1.0 - i / 100:.2f}", "2"] for i in range(60)]
    asks = [[f"{1.01 + i / 100:.2f}", "3"] for i in range(60)]
    frame.write(BookSnapshot(SYMBOL, 1, [["0.5", "9"]], [["0.6", "9"]], 0, "ws"))
    frame.write(BookSnapshot(SYMBOL, 2, bids, asks, 0, "ws"))  # 120 rows: past the tail read
    assert _top(frame) == Top(1.0, 2.0, 1.01, 3.0)
    frame.write(BookSnapshot(SYMBOL, 3, [], [["1.02", "4"]], 0, "ws"))
    assert _top(frame) == Top(None, None, 1.02, 4.0)


def test_view_mode_follows_the_option_then_the_stream() -> None:
    assert view_mode(False, FakeTTY()) is None
    assert view_mode(True, io.StringIO()) == "live"
    assert view_mode(None, FakeTTY()) == "live"
    assert view_mode(None, io.StringIO()) == "lines"


# ---------------------------------------------------------------------- the driver
def test_screen_helper_models_the_escapes() -> None:
    assert screen("a\nb\n\x1b[2Fc\x1b[K\n\x1b[J") == ["c", ""]


@pytest.mark.asyncio
async def test_logs_scroll_above_the_view_and_the_last_view_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tty = FakeTTY()
    handler = logging.StreamHandler(tty)
    logging.getLogger().addHandler(handler)
    live = LiveRun([SYMBOL])  # never run: the view must cope with a run that has no feed yet
    shown = LiveView(live, "live", stream=tty, interval=0.05, sample=0.01)
    shown.start()
    await asyncio.sleep(0.15)
    logging.getLogger("pipeline.test").warning("something worth a line")
    await asyncio.sleep(0.15)
    live.ready.set()
    await shown.stop()
    text = tty.getvalue()
    assert text.startswith("\x1b[?25l")
    assert text.endswith("\x1b[?25h")
    lines = [line for line in screen(text) if line]
    assert lines[0] == "something worth a line"
    assert lines[1] == "hbar-data binanceus HBARUSDT: stopped, 0s"
    assert sum("hbar-data" in line for line in lines) == 1
    assert shown.error is None
    assert handler.filters == []


@pytest.mark.asyncio
async def test_a_view_that_is_not_ready_erases_itself() -> None:
    tty = FakeTTY()
    shown = LiveView(LiveRun([SYMBOL]), "live", stream=tty, interval=0.05, sample=0.01)
    async with shown:
        await asyncio.sleep(0.1)
    assert "\x1b[" in tty.getvalue()
    assert screen(tty.getvalue()) == [""]


@pytest.mark.asyncio
async def test_a_failing_view_logs_once_and_switches_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(state: ViewState) -> list[str]:
        raise RuntimeError("no room")

    monkeypatch.setattr(view_module, "render", broken)
    tty = FakeTTY()
    shown = LiveView(LiveRun([SYMBOL]), "live", stream=tty, interval=0.01, sample=0.01)
    with caplog.at_level(logging.WARNING, logger="pipeline.view"):
        async with shown:
            await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records] == [
        "live view switched off after an error: RuntimeError('no room')"
    ]
    assert not shown.enabled
    assert tty.getvalue().endswith("\x1b[?25h")


@pytest.mark.asyncio
async def test_collect_follows_a_live_run_against_the_fake_exchange() -> None:
    market = SyntheticMarket([SYMBOL], clock=Clock(speed=30.0))
    exchange = FakeExchange(market)
    live = live_run(await exchange.start(), market, 3.5)
    lines_out = io.StringIO()
    status = LiveView(live, "lines", stream=lines_out, interval=0.5, sample=0.05)
    sampler = Sampler(time.monotonic())
    phases: list[str] = []

    async def watch() -> None:
        while True:
            phase = collect(live, sampler, time.monotonic(), 0.0).phase
            if not phases or phases[-1] != phase:
                phases.append(phase)
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    try:
        async with status:
            await live.run()
    finally:
        watcher.cancel()
        await exchange.stop()
    assert phases[0] in ("starting", "checking symbols")
    assert phases.index("preloading") < phases.index("running")

    now = time.monotonic()
    state = collect(live, sampler, now, now - 3.5)
    assert live.feed is not None
    stats = live.feed.stats.streams
    (symbol,) = state.symbols
    rows = {r.name: r for r in symbol.streams}
    assert list(rows)[:4] == ["kline_1m", "depth20", "ticker", "rest"]
    for name in ("kline_1m", "depth20", "ticker"):
        assert rows[name].messages == stats[f"{SYMBOL} {name}"].messages > 0
        age = rows[name].age
        assert age is not None
        assert age >= 0
    rest_labels = [k for k in stats if k.startswith(SYMBOL) and k.endswith("(rest)")]
    assert rows["rest"].rows == sum(stats[k].read for k in rest_labels) >= 61 + 73 + 61
    assert state.preload_requests == state.preload_answered == 3

    frames = live.feed.frames(SYMBOL)
    tail = frames["klines_1m"].get().tail(3)
    assert [k.open_ms for k in symbol.klines_1m] == tail["timestamp"].dt.epoch("ms").to_list()
    assert [k.close for k in symbol.klines_1m] == tail["close"].to_list()
    assert symbol.last_1h is not None
    assert symbol.last_1h.close == frames["klines_1h"].get()["close"][-1]
    assert symbol.top is not None
    assert symbol.top.bid is not None
    assert symbol.top.ask is not None
    assert symbol.top.bid < symbol.top.ask
    assert symbol.ticker is not None
    assert symbol.ticker.last_price == frames["ticker"].get()["last_price"][-1]
    assert ("klines_1m", 60, 60) in symbol.fill
    # Rendering the real state works and names every part.
    text = "\n".join(render(state))
    for part in ("HBARUSDT kline_1m", "book  bid", "1m    ", "1h ", "1d ", "24h volume"):
        assert part in text

    # The status lines came every interval while it ran, and nothing after the stop.
    written = lines_out.getvalue().splitlines()
    assert len(written) >= 3
    assert all(line.startswith("hbar-data: ") for line in written)
    running = [line for line in written if " running | HBARUSDT kline_1m " in line]
    assert running
    # Rates are of the window that just ended, not the one before.
    assert any(re.search(r" depth20 [1-9]\d*\.\d/s ", line) for line in running)


# ---------------------------------------------------------------------- the command line
def test_cli_prints_status_lines_off_a_terminal_and_ends_them_before_the_summary(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(view_module, "STATUS_INTERVAL", 0.5)
    assert main(["demo", "--duration", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    status = [i for i, line in enumerate(err) if line.startswith("hbar-data: ")]
    summary = next(i for i, line in enumerate(err) if line.startswith("stream "))
    assert status
    assert max(status) < summary
    assert "\x1b[" not in "\n".join(err)


def test_cli_debug_shows_fetches_buffer_updates_and_socket_events(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(view_module, "STATUS_INTERVAL", 0.5)
    assert main(["--debug", "demo", "--duration", "3", "--no-view"]) == 0
    err = capsys.readouterr().err
    # Fetches: every REST request and its answer.
    assert "DEBUG pipeline.rest: GET /api/v3/klines?symbol=HBARUSDT&interval=1h&limit=73 (" in err
    assert re.search(r"GET /api/v3/klines\?symbol=HBARUSDT&interval=1d&limit=61 -> 200, ", err)
    # Buffer updates, with the rows the buffer holds.
    assert re.search(r"DEBUG pipeline.feed: HBARUSDT klines_1h <- Kline\(.*\(\d+ rows\)", err)
    assert "DEBUG pipeline.feed: HBARUSDT order_book <- BookSnapshot(" in err
    # Socket events and the run's steps.
    assert re.search(r"INFO pipeline.ws: ws #\d+ open: ws://127.0.0.1", err)
    assert re.search(r"INFO pipeline.ws: ws #\d+ closed: 1000", err)
    assert "DEBUG pipeline.live: live run: preloading" in err
    # --no-view: logs only.
    assert "hbar-data: " not in err


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_on_a_terminal_the_view_redraws_in_place_and_ctrl_c_ends_it_cleanly() -> None:
    parent, child = pty.openpty()
    os.set_blocking(parent, False)
    env = {**os.environ, "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "demo", "--duration", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child,
        cwd=ROOT,
        env=env,
    )
    os.close(child)
    out = bytearray()

    def read_until(done: float, needle: bytes | None = None) -> None:
        while time.monotonic() < done and (needle is None or needle not in out):
            ready, _, _ = select.select([parent], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(parent, 65536)
                except OSError:  # the child closed its end
                    return
                if not chunk:
                    return
                out.extend(chunk)

    try:
        read_until(time.monotonic() + 30, b": running, ")
        read_until(time.monotonic() + 1.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        read_until(time.monotonic() + 2, b"frames HBARUSDT")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(parent)
    assert proc.returncode == 130
    text = out.decode("utf-8", "replace").replace("\r\n", "\n")
    assert text.count("\x1b[?25l") == 1
    assert text.rfind("\x1b[?25h") > text.rfind("\x1b[?25l")
    assert "\x1b[" in text.split("\x1b[?25h")[0]
    lines = screen(text)
    # One view on the screen however often it was redrawn, stopped, then the summary.
    headers = [i for i, line in enumerate(lines) if line.startswith("hbar-data binanceus")]
    assert len(headers) == 1
    assert lines[headers[0]].startswith("hbar-data binanceus HBARUSDT: stopped, ")
    summary = next(i for i, line in enumerate(lines) if line.startswith("stream "))
    assert summary > headers[0]
    assert any(line.startswith("    book  bid ") for line in lines[headers[0] : summary])
