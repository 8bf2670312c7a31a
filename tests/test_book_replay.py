"""`hbar-data replay` keeps the local book: the real recordings, replayed and dumped,
give for every symbol the book a plain reference rebuilds from the same traffic."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from capture_builders import MS, CaptureBuilder, depth20
from polars.testing import assert_frame_equal
from test_local_book_real import (
    DATA,
    RECORDINGS,
    depth_symbols,
    parse_with_orjson,
    read_recording,
    reference,
)

from pipeline.cli import main
from pipeline.local_book import LocalBooks
from pipeline.replay import replay
from sinks.schemas import BOOK

needs_real = pytest.mark.skipif(
    not (DATA / "BINANCE_US.ws.1.0").is_file(),
    reason=f"real recordings not found in {DATA} (set HBAR_SHARED_DIR to the shared folder)",
)


@needs_real
@pytest.mark.parametrize("recording", RECORDINGS)
def test_replay_dumps_the_reference_book_of_every_symbol(
    recording: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(DATA / f"{recording}.ws.1.0"), str(DATA / f"{recording}.http.0.0")]
    assert main(["replay", *files, "--dump", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    events = parse_with_orjson(read_recording(recording))
    symbols = depth_symbols(events)
    assert len(symbols) >= 3
    for symbol in symbols:
        dumped = pl.read_parquet(tmp_path / symbol / "book.parquet")
        assert dumped.height > 0
        assert_frame_equal(dumped, reference(events, symbol).frame())
        assert f"book {symbol}: in sync at update" in err


@needs_real
def test_the_library_replay_keeps_the_same_books() -> None:
    recording = "BINANCE_US"
    books = LocalBooks()
    feed = replay([DATA / f"{recording}.ws.1.0", DATA / f"{recording}.http.0.0"], local_book=books)
    events = parse_with_orjson(read_recording(recording))
    for symbol in depth_symbols(events):
        book = books.get(symbol)
        assert book is not None
        assert not book.stale
        assert dict(book.resyncs) == {"start": 1}
        assert_frame_equal(feed.frames(symbol)["book"].get(), reference(events, symbol).frame())


@needs_real
def test_without_the_snapshots_the_book_is_dumped_empty(tmp_path: Path) -> None:
    # Diffs alone cannot start a book: it never syncs, and an empty book is what it had.
    assert main(["replay", str(DATA / "BINANCE_US.ws.1.0"), "--dump", str(tmp_path)]) == 0
    dumped = pl.read_parquet(tmp_path / "CRVUSDT" / "book.parquet")
    assert_frame_equal(dumped, pl.DataFrame(schema=BOOK))


def test_no_book_is_dumped_for_a_capture_without_diffs(tmp_path: Path) -> None:
    c = CaptureBuilder()
    c.open(1_700_000_000_000 * MS, 1)
    c.ws(1_700_000_000_100 * MS, depth20("HBARUSDT", 7, [("1.25", "3")], [("1.26", "1")]))
    capture = c.write(tmp_path / "c.jsonl")
    out = tmp_path / "out"
    assert main(["replay", str(capture), "--dump", str(out)]) == 0
    names = sorted(p.name for p in (out / "HBARUSDT").iterdir())
    assert "book.parquet" not in names
    assert "order_book.parquet" in names
