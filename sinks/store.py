"""The embedded store: buffers kept as Parquet, partitioned by symbol, buffer and day.

Layout (hive style, so other tools read it as it is):

    root/symbol=HBARUSDT/buffer=klines_1m/date=2026-11-26/part-00000001-00000016.parquet
    root/symbol=HBARUSDT/buffer=klines_1m/date=2026-11-26/part-00000017.parquet

A file holds exactly the columns of its buffer's schema (`sinks.schemas`); symbol,
buffer and day are in the path, and the day is the UTC date of `timestamp`. Read one
buffer of every symbol with plain Polars or DuckDB:

    pl.scan_parquet(f"{root}/*/buffer=klines_1m/*/*.parquet", hive_partitioning=True)
    duckdb.sql(f"select * from read_parquet('{root}/*/buffer=klines_1m/*/*.parquet',"
               " hive_partitioning=true)")

(`pl.scan_parquet(root, hive_partitioning=True)` works while the root holds one
buffer; buffers have different columns, so with several, scan them one by one, or
use DuckDB's `union_by_name=true` over `root/**/*.parquet`. Polars' directory scan
also reads non-Parquet files, so while a write is in flight prefer a glob.)

Rows are identified by a key, and a later write of a key replaces the earlier row
(upsert): klines by open time (`timestamp`), tickers by `event_id`, order-book
rows by (`update_id`, `side`, `level`). The files of a day never share a key, and
hold ascending, disjoint ranges of the buffer's order column (open time, event id,
update id), so a plain scan never sees a row twice and the newest rows are in the
newest file:

- rows newer than everything stored (the usual case: the next closed kline) are
  written to a new file, `part-N` (N counts the day's writes);
- rows that overlap what is stored (a REST backfill after a restart) are merged
  with the newest files they overlap into one file, named for the range of writes
  it covers, `part-A-B`;
- compaction: when the newest `compact_parts` files are of one size class (each
  covering about as many writes) they are merged into one, so a day holds a few
  dozen files at most and a row is rewritten only a few times (merging the whole
  day every few parts would rewrite a day of order books, some 30 million rows,
  over and over). When a day is over (the first write of a later day) its files
  are merged into one; `compact()` does it now for every day. These merges stream
  (the files are already sorted and disjoint) rather than load the day.

A file `part-A-B` replaces every file whose range it covers; those are deleted
once it is in place.

Every file is written whole or not at all: a temporary file in the same directory
(`.<name>.<pid>.<random>.tmp`), fsync, rename, fsync of the directory. A crash
therefore leaves only complete files, possibly a temporary file (ignored, and
deleted when the store is next opened for writing) and, if it struck between a
merge's rename and its deletions, files that the merged one covers (ignored by
this class, deleted on open; a plain Polars or DuckDB scan in that window sees
those rows twice).

Klines are written at once (one file per closed kline is cheap at one a minute);
order-book snapshots and tickers arrive many times a second, so they are batched
in memory and written every `batch_rows` rows, when the batch spans
`batch_interval` seconds of its own timestamps, and at `flush()`/`close()` (a crash
loses at most that batch). Reads include rows still in the batch.

One process writes a root at a time (it holds an exclusive lock on `root/.lock`);
open with `read_only=True` to read a store another process is writing. A store
object is not thread-safe: use it from one thread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Final, NamedTuple, TypeAlias, cast

import polars as pl

from pipeline.errors import UsageError
from sinks._atomic import atomic_file, fsync_directory
from sinks.schemas import SCHEMAS

__all__ = ["DEFAULT_BATCH_INTERVAL", "DEFAULT_BATCH_ROWS", "DEFAULT_COMPACT_PARTS", "ParquetStore"]

StrPath: TypeAlias = str | PathLike[str]

DEFAULT_BATCH_ROWS: Final = 50_000
"""Order-book and ticker rows held in memory before they are written."""
DEFAULT_BATCH_INTERVAL: Final = 60.0
"""Seconds of the rows' own timestamps a batch may span before it is written."""
DEFAULT_COMPACT_PARTS: Final = 16
"""This many files of one size class are merged into one."""

