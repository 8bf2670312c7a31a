"""`dump_frames`: one Parquet file per symbol and buffer, atomic, byte-for-byte repeatable."""

from __future__ import annotations

import os
import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from operators.events import BookSnapshot, Kline, Ticker
from sinks import SCHEMAS, dump_frames, new_frame
from sinks.schemas import BUFFER_NAMES

T0 = 1_732_600_020_000
MINUTE = 60_000


def live_frames() -> dict[str, dict[str, pl.DataFrame]]:
    """Every buffer of two symbols, as a run would end: some full, one empty."""
    frames: dict[str, dict[str, pl.DataFrame]] = {}
    for symbol in ("hbarusdt", "BTCUSDT"):
        buffers = {name: new_frame(name) for name in BUFFER_NAMES}
        for i in range(70):
            open_time = T0 + i * MINUTE
            buffers["klines_1m"].write(
                Kline(symbol.upper(), "1m", open_time, open_time + MINUTE - 1,
                      1.0, 2.0, 0.5, 1.0 + i / 100, 10.0 * i, True, 0, "ws")
            )  # fmt: skip
            buffers["ticker"].write(
                Ticker(symbol.upper(), T0 + i, 0.07, 1.0, 0.08, 2.0, 0.075, 3.0, 4.0, 5.0, 0, "ws")
            )
        for update_id in range(1, 30):
            buffers["order_book"].write(
                BookSnapshot(
                    symbol.upper(), update_id,
                    [[f"0.07{k:02d}", f"{update_id}.{k}"] for k in range(20)],
                    [[f"0.08{k:02d}", f"{k}.25"] for k in range(20)],
                    T0 * 1_000_000 + update_id * 100_000_123, "ws",
                )
            )  # fmt: skip
        # klines_1h and klines_1d stay empty: dumped with their schema.
        frames[symbol] = {name: frame.get() for name, frame in buffers.items()}
    return frames


def test_each_buffer_becomes_symbol_slash_buffer_parquet(tmp_path: Path) -> None:
    frames = live_frames()
    paths = dump_frames(frames, tmp_path)
    assert paths == [
        tmp_path / symbol / f"{buffer}.parquet"
        for symbol in ("HBARUSDT", "BTCUSDT")
        for buffer in BUFFER_NAMES
    ]
    for path in paths:
        original = frames["hbarusdt" if path.parent.name == "HBARUSDT" else "BTCUSDT"]
        assert_frame_equal(pl.read_parquet(path), original[path.stem])
    # Nothing else is left behind: no temporary files.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        p.name for p in paths
    )


def test_an_empty_buffer_is_an_empty_frame_with_its_schema(tmp_path: Path) -> None:
    (path,) = dump_frames({"HBARUSDT": {"klines_1h": new_frame("klines_1h").get()}}, tmp_path)
    read = pl.read_parquet(path)
    assert read.height == 0
    assert read.schema == SCHEMAS["klines_1h"]


def test_types_survive_the_round_trip(tmp_path: Path) -> None:
    frames = live_frames()
    dump_frames(frames, tmp_path)
    book = pl.read_parquet(tmp_path / "HBARUSDT" / "order_book.parquet")
    assert book.schema["side"] == pl.Enum(["bid", "ask"])
    assert book.schema["timestamp"] == pl.Datetime("ms", "UTC")
    assert book.schema["level"] == pl.Int32


def test_the_same_frames_give_the_same_bytes(tmp_path: Path) -> None:
    first = dump_frames(live_frames(), tmp_path / "a")
    # Rebuilt from scratch, and one frame assembled from several chunks.
    again = live_frames()
    ticker = again["BTCUSDT"]["ticker"]
    again["BTCUSDT"]["ticker"] = pl.concat(
        [ticker[:10], ticker[10:500], ticker[500:]], rechunk=False
    )
    assert again["BTCUSDT"]["ticker"].n_chunks() > 1
    second = dump_frames(again, tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a
    # And dumping over existing files replaces them with the same bytes.
    before = [p.read_bytes() for p in first]
    dump_frames(live_frames(), tmp_path / "a")
    assert [p.read_bytes() for p in first] == before


def test_a_failed_write_leaves_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = live_frames()
    (path,) = dump_frames({"HBARUSDT": {"ticker": frames["hbarusdt"]["ticker"]}}, tmp_path)
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        dump_frames({"HBARUSDT": {"ticker": frames["hbarusdt"]["ticker"][:5]}}, tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["ticker.parquet"]


def test_extra_columns_and_other_buffers_are_allowed(tmp_path: Path) -> None:
    klines = new_frame("klines_1m").get().with_columns(trades=pl.lit(0, pl.Int64))
    other = pl.DataFrame({"x": [1, 2]})
    paths = dump_frames({"HBARUSDT": {"klines_1m": klines, "signals": other}}, tmp_path)
    assert_frame_equal(pl.read_parquet(paths[0]), klines)
    assert_frame_equal(pl.read_parquet(paths[1]), other)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ({"../up": {"ticker": None}}, "symbol '../up' cannot name a file"),
        ({"": {"ticker": None}}, "symbol '' cannot name a file"),
        ({"HBARUSDT": {"tick/er": None}}, "buffer 'tick/er' cannot name a file"),
        ({"HBARUSDT": {".hidden": None}}, "buffer '.hidden' cannot name a file"),
        ({"hbarusdt": {}, "HBARUSDT": {}}, "would share HBARUSDT/"),
        ({"HBARUSDT": {"ticker": "klines"}}, "HBARUSDT ticker: columns"),
        ({"HBARUSDT": {"order_book": "order_book_as_utf8"}}, "HBARUSDT order_book: columns"),
    ],
)
def test_bad_names_and_schemas_are_refused_before_anything_is_written(
    tmp_path: Path, frames: dict[str, dict[str, str | None]], message: str
) -> None:
    examples = {
        None: new_frame("ticker").get(),
        "klines": new_frame("klines_1m").get(),
        "order_book_as_utf8": new_frame("order_book").get().cast({"side": pl.String}),
    }
    concrete = {
        symbol: {buffer: examples[kind] for buffer, kind in buffers.items()}
        for symbol, buffers in frames.items()
    }
    # A good symbol first: validation must fail before it is written.
    with pytest.raises(ValueError, match=re.escape(message)):
        dump_frames({"ETHUSDT": {"ticker": examples[None]}, **concrete}, tmp_path)
    assert list(tmp_path.iterdir()) == []
