"""The `hbar-data` command line: in-process through `main(argv)`, once as `python -m pipeline`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from capture_builders import MS, CaptureBuilder, depth20, kline, ticker

from pipeline.cli import main, sample_capture

ROOT = Path(__file__).resolve().parents[1]
M0 = 1_700_000_040_000
TICK = ("1.25", "3", "1.26", "1", "1.255", "0.5", "1000", "1255")


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    c = CaptureBuilder()
    c.open(M0 * MS, 1)
    c.ws((M0 + 100) * MS, depth20("HBARUSDT", 7, [("1.25", "3")], [("1.26", "1")]))
    c.ws((M0 + 200) * MS, ticker("HBARUSDT", M0 + 150, TICK))
    c.ws((M0 + 300) * MS, kline("HBARUSDT", M0 - 60_000, ("1", "2", "0.5", "1.5", "10"), True, M0))
    c.ws((M0 + 400) * MS, kline("HBARUSDT", M0 - 120_000, ("1", "2", "0.5", "1.5", "9"), True, M0))
    c.ws((M0 + 500) * MS, '{"stream":"hbarusdt@ticker","data":')  # bad: exit status stays 0
    return c.write(tmp_path / "c.jsonl")


def test_replay_prints_the_summary_and_dumps(
    capture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(capture), "--dump", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "accounted for: all 6 messages" in err
    assert "HBARUSDT depth20" in err
    assert "frames HBARUSDT: klines_1m 2/60, klines_1h 0/72" in err
    assert "dumped 5 frames" in err
    names = sorted(p.name for p in (tmp_path / "out" / "HBARUSDT").iterdir())
    assert names == sorted(
        f"{b}.parquet" for b in ("klines_1m", "klines_1h", "klines_1d", "order_book", "ticker")
    )
    klines = pl.read_parquet(tmp_path / "out" / "HBARUSDT" / "klines_1m.parquet")
    assert klines["volume"].to_list() == [9.0, 10.0]  # sorted by open time
    assert pl.read_parquet(tmp_path / "out" / "HBARUSDT" / "klines_1h.parquet").height == 0


def test_buffer_size_option(capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["replay", str(capture), "--buffer-size", "klines_1m=1", "--dump", str(out)]) == 0
    assert pl.read_parquet(out / "HBARUSDT" / "klines_1m.parquet")["volume"].to_list() == [10.0]


def test_default_is_the_bundled_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay"]) == 0
    err = capsys.readouterr().err
    assert "replaying the bundled sample" in err
    assert "frames HBARUSDT: klines_1m 60/60, klines_1h 72/72, klines_1d 60/60" in err
    assert sample_capture().is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "{tmp}/missing.jsonl"], "cannot open capture"),
        (["replay", "{tmp}/corrupt.jsonl.gz"], "cannot decompress capture"),
        (["replay", "{tmp}"], "cannot open capture"),
        (["replay", "{capture}", "--speed", "0"], "must be a positive factor"),
        (["replay", "{capture}", "--speed", "fast"], "'fast' is not a number"),
        (["replay", "{capture}", "--buffer-size", "klines_1m=many"], "'many' is not an integer"),
        (["replay", "{capture}", "--buffer-size", "candles=5"], "unknown buffer 'candles'"),
        (["replay", "{capture}", "--buffer-size", "ticker=0"], "from 1 to"),
        (["replay", "{capture}", "--buffer-size", "ticker"], "must look like BUFFER=N"),
        (["replay", "{capture}", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["teleport"], "invalid choice: 'teleport'"),
    ],
)
def test_what_the_user_must_fix_exits_2_with_one_line(
    argv: list[str],
    message: str,
    capture: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "corrupt.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"junk" * 9)
    args = [a.format(tmp=tmp_path, capture=capture) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("hbar-data")
    assert message in err[0]


def test_fake_exchange_is_mounted(capsys: pytest.CaptureFixture[str]) -> None:
    # A bad option is refused before any server starts.
    assert main(["fake-exchange", "--port", "99999"]) == 2
    assert "--port must be from 0 to 65535" in capsys.readouterr().err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "replay" in capsys.readouterr().err


def test_debug_logs_buffer_updates(capture: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "replay", str(capture)]) == 0
    err = capsys.readouterr().err
    assert "DEBUG pipeline.feed: HBARUSDT order_book <- BookSnapshot(" in err
    assert "DEBUG pipeline.feed: bad message on ws (stream unknown)" in err


def test_bad_messages_are_counted_not_logged_without_debug(
    capture: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(capture)]) == 0
    err = capsys.readouterr().err
    assert "bad message on" not in err
    row = next(line for line in err.splitlines() if line.startswith("ws (stream unknown)"))
    assert row.split()[-1] == "1"  # the `bad` column


def test_python_dash_m_pipeline(capture: Path, tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", str(capture), "--dump", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    assert "accounted for: all 6 messages" in ok.stderr
    assert (tmp_path / "o" / "HBARUSDT" / "ticker.parquet").is_file()
    missing = subprocess.run(
        [sys.executable, "-m", "pipeline", "replay", str(tmp_path / "nope.jsonl")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("hbar-data: error: cannot open capture")


def test_interrupt_prints_what_was_folded(
    capture: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[float] = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.replay.time.sleep", sleep)
    assert main(["replay", str(capture), "--speed", "1"]) == 130
    err = capsys.readouterr().err
    assert "interrupted after 3 messages" in err
    assert "frames HBARUSDT: klines_1m 0/60" in err