_FILE: Final = re.compile(r"part-(\d{8,})(?:-(\d{8,}))?\.parquet")
_TEMPORARY: Final = re.compile(r"\..+\.tmp")
_SYMBOL: Final = re.compile(r"[A-Z0-9][A-Z0-9_.-]*")
_LOCK_NAME: Final = ".lock"
_ROW_GROUP: Final = 1 << 17
_RETRIES: Final = 5


class _Spec(NamedTuple):
    key: tuple[str, ...]
    """Columns that identify a row: a later write of the same key replaces it."""
    order: str
    """The column rows grow in: files of a day hold ascending, disjoint ranges of it."""
    sort: tuple[str, ...]
    """How rows are sorted in files and in what the reads return."""
    batched: bool


_KLINES: Final = _Spec(("timestamp",), "timestamp", ("timestamp",), batched=False)
_SPECS: Final[dict[str, _Spec]] = {
    "klines_1m": _KLINES,
    "klines_1h": _KLINES,
    "klines_1d": _KLINES,
    # A snapshot's rows share its update id; in a snapshot bids come first, by level.
    "order_book": _Spec(
        ("update_id", "side", "level"), "update_id", ("update_id", "side", "level"), True
    ),
    "ticker": _Spec(("event_id",), "event_id", ("event_id",), batched=True),
}


@dataclass
class _File:
    """One live Parquet file of a day: the range of the day's writes it holds."""

    path: Path
    first: int
    last: int
    top: object = None
    """The largest value of the buffer's order column in it (None: not read yet)."""

    @property
    def span(self) -> int:
        return self.last - self.first + 1


@dataclass
class _Partition:
    """One symbol's buffer on one day: its live files, oldest (and lowest ordered) first."""

    path: Path
    files: list[_File] = field(default_factory=list)
    next_seq: int = 1


@dataclass
class _Batch:
    frames: list[pl.DataFrame] = field(default_factory=list)
    rows: int = 0
    first: dt.datetime | None = None


