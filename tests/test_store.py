"""`ParquetStore`: hive-partitioned Parquet, atomic files, upserts, reads back by any tool."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pipeline.errors import UsageError
from sinks.schemas import KLINES, ORDER_BOOK, TICKER
from sinks.store import ParquetStore

REPO = Path(__file__).resolve().parents[1]
UTC = dt.UTC
T0 = dt.datetime(2026, 11, 26, 23, 57, tzinfo=UTC)
"""Three minutes before midnight: a few klines cross into the next day."""
MINUTE = dt.timedelta(minutes=1)
KLINES_1M = "klines_1m"


def klines(first: int, closes: Sequence[float], step: dt.timedelta = MINUTE) -> pl.DataFrame:
    """Klines opening at `T0 + (first + i) * step`, with close `closes[i]`."""
    stamps = [T0 + (first + i) * step for i in range(len(closes))]
    n = len(closes)
    return pl.DataFrame(
        {
            "timestamp": stamps,
            "open": [1.0] * n,
            "high": [2.0] * n,
            "low": [0.5] * n,
            "close": list(closes),
            "volume": [10.0] * n,
        },
        schema=KLINES,
    )


def snapshot(update_id: int, at: dt.datetime, levels: int = 2) -> pl.DataFrame:
    """An order-book snapshot as the frame holds it: bids by level, then asks by level."""
    sides = ["bid"] * levels + ["ask"] * levels
    return pl.DataFrame(
        {
            "timestamp": [at] * (2 * levels),
            "update_id": [update_id] * (2 * levels),
            "side": sides,
            "level": list(range(levels)) * 2,
            "price": [0.07 - k / 1000 for k in range(levels)]
            + [0.08 + k / 1000 for k in range(levels)],
            "quantity": [float(update_id)] * (2 * levels),
        },
        schema=ORDER_BOOK,
    )


def tickers(event_ids: Sequence[int], last: float = 0.075) -> pl.DataFrame:
    n = len(event_ids)
    return pl.DataFrame(
        {
            "timestamp": [dt.datetime.fromtimestamp(e / 1000, UTC) for e in event_ids],
            "event_id": list(event_ids),
            "best_bid": [0.07] * n,
            "bid_qty": [1.0] * n,
            "best_ask": [0.08] * n,
            "ask_qty": [2.0] * n,
            "last_price": [last] * n,
            "last_qty": [3.0] * n,
            "volume_24h": [4.0] * n,
            "quote_volume_24h": [5.0] * n,
        },
        schema=TICKER,
    )


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".lock")


# ---------------------------------------------------------------- layout and round trips


def test_klines_round_trip_partitioned_by_symbol_buffer_and_day(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        for i in range(6):
            store.append("hbarusdt", KLINES_1M, klines(i, [float(i)]))
        assert_frame_equal(store.read("HBARUSDT", KLINES_1M), klines(0, [0, 1, 2, 3, 4, 5]))
    prefix = tmp_path / "symbol=HBARUSDT" / "buffer=klines_1m"
    # The first write of the 27th ended the 26th: its files were merged into one.
    assert [p.relative_to(prefix).as_posix() for p in parquet_files(tmp_path)] == [
        "date=2026-11-26/part-00000001-00000003.parquet",
        "date=2026-11-27/part-00000001.parquet",
        "date=2026-11-27/part-00000002.parquet",
        "date=2026-11-27/part-00000003.parquet",
    ]
    # A file holds the buffer's columns only: the rest is in the path.
    assert pl.read_parquet(parquet_files(tmp_path)[0]).schema == KLINES
    with ParquetStore(tmp_path, read_only=True) as again:
        assert_frame_equal(again.read("HBARUSDT", KLINES_1M), klines(0, [0, 1, 2, 3, 4, 5]))


def test_a_frame_spanning_midnight_is_split_by_utc_day(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", KLINES_1M, klines(0, [0, 1, 2, 3, 4]))
        days = sorted(p.name for p in (tmp_path / "symbol=HBARUSDT/buffer=klines_1m").iterdir())
        assert days == ["date=2026-11-26", "date=2026-11-27"]
        late = pl.read_parquet(tmp_path / "symbol=HBARUSDT/buffer=klines_1m/date=2026-11-27")
        assert late["close"].to_list() == [3.0, 4.0]


def test_read_with_plain_polars_and_duckdb(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        for symbol in ("HBARUSDT", "BTCUSDT"):
            for i in range(5):
                store.append(symbol, KLINES_1M, klines(i, [float(i)]))
        store.append("HBARUSDT", KLINES_1M, klines(1, [-1.0]))  # an upsert: no duplicate after
    expected = klines(0, [0, -1, 2, 3, 4])

    scanned = pl.scan_parquet(tmp_path, hive_partitioning=True).collect()
    assert scanned.schema["symbol"] == pl.String
    assert scanned.schema["date"] == pl.Date
    hbar = scanned.filter(pl.col("symbol") == "HBARUSDT").sort("timestamp")
    assert_frame_equal(hbar.select(KLINES.names()), expected)
    assert hbar["date"].to_list() == [dt.date(2026, 11, 26)] * 3 + [dt.date(2026, 11, 27)] * 2
    assert set(hbar["buffer"]) == {KLINES_1M}

    glob = f"{tmp_path}/*/buffer=klines_1m/*/*.parquet"
    globbed = pl.scan_parquet(glob, hive_partitioning=True).collect()
    assert globbed.height == 10

    rows = duckdb.execute(
        "select symbol, buffer, date, timestamp, close"
        f" from read_parquet('{tmp_path}/**/*.parquet', hive_partitioning=true)"
        " where symbol = 'HBARUSDT' order by timestamp"
    ).fetchall()
    assert [r[4] for r in rows] == [0.0, -1.0, 2.0, 3.0, 4.0]
    assert rows[0][:3] == ("HBARUSDT", KLINES_1M, dt.date(2026, 11, 26))
    assert rows[0][3] == T0  # timestamp with time zone, the same instant


def test_several_buffers_read_with_duckdb_union_and_polars_globs(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", KLINES_1M, klines(0, [1.0]))
        store.append("HBARUSDT", "order_book", snapshot(7, T0))
        store.append("HBARUSDT", "ticker", tickers([1_764_201_420_000]))
    book = pl.scan_parquet(f"{tmp_path}/*/buffer=order_book/*/*.parquet", hive_partitioning=True)
    assert_frame_equal(book.collect().select(ORDER_BOOK.names()), snapshot(7, T0))
    counts = duckdb.execute(
        f"select buffer, count(*) from read_parquet('{tmp_path}/**/*.parquet',"
        " hive_partitioning=true, union_by_name=true) group by buffer order by buffer"
    ).fetchall()
    assert counts == [(KLINES_1M, 1), ("order_book", 4), ("ticker", 1)]


# ---------------------------------------------------------------- upserts and dedupe


def test_a_later_write_of_an_open_time_replaces_the_row(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", KLINES_1M, klines(0, [0, 1, 2]))
        store.append("HBARUSDT", KLINES_1M, klines(1, [10]))
        assert_frame_equal(store.read("HBARUSDT", KLINES_1M), klines(0, [0, 10, 2]))
    # The file was rewritten with the new row: no plain reader sees the replaced one.
    day = tmp_path / "symbol=HBARUSDT/buffer=klines_1m/date=2026-11-26"
    assert [p.name for p in day.iterdir()] == ["part-00000001.parquet"]
    assert pl.read_parquet(day)["close"].to_list() == [0.0, 10.0, 2.0]


def test_duplicates_inside_one_frame_keep_the_last(tmp_path: Path) -> None:
    frame = pl.concat([klines(0, [1, 2]), klines(0, [3])])
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", KLINES_1M, frame)
        assert_frame_equal(store.read("HBARUSDT", KLINES_1M), klines(0, [3, 2]))


def test_upserts_and_last_timestamp_survive_a_restart(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        assert store.last_timestamp("HBARUSDT", KLINES_1M) is None
        for i in range(4):
            store.append("HBARUSDT", KLINES_1M, klines(i, [float(i)]))
    with ParquetStore(tmp_path) as store:
        assert store.last_timestamp("HBARUSDT", KLINES_1M) == T0 + 3 * MINUTE
        # A REST backfill after the restart repeats the last rows stored and adds new ones.
        store.append("HBARUSDT", KLINES_1M, klines(2, [20, 30, 40, 50]))
        assert store.last_timestamp("HBARUSDT", KLINES_1M) == T0 + 5 * MINUTE
    with ParquetStore(tmp_path, read_only=True) as store:
        assert_frame_equal(store.read("HBARUSDT", KLINES_1M), klines(0, [0, 1, 20, 30, 40, 50]))
    scanned = pl.scan_parquet(tmp_path, hive_partitioning=True).collect()
    assert scanned["timestamp"].is_unique().all()


def test_a_run_of_files_of_one_size_is_compacted(tmp_path: Path) -> None:
    day = tmp_path / "symbol=HBARUSDT/buffer=klines_1h/date=2026-11-26"
    step = dt.timedelta(seconds=1)
    with ParquetStore(tmp_path, compact_parts=3) as store:
        for i in range(11):
            store.append("HBARUSDT", "klines_1h", klines(i, [float(i)], step))
            assert len(list(day.iterdir())) <= 4  # at most 2 of each size class: 1 and 3
        # Three single writes make one file of three; three of those make one of nine.
        assert sorted(p.name for p in day.iterdir()) == [
            "part-00000001-00000009.parquet",
            "part-00000010.parquet",
            "part-00000011.parquet",
        ]
        assert_frame_equal(store.read("HBARUSDT", "klines_1h"), klines(0, list(range(11)), step))
        store.compact()
        assert [p.name for p in day.iterdir()] == ["part-00000001-00000011.parquet"]
        assert_frame_equal(store.read("HBARUSDT", "klines_1h"), klines(0, list(range(11)), step))
        assert_frame_equal(pl.read_parquet(day), klines(0, list(range(11)), step))


def test_an_upsert_rewrites_only_the_newest_files_it_reaches(tmp_path: Path) -> None:
    day = tmp_path / "symbol=HBARUSDT/buffer=klines_1h/date=2026-11-26"
    step = dt.timedelta(seconds=1)
    with ParquetStore(tmp_path, compact_parts=3) as store:
        for i in range(5):
            store.append("HBARUSDT", "klines_1h", klines(i, [float(i)], step))
        assert sorted(p.name for p in day.iterdir()) == [
            "part-00000001-00000003.parquet",
            "part-00000004.parquet",
            "part-00000005.parquet",
        ]
        store.append("HBARUSDT", "klines_1h", klines(3, [30.0, 40.0, 50.0], step))
        assert sorted(p.name for p in day.iterdir()) == [
            "part-00000001-00000003.parquet",
            "part-00000004-00000005.parquet",
        ]
        expected = klines(0, [0, 1, 2, 30, 40, 50], step)
        assert_frame_equal(store.read("HBARUSDT", "klines_1h"), expected)
        store.append("HBARUSDT", "klines_1h", klines(1, [10.0], step))
        assert [p.name for p in day.iterdir()] == ["part-00000001-00000005.parquet"]
        assert_frame_equal(pl.read_parquet(day), klines(0, [0, 10, 2, 30, 40, 50], step))


stamps = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 4)), min_size=1, max_size=14)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=stamps, k=st.integers(2, 3))
def test_any_appends_read_back_as_the_model_says(
    tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[int, int]], k: int
) -> None:
    """Appends of runs of hourly klines in any order: later wins, no duplicate on disk."""
    root = tmp_path_factory.mktemp("store")
    hour = dt.timedelta(hours=1)
    model: dict[int, float] = {}
    with ParquetStore(root, compact_parts=k) as store:
        for n, (first, count) in enumerate(writes):
            closes = [float(n * 100 + j) for j in range(count)]
            store.append("HBARUSDT", "klines_1h", klines(first, closes, hour))
            model.update({first + j: c for j, c in enumerate(closes)})
        expected = klines(0, [model[h] for h in sorted(model)], hour).with_columns(
            timestamp=pl.Series([T0 + h * hour for h in sorted(model)], dtype=KLINES["timestamp"])
        )
        assert_frame_equal(store.read("HBARUSDT", "klines_1h"), expected)
        assert_frame_equal(store.latest("HBARUSDT", "klines_1h", 3), expected.tail(3))
    plain = pl.scan_parquet(root, hive_partitioning=True).collect()
    assert_frame_equal(plain.select(KLINES.names()).sort("timestamp"), expected)
    with ParquetStore(root, read_only=True) as again:
        assert_frame_equal(again.read("HBARUSDT", "klines_1h"), expected)


def test_symbols_and_buffers_are_kept_apart(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", KLINES_1M, klines(0, [1.0]))
        store.append("BTCUSDT", KLINES_1M, klines(0, [2.0]))
        store.append("HBARUSDT", "klines_1d", klines(0, [3.0]))
        assert store.read("HBARUSDT", KLINES_1M)["close"].to_list() == [1.0]
        assert store.read("btcusdt", KLINES_1M)["close"].to_list() == [2.0]
        assert store.read("HBARUSDT", "klines_1d")["close"].to_list() == [3.0]
        assert_frame_equal(store.read("ETHUSDT", KLINES_1M), pl.DataFrame(schema=KLINES))


# ---------------------------------------------------------------- latest, last_timestamp, read


def test_latest_gives_the_newest_rows_sorted_across_days(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        for i in range(7):
            store.append("HBARUSDT", KLINES_1M, klines(i, [float(i)]))
        assert_frame_equal(store.latest("HBARUSDT", KLINES_1M, 4), klines(3, [3, 4, 5, 6]))
        assert_frame_equal(store.latest("HBARUSDT", KLINES_1M, 100), klines(0, list(range(7))))
        assert_frame_equal(store.latest("HBARUSDT", KLINES_1M, 0), pl.DataFrame(schema=KLINES))
        assert_frame_equal(store.latest("NOPEUSDT", KLINES_1M, 3), pl.DataFrame(schema=KLINES))


def test_read_between_start_inclusive_and_end_exclusive(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", KLINES_1M, klines(0, [0, 1, 2, 3, 4, 5]))
        got = store.read("HBARUSDT", KLINES_1M, start=T0 + 2 * MINUTE, end=T0 + 4 * MINUTE)
        assert_frame_equal(got, klines(2, [2, 3]))
        assert store.read("HBARUSDT", KLINES_1M, start=T0 + 4 * MINUTE).height == 2
        assert store.read("HBARUSDT", KLINES_1M, end=T0 + MINUTE).height == 1
        # Another timezone names the same instants.
        tokyo = dt.timezone(dt.timedelta(hours=9))
        local = store.read("HBARUSDT", KLINES_1M, start=(T0 + 3 * MINUTE).astimezone(tokyo))
        assert local.height == 3
        with pytest.raises(ValueError, match="timezone-aware"):
            store.read("HBARUSDT", KLINES_1M, start=dt.datetime(2026, 11, 26))


# ---------------------------------------------------------------- batched buffers


def test_order_book_rows_are_batched_then_written(tmp_path: Path) -> None:
    at = T0 + dt.timedelta(seconds=1)
    with ParquetStore(tmp_path, batch_rows=10) as store:
        store.append("HBARUSDT", "order_book", snapshot(1, T0))
        store.append("HBARUSDT", "order_book", snapshot(2, at))
        assert parquet_files(tmp_path) == []
        # Reads see the batch.
        assert store.read("HBARUSDT", "order_book").height == 8
        assert store.last_timestamp("HBARUSDT", "order_book") == at
        store.append("HBARUSDT", "order_book", snapshot(3, at))  # 12 rows >= 10: written
        assert len(parquet_files(tmp_path)) == 1
        store.append("HBARUSDT", "order_book", snapshot(4, at))
    # close() wrote the rest.
    with ParquetStore(tmp_path, read_only=True) as store:
        book = store.read("HBARUSDT", "order_book")
    expected = pl.concat([snapshot(1, T0), snapshot(2, at), snapshot(3, at), snapshot(4, at)])
    assert_frame_equal(book, expected)


def test_a_batch_is_written_when_it_spans_the_interval(tmp_path: Path) -> None:
    with ParquetStore(tmp_path, batch_interval=60.0) as store:
        for second in range(0, 61, 10):
            store.append("HBARUSDT", "ticker", tickers([1_764_201_420_000 + second * 1000]))
            assert len(parquet_files(tmp_path)) == (1 if second == 60 else 0)


def test_order_book_rows_keep_snapshot_order_and_upsert_by_update_id(tmp_path: Path) -> None:
    at = T0 + dt.timedelta(seconds=1)
    shuffled = pl.concat([snapshot(9, at), snapshot(8, T0)]).reverse()
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", "order_book", shuffled)
        store.flush()
        store.append(
            "HBARUSDT", "order_book", snapshot(9, at, levels=2).with_columns(quantity=pl.lit(0.5))
        )
        got = store.read("HBARUSDT", "order_book")
        expected = pl.concat([snapshot(8, T0), snapshot(9, at).with_columns(quantity=pl.lit(0.5))])
        assert_frame_equal(got, expected)
        assert_frame_equal(store.latest("HBARUSDT", "order_book", 4), expected.tail(4))
        store.flush()
        assert_frame_equal(store.read("HBARUSDT", "order_book"), expected)


def test_tickers_upsert_by_event_id(tmp_path: Path) -> None:
    e = 1_764_201_420_000
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", "ticker", tickers([e, e + 1000]))
        store.flush()
        store.append("HBARUSDT", "ticker", tickers([e + 1000, e + 2000], last=0.09))
    with ParquetStore(tmp_path) as store:
        got = store.read("HBARUSDT", "ticker")
        assert got["event_id"].to_list() == [e, e + 1000, e + 2000]
        assert got["last_price"].to_list() == [0.075, 0.09, 0.09]


# ---------------------------------------------------------------- frames in, errors out


def test_frames_are_cast_to_the_schema_and_extra_columns_dropped(tmp_path: Path) -> None:
    loose = klines(0, [1.0, 2.0]).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")), pl.lit("x").alias("note")
    )
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", KLINES_1M, loose)
        store.append("HBARUSDT", KLINES_1M, klines(5, []))  # empty: nothing to do
        assert_frame_equal(store.read("HBARUSDT", KLINES_1M), klines(0, [1.0, 2.0]))


@pytest.mark.parametrize(
    ("symbol", "buffer", "frame", "message"),
    [
        ("HBARUSDT", "book", klines(0, [1.0]), "buffer 'book' is not stored"),
        ("HBARUSDT", "klines_5m", klines(0, [1.0]), "buffer 'klines_5m'"),
        ("../etc", KLINES_1M, klines(0, [1.0]), "symbol '../etc' cannot name"),
        ("HBARUSDT", KLINES_1M, klines(0, [1.0]).drop("volume"), r"lacks columns \['volume'\]"),
        ("HBARUSDT", KLINES_1M, klines(0, [1.0]).with_columns(pl.lit("x").alias("open")), "cast"),
        (
            "HBARUSDT",
            KLINES_1M,
            klines(0, [1.0]).with_columns(pl.lit(None, KLINES["timestamp"]).alias("timestamp")),
            "1 rows lack a timestamp",
        ),
    ],
)
def test_bad_appends_say_what_was_wrong(
    tmp_path: Path, symbol: str, buffer: str, frame: pl.DataFrame, message: str
) -> None:
    with ParquetStore(tmp_path) as store, pytest.raises(ValueError, match=message):
        store.append(symbol, buffer, frame)
    assert parquet_files(tmp_path) == []


def test_one_writer_at_a_time_and_read_only_readers(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as writer:
        writer.append("HBARUSDT", KLINES_1M, klines(0, [1.0]))
        with pytest.raises(UsageError, match="being written by another process"):
            ParquetStore(tmp_path)
        with ParquetStore(tmp_path, read_only=True) as reader:
            assert reader.read("HBARUSDT", KLINES_1M).height == 1
            writer.append("HBARUSDT", KLINES_1M, klines(1, [2.0]))
            assert reader.latest("HBARUSDT", KLINES_1M, 5).height == 2
            with pytest.raises(ValueError, match="read-only"):
                reader.append("HBARUSDT", KLINES_1M, klines(2, [1.0]))
    ParquetStore(tmp_path).close()  # the lock went with the writer


def test_close_is_idempotent_and_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = ParquetStore(tmp_path)
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.append("HBARUSDT", KLINES_1M, klines(0, [1.0]))


def test_unusable_roots_and_options_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot use store"):
        ParquetStore(tmp_path / "file")
    with pytest.raises(UsageError, match="not a directory"):
        ParquetStore(tmp_path / "missing", read_only=True)
    with pytest.raises(UsageError, match="batch_rows"):
        ParquetStore(tmp_path, batch_rows=0)
    with pytest.raises(UsageError, match="compact_parts"):
        ParquetStore(tmp_path, compact_parts=1)


# ---------------------------------------------------------------- crashes


def test_a_torn_temporary_file_is_ignored_and_cleaned_on_open(tmp_path: Path) -> None:
    with ParquetStore(tmp_path) as store:
        store.append("HBARUSDT", KLINES_1M, klines(0, [1.0]))
    day = tmp_path / "symbol=HBARUSDT/buffer=klines_1m/date=2026-11-26"
    torn = day / ".part-00000002.parquet.4242.deadbeef.tmp"
    torn.write_bytes(b"PAR1 half a file")
    with ParquetStore(tmp_path, read_only=True) as reader:
        assert reader.read("HBARUSDT", KLINES_1M).height == 1
        assert torn.exists()  # a reader never deletes
    with ParquetStore(tmp_path) as store:
        assert not torn.exists()
        store.append("HBARUSDT", KLINES_1M, klines(1, [2.0]))
        assert store.read("HBARUSDT", KLINES_1M).height == 2


def test_files_a_merge_covers_are_ignored_and_cleaned_on_open(tmp_path: Path) -> None:
    with ParquetStore(tmp_path, compact_parts=3) as store:
        store.append("HBARUSDT", KLINES_1M, klines(0, [1.0]))
        store.append("HBARUSDT", KLINES_1M, klines(1, [2.0]))
        store.append("HBARUSDT", KLINES_1M, klines(2, [3.0]))  # merged into part-1-3
    day = tmp_path / "symbol=HBARUSDT/buffer=klines_1m/date=2026-11-26"
    # As if the merge was killed after its rename, before deleting what it covers.
    klines(1, [2.0]).write_parquet(day / "part-00000002.parquet")
    with ParquetStore(tmp_path, read_only=True) as reader:
        assert reader.read("HBARUSDT", KLINES_1M)["close"].to_list() == [1.0, 2.0, 3.0]
    ParquetStore(tmp_path).close()
    assert [p.name for p in day.iterdir()] == ["part-00000001-00000003.parquet"]


CHILD = textwrap.dedent(
    """
    import datetime as dt, io, os, pathlib, signal, sys
    import polars as pl
    from sinks.schemas import KLINES
    from sinks.store import ParquetStore

    T0 = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    root, crash, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = 0

    def die_at_call():
        global calls
        calls += 1
        if calls == at:
            os.kill(os.getpid(), signal.SIGKILL)

    # Deterministic crash points; "random" leaves the moment to the parent's kill.
    if crash == "torn":  # half a file written, then death: a torn temporary file
        write_parquet = pl.DataFrame.write_parquet
        def torn(self, file, **options):
            whole = io.BytesIO()
            write_parquet(self, whole, **options)
            if calls + 1 == at:
                file.write(whole.getvalue()[: len(whole.getvalue()) // 2])
                file.flush()
            die_at_call()
            file.write(whole.getvalue())
        pl.DataFrame.write_parquet = torn
    elif crash == "replace":  # a whole, fsynced temporary file, never renamed
        replace = os.replace
        def dying_replace(*args):
            die_at_call()
            replace(*args)
        os.replace = dying_replace
    elif crash == "unlink":  # a merge renamed its base, then died before deleting
        unlink = pathlib.Path.unlink
        def dying_unlink(self, missing_ok=False):
            die_at_call()
            unlink(self, missing_ok=missing_ok)
        pathlib.Path.unlink = dying_unlink

    def row(hour, close):
        return pl.DataFrame({"timestamp": [T0 + dt.timedelta(hours=hour)], "open": [1.0],
                             "high": [2.0], "low": [0.5], "close": [close], "volume": [3.0]},
                            schema=KLINES)

    store = ParquetStore(root, compact_parts=3)
    for i in range(10**6):
        store.append("HBARUSDT", "klines_1h", row(i, float(i)))
        if i % 4 == 3:  # a backfill over rows already stored: the merge path
            store.append("HBARUSDT", "klines_1h", row(i - 2, -float(i)))
        print(i, flush=True)
    """
)


def has_covered_file(day: Path) -> bool:
    ranges = []
    for path in day.glob("part-*.parquet"):
        numbers = [int(n) for n in path.stem.split("-")[1:]]
        ranges.append((numbers[0], numbers[-1]))
    return any(a <= c and d <= b and (a, b) != (c, d) for a, b in ranges for c, d in ranges)


def model_state(steps: int, last_complete: bool) -> dict[int, float]:
    """The store's content (hour -> close) after `steps` steps of the child.

    With `last_complete` false, the last step's second append (if it has one) is missing.
    """
    state: dict[int, float] = {}
    for i in range(steps):
        state[i] = float(i)
        if i % 4 == 3 and (last_complete or i < steps - 1):
            state[i - 2] = -float(i)
    return state


@pytest.mark.parametrize(
    ("crash", "at"),
    [
        ("random", 5),  # SIGKILL from outside after `at` steps
        ("random", 30),
        ("torn", 7),  # the `at`-th file is half written when the process dies
        ("torn", 12),
        ("replace", 9),  # dies with a whole temporary file not yet renamed
        ("unlink", 1),  # a merge's base is in place, the files it replaced are not deleted
        ("unlink", 4),
    ],
)
def test_sigkill_mid_write_leaves_only_whole_files(tmp_path: Path, crash: str, at: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), crash, str(at)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked = -1
    if crash == "random":
        for _ in range(at):
            acked = int(child.stdout.readline())
        child.send_signal(signal.SIGKILL)
    else:
        for line in child.stdout:
            acked = int(line)
    assert child.wait() == -signal.SIGKILL
    child.stdout.close()
    if crash in ("torn", "replace"):
        assert list(tmp_path.rglob("*.tmp")), "the crash point left no temporary file"
    if crash == "unlink":
        assert any(map(has_covered_file, tmp_path.glob("*/*/*"))), "no covered file was left"
        with ParquetStore(tmp_path, read_only=True) as reader:
            before_cleanup = reader.read("HBARUSDT", "klines_1h")

    # Every Parquet file is whole, whatever the moment of the kill.
    for path in tmp_path.rglob("*.parquet"):
        assert pl.read_parquet(path).schema == KLINES
    with ParquetStore(tmp_path) as store:
        assert not list(tmp_path.rglob("*.tmp"))
        got = store.read("HBARUSDT", "klines_1h")
    hours = [
        (t - dt.datetime(2026, 11, 26, tzinfo=UTC)) // dt.timedelta(hours=1)
        for t in got["timestamp"]
    ]
    content = dict(zip(hours, got["close"].to_list(), strict=True))
    if crash == "unlink":
        assert_frame_equal(before_cleanup, got)
    # Each append is all or nothing: the store holds exactly the state after some append,
    # no earlier than the last step the child reported.
    steps = max(content) + 1
    assert steps >= acked + 1
    assert content in (model_state(steps, True), model_state(steps, False))
    # After the clean-up on open, plain Polars sees no duplicate either.
    plain = pl.scan_parquet(tmp_path, hive_partitioning=True).collect()
    assert plain.height == len(content)
