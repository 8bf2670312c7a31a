"""`--dump DIR`: each buffer's final frame as `DIR/<SYMBOL>/<buffer>.parquet`.

Every file is written whole or not at all (temporary file in the same directory,
fsync, rename), so a reader or a crash never sees half a file, and the bytes depend
only on the frame: the same frames dumped twice give identical files, which is how
replay is checked against a live run.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import polars as pl

from sinks._atomic import atomic_file
from sinks.schemas import SCHEMAS

__all__ = ["dump_frames", "parquet_bytes", "write_atomic"]

# A symbol or buffer becomes a path component: nothing that could climb or hide.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def dump_frames(frames: Mapping[str, Mapping[str, pl.DataFrame]], directory: Path) -> list[Path]:
    """Write `frames[symbol][buffer]` to `directory/<SYMBOL>/<buffer>.parquet`; return the paths.

    Symbols are upper-cased for the directory name. A frame of a buffer listed in
    `sinks.schemas.SCHEMAS` must start with that buffer's columns and types
    (extra columns may follow); an empty frame is written with its schema.
    Files are written in the mappings' order and returned in it.

    Raises:
        ValueError: a symbol or buffer name that is not a plain file name, two
            symbols that differ only in case, or a frame without its buffer's schema.
    """
    plan: list[tuple[Path, pl.DataFrame]] = []
    seen: dict[str, str] = {}
    for symbol, buffers in frames.items():
        folder = _name("symbol", symbol).upper()
        if seen.setdefault(folder, symbol) != symbol:
            raise ValueError(f"symbols {seen[folder]!r} and {symbol!r} would share {folder}/")
        for buffer, frame in buffers.items():
            _check_schema(symbol, _name("buffer", buffer), frame)
            plan.append((Path(directory) / folder / f"{buffer}.parquet", frame))
    for path, frame in plan:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(parquet_bytes(frame), path)
    return [path for path, _ in plan]


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    """`frame` as a Parquet file whose bytes depend only on its contents and schema.

    Every option that shapes the bytes is spelled out (a library default may
    change under us), and the frame is rechunked so that row groups and pages do
    not depend on how it was assembled.
    """
    buffer = io.BytesIO()
    frame.rechunk().write_parquet(
        buffer,
        compression="zstd",
        compression_level=3,
        statistics=True,
        row_group_size=1 << 20,
        data_page_size=1 << 20,
        use_pyarrow=False,
    )
    return buffer.getvalue()


def write_atomic(data: bytes, path: Path) -> None:
    """Write `data` to `path` whole or not at all, and durably (temporary file, fsync, rename)."""
    with atomic_file(path) as file:
        file.write(data)


def _name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{kind} {value!r} cannot name a file (letters, digits, _ . - only)")
    return value


def _check_schema(symbol: str, buffer: str, frame: pl.DataFrame) -> None:
    expected = SCHEMAS.get(buffer)
    if expected is None:
        return
    head = list(frame.schema.items())[: len(expected)]
    if head != list(expected.items()):
        raise ValueError(
            f"{symbol} {buffer}: columns {dict(frame.schema)} do not start with "
            f"the buffer's schema {dict(expected)}"
        )