class ParquetStore:
    """Buffers of many symbols kept as hive-partitioned Parquet (see the module doc).

    Args:
        root: the store's directory (created if missing).
        batch_rows: order-book and ticker rows held before they are written.
        batch_interval: seconds of row timestamps a batch may span.
        compact_parts: how many files of one size class are merged into one (at least 2).
        read_only: read a store that another process may be writing: no lock, no
            clean-up, no writes.

    Raises:
        UsageError: the root cannot be used (not a directory, not writable, or
            being written by another process).
    """

    def __init__(
        self,
        root: StrPath,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        compact_parts: int = DEFAULT_COMPACT_PARTS,
        read_only: bool = False,
    ) -> None:
        if type(batch_rows) is not int or batch_rows <= 0:
            raise UsageError(f"batch_rows must be a positive integer, not {batch_rows!r}")
        if not batch_interval > 0:
            raise UsageError(f"batch_interval must be positive seconds, not {batch_interval!r}")
        if type(compact_parts) is not int or compact_parts < 2:
            raise UsageError(
                f"compact_parts must be an integer of at least 2, not {compact_parts!r}"
            )
        self.root = Path(root)
        self.read_only = read_only
        self._batch_rows = batch_rows
        self._batch_span = dt.timedelta(seconds=batch_interval)
        self._compact_parts = compact_parts
        self._partitions: dict[tuple[str, str], dict[dt.date, _Partition]] = {}
        """(symbol, buffer) -> day -> its files, when writing (a reader lists them afresh)."""
        self._newest_day: dict[tuple[str, str], dt.date] = {}
        """The newest day written to since opening: the days before it are over."""
        self._batches: dict[tuple[str, str], _Batch] = {}
        self._lock_fd: int | None = None
        self._closed = False
        if read_only:
            if not self.root.is_dir():
                raise UsageError(f"store {str(self.root)!r} is not a directory")
            return
        try:
            _make_dirs(self.root)
            self._lock_fd = os.open(self.root / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UsageError(f"cannot use store {str(self.root)!r}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise UsageError(
                f"store {str(self.root)!r} is being written by another process "
                "(open it with read_only=True to read it)"
            ) from exc
        for directory in self.root.glob("symbol=*/buffer=*/date=*"):
            where = _where(directory)
            if where is not None and directory.is_dir():
                symbol, buffer, day = where
                self._partitions.setdefault((symbol, buffer), {})[day] = self._scan(directory)

    # ------------------------------------------------------------------ writing

    def append(self, symbol: str, buffer: str, frame: pl.DataFrame) -> None:
        """Store `frame`'s rows of `symbol`'s `buffer`; a row replaces a stored one of its key.

        `frame` needs the buffer's columns (extra ones are not stored) in types
        that cast exactly to its schema. Klines are on disk when this returns;
        order-book and ticker rows may wait in the batch (see the module doc).

        Raises:
            ValueError: an unknown buffer, a symbol that cannot name a directory, a
                frame without the buffer's columns, or with a missing timestamp.
        """
        self._check_open()
        if self.read_only:
            raise ValueError(f"store {str(self.root)!r} was opened read-only")
        symbol, spec = _symbol(symbol), _spec(buffer)
        rows = _conform(symbol, buffer, frame)
        if rows.is_empty():
            return
        if not spec.batched:
            self._write(symbol, buffer, rows)
            return
        batch = self._batches.setdefault((symbol, buffer), _Batch())
        batch.frames.append(rows)
        batch.rows += rows.height
        stamps = rows["timestamp"]
        if batch.first is None:
            batch.first = cast(dt.datetime, stamps.min())
        newest = cast(dt.datetime, stamps.max())
        if batch.rows >= self._batch_rows or abs(newest - batch.first) >= self._batch_span:
            self._write_batch(symbol, buffer)

    def flush(self) -> None:
        """Write every batched row."""
        self._check_open()
        for symbol, buffer in list(self._batches):
            self._write_batch(symbol, buffer)

    def compact(self) -> None:
        """Merge every day that has more than one file into one (after writing the batches)."""
        if self.read_only:
            raise ValueError(f"store {str(self.root)!r} was opened read-only")
        self.flush()
        for (_, buffer), days in self._partitions.items():
            for partition in days.values():
                self._concat(partition, 0, buffer)

    def close(self) -> None:
        """Write the batches and release the store. Calling it again does nothing."""
        if self._closed:
            return
        try:
            if not self.read_only:
                self.flush()
        finally:
            self._closed = True
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def __enter__(self) -> ParquetStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "closed" if self._closed else "open"
        return f"ParquetStore({str(self.root)!r}, {mode})"

    # ------------------------------------------------------------------ reading

    def read(
        self,
        symbol: str,
        buffer: str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> pl.DataFrame:
        """`symbol`'s `buffer` rows with `start <= timestamp < end` (either bound optional).

        Sorted (klines by open time, tickers by event id, order book by update id,
        then bids before asks by level), in the buffer's schema; batched rows included.

        Raises:
            ValueError: a naive datetime (give a timezone), or an unknown buffer.
        """
        self._check_open()
        symbol, spec = _symbol(symbol), _spec(buffer)
        lo, hi = _aware("start", start), _aware("end", end)
        return self._retrying(lambda: self._read(symbol, buffer, spec, lo, hi))

    def _read(
        self,
        symbol: str,
        buffer: str,
        spec: _Spec,
        lo: dt.datetime | None,
        hi: dt.datetime | None,
    ) -> pl.DataFrame:
        days = self._days(symbol, buffer)
        if lo is not None:
            days = [d for d in days if d >= lo.date()]
        if hi is not None:
            days = [d for d in days if d <= hi.date()]
        frames = [_read_files(self._files(symbol, buffer, d), buffer) for d in days]
        frames.extend(self._pending(symbol, buffer))
        merged = _combine(frames, buffer, spec, dedupe=self._has_pending(symbol, buffer))
        stamp = pl.col("timestamp")
        if lo is not None:
            merged = merged.filter(stamp >= lo)
        if hi is not None:
            merged = merged.filter(stamp < hi)
        return merged

    def latest(self, symbol: str, buffer: str, n: int) -> pl.DataFrame:
        """The newest `n` rows of `symbol`'s `buffer` (fewer if fewer are stored), sorted."""
        self._check_open()
        symbol, spec = _symbol(symbol), _spec(buffer)
        if n <= 0:
            return pl.DataFrame(schema=SCHEMAS[buffer])
        return self._retrying(lambda: self._latest(symbol, buffer, spec, n))

    def _latest(self, symbol: str, buffer: str, spec: _Spec, n: int) -> pl.DataFrame:
        newest_first: list[pl.DataFrame] = []
        have = 0
        # Files of a day, and days, hold ascending ranges: read backwards until n rows.
        for day in reversed(self._days(symbol, buffer)):
            for path in reversed(self._files(symbol, buffer, day)):
                part = _read_files([path], buffer, tail=n - have)
                newest_first.append(part)
                have += part.height
                if have >= n:
                    break
            if have >= n:
                break
        frames = [*reversed(newest_first), *self._pending(symbol, buffer)]
        return _combine(frames, buffer, spec, dedupe=self._has_pending(symbol, buffer)).tail(n)

    def last_timestamp(self, symbol: str, buffer: str) -> dt.datetime | None:
        """The newest `timestamp` of `symbol`'s `buffer` (a kline's open time), None if empty.

        After a restart, fetch over REST only what is missing since.
        """
        last = self.latest(symbol, buffer, 1)
        return None if last.is_empty() else cast(dt.datetime, last["timestamp"][0])

    # ------------------------------------------------------------------ inside

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"store {str(self.root)!r} is closed")

    def _days(self, symbol: str, buffer: str) -> list[dt.date]:
        if not self.read_only:
            days = self._partitions.get((symbol, buffer), {})
            return sorted(day for day, partition in days.items() if partition.files)
        folder = self.root / f"symbol={symbol}" / f"buffer={buffer}"
        found = (_where(path) for path in folder.glob("date=*"))
        return sorted(where[2] for where in found if where is not None)

    def _partition(self, symbol: str, buffer: str, day: dt.date) -> _Partition:
        if self.read_only:
            return self._scan(self._path(symbol, buffer, day))
        days = self._partitions.setdefault((symbol, buffer), {})
        partition = days.get(day)
        if partition is None:
            partition = days[day] = _Partition(self._path(symbol, buffer, day))
        return partition

    def _path(self, symbol: str, buffer: str, day: dt.date) -> Path:
        return self.root / f"symbol={symbol}" / f"buffer={buffer}" / f"date={day.isoformat()}"

    def _files(self, symbol: str, buffer: str, day: dt.date) -> list[Path]:
        return [f.path for f in self._partition(symbol, buffer, day).files]

    def _retrying(self, read: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        for attempt in range(_RETRIES):
            try:
                return read()
            except FileNotFoundError:
                # Read-only: the writer merged a day while we read it; list it again.
                if not self.read_only or attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _pending(self, symbol: str, buffer: str) -> list[pl.DataFrame]:
        batch = self._batches.get((symbol, buffer))
        return list(batch.frames) if batch else []

    def _has_pending(self, symbol: str, buffer: str) -> bool:
        batch = self._batches.get((symbol, buffer))
        return bool(batch and batch.frames)

    def _scan(self, directory: Path) -> _Partition:
        """A day's live files; when writing, also deletes temporary and covered files."""
        partition = _Partition(directory)
        found: list[_File] = []
        stale: list[Path] = []
        try:
            entries = list(directory.iterdir())
        except FileNotFoundError:
            return partition
        for entry in entries:
            match = _FILE.fullmatch(entry.name)
            if match:
                first = int(match.group(1))
                found.append(_File(entry, first, int(match.group(2) or first)))
            elif _TEMPORARY.fullmatch(entry.name):
                stale.append(entry)
        # Widest first among equal starts: a file inside an earlier one's range is covered.
        found.sort(key=lambda f: (f.first, -f.last))
        reach = 0
        for file in found:
            if file.last <= reach:
                stale.append(file.path)
            else:
                partition.files.append(file)
                reach = file.last
        partition.next_seq = reach + 1
        if stale and not self.read_only:
            _remove(stale, directory)
        return partition

    def _write_batch(self, symbol: str, buffer: str) -> None:
        batch = self._batches.get((symbol, buffer))
        if batch and batch.frames:
            self._write(symbol, buffer, pl.concat(batch.frames, how="vertical"))
        # Dropped only once written: after a failed write (disk full) the rows stay batched.
        self._batches.pop((symbol, buffer), None)

    def _write(self, symbol: str, buffer: str, rows: pl.DataFrame) -> None:
        order = _SPECS[buffer].order
        rows = _dedupe_sorted(rows, _SPECS[buffer])
        for day, day_rows in _by_day(rows):
            self._finish_days_before(symbol, buffer, day)
            partition = self._partition(symbol, buffer, day)
            files = partition.files
            if files and day_rows[order].min() <= self._top(files[-1], buffer):  # type: ignore[operator]
                self._upsert(partition, day_rows, buffer)
            else:
                self._add_part(partition, day_rows, buffer)

    def _finish_days_before(self, symbol: str, buffer: str, day: dt.date) -> None:
        """On the first write of a later day, merge each earlier day into one file."""
        newest = self._newest_day.get((symbol, buffer))
        if newest is not None and day <= newest:
            return
        self._newest_day[symbol, buffer] = day
        for earlier, partition in self._partitions.get((symbol, buffer), {}).items():
            if earlier < day:
                self._concat(partition, 0, buffer)

    def _top(self, file: _File, buffer: str) -> object:
        if file.top is None:
            column = _SPECS[buffer].order
            file.top = (
                _scan_files([file.path], buffer).select(pl.col(column).max()).collect().item()
            )
        return file.top

    def _add_part(self, partition: _Partition, rows: pl.DataFrame, buffer: str) -> None:
        seq = partition.next_seq
        path = partition.path / _file_name(seq, seq)
        _make_dirs(partition.path)
        _write_atomic(rows, path)
        partition.files.append(_File(path, seq, seq, rows[_SPECS[buffer].order].max()))
        partition.next_seq = seq + 1
        self._tier(partition, buffer)

    def _tier(self, partition: _Partition, buffer: str) -> None:
        """Merge the newest `compact_parts` files while they are of one size class."""
        k = self._compact_parts
        files = partition.files
        while len(files) >= k and len({_size_class(f.span, k) for f in files[-k:]}) == 1:
            self._concat(partition, len(files) - k, buffer)
            files = partition.files
        if len(files) > 4 * k:
            # Upserts can leave uneven sizes that never line up: bound the count anyway.
            self._concat(partition, 0, buffer)

    def _concat(self, partition: _Partition, start: int, buffer: str) -> None:
        """Merge `files[start:]` into one, streaming: they are sorted and disjoint already."""
        run = partition.files[start:]
        if len(run) < 2:
            return
        path = partition.path / _file_name(run[0].first, run[-1].last)
        _write_atomic(pl.concat([_scan_files([f.path], buffer) for f in run]), path)
        partition.files[start:] = [_File(path, run[0].first, run[-1].last, run[-1].top)]
        _remove([f.path for f in run if f.path != path], partition.path)

    def _upsert(self, partition: _Partition, rows: pl.DataFrame, buffer: str) -> None:
        """Merge `rows` with the newest files their order range reaches (later wins)."""
        spec = _SPECS[buffer]
        low = rows[spec.order].min()
        files = partition.files
        start = len(files) - 1
        while start > 0 and self._top(files[start - 1], buffer) >= low:  # type: ignore[operator]
            start -= 1
        run = files[start:]
        stored = _scan_files([f.path for f in run], buffer).collect()
        merged = _dedupe_sorted(pl.concat([stored, rows], how="vertical"), spec)
        path = partition.path / _file_name(run[0].first, run[-1].last)
        # Same range, same name: the rename replaces a lone file in one step.
        _write_atomic(merged, path)
        top = merged[spec.order].max()
        partition.files[start:] = [_File(path, run[0].first, run[-1].last, top)]
        _remove([f.path for f in run if f.path != path], partition.path)


# ---------------------------------------------------------------------- helpers


def _symbol(symbol: str) -> str:
    upper = symbol.upper() if isinstance(symbol, str) else ""
    if not _SYMBOL.fullmatch(upper):
        raise ValueError(f"symbol {symbol!r} cannot name a directory (letters, digits, _ . -)")
    return upper


def _spec(buffer: str) -> _Spec:
    spec = _SPECS.get(buffer)
    if spec is None:
        raise ValueError(f"buffer {buffer!r} is not stored; the store keeps {', '.join(_SPECS)}")
    return spec


def _where(day_path: Path) -> tuple[str, str, dt.date] | None:
    """(symbol, buffer, day) of `root/symbol=S/buffer=B/date=D`; None for anything else."""
    symbol = day_path.parent.parent.name.removeprefix("symbol=")
    buffer = day_path.parent.name.removeprefix("buffer=")
    try:
        day = dt.date.fromisoformat(day_path.name.removeprefix("date="))
    except ValueError:
        return None
    if buffer not in _SPECS or not _SYMBOL.fullmatch(symbol):
        return None
    return symbol, buffer, day


def _aware(name: str, value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {value!r}")
    return value.astimezone(dt.UTC)


def _conform(symbol: str, buffer: str, frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` reduced to the buffer's schema (cast exactly), or ValueError saying why not."""
    schema = SCHEMAS[buffer]
    # The usual case, checked cheaply: comparing `pl.Schema`s costs ~60 µs (Enum dtypes).
    if frame.columns == schema.names() and frame.dtypes == schema.dtypes():
        rows = frame
    else:
        have = frame.schema
        missing = [name for name in schema if name not in have]
        if missing:
            raise ValueError(
                f"{symbol} {buffer}: the frame lacks columns {missing} (it has {frame.columns})"
            )
        try:
            rows = frame.select(
                pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items()
            )
        except pl.exceptions.PolarsError as exc:
            raise ValueError(
                f"{symbol} {buffer}: columns {dict(have)} do not cast to the "
                f"schema {dict(schema)}: {exc}"
            ) from exc
    if missing_stamps := rows["timestamp"].null_count():
        raise ValueError(f"{symbol} {buffer}: {missing_stamps} rows lack a timestamp")
    return rows


def _dedupe_sorted(rows: pl.DataFrame, spec: _Spec) -> pl.DataFrame:
    return rows.unique(subset=list(spec.key), keep="last", maintain_order=True).sort(
        list(spec.sort), maintain_order=True
    )


def _combine(frames: list[pl.DataFrame], buffer: str, spec: _Spec, *, dedupe: bool) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame(schema=SCHEMAS[buffer])
    merged = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    # Stored days never share a key; only batched rows can replace stored ones.
    return _dedupe_sorted(merged, spec) if dedupe else merged.sort(list(spec.sort))


def _by_day(rows: pl.DataFrame) -> Iterator[tuple[dt.date, pl.DataFrame]]:
    days = rows["timestamp"].dt.date()
    first: dt.date = days.min()  # type: ignore[assignment]
    if first == days.max():
        yield first, rows
        return
    # Only a batch that spans midnight gets here.
    for day in days.unique().sort():
        yield day, rows.filter(days == day)


def _scan_files(paths: Iterable[Path], buffer: str) -> pl.LazyFrame:
    return pl.scan_parquet([str(p) for p in paths], schema=SCHEMAS[buffer], hive_partitioning=False)


def _read_files(paths: Iterable[Path], buffer: str, tail: int | None = None) -> pl.DataFrame:
    files = list(paths)
    if not files:
        return pl.DataFrame(schema=SCHEMAS[buffer])
    scan = _scan_files(files, buffer)
    return (scan.tail(tail) if tail is not None else scan).collect()


def _file_name(first: int, last: int) -> str:
    return f"part-{first:08d}.parquet" if first == last else f"part-{first:08d}-{last:08d}.parquet"


def _size_class(span: int, k: int) -> int:
    """floor(log_k(span)): files merged from about as many writes share a class."""
    size = 0
    while span >= k:
        span //= k
        size += 1
    return size


def _remove(paths: list[Path], directory: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    if paths:
        fsync_directory(directory)


def _write_atomic(rows: pl.DataFrame | pl.LazyFrame, path: Path) -> None:
    """Write `rows` to `path` whole or not at all, durably (temporary file, fsync, rename).

    A lazy frame is streamed to the file rather than collected first.
    """
    with atomic_file(path) as file:
        if isinstance(rows, pl.LazyFrame):
            rows.sink_parquet(file, compression="zstd", statistics=True, row_group_size=_ROW_GROUP)
        else:
            rows.write_parquet(file, compression="zstd", statistics=True, row_group_size=_ROW_GROUP)


def _make_dirs(directory: Path) -> None:
    """`os.makedirs`, with each new directory's entry made durable in its parent."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        fsync_directory(folder.parent)
