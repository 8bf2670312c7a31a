"""Record raw messages as a capture: the JSON Lines format of DESIGN.md, read back by
`pipeline.capture`.

One object a line, in the order the messages arrive; each kind writes exactly the
keys the reader reads for it, so `read_capture` gives back the same `RawMessage`s:

- `ws`: `t`, `kind`, `conn`, `data`
- `open`: `t`, `kind`, `conn`, `url`
- `rest`: `t`, `kind`, `method`, `url`, `status`, `data`
- `close`: `t`, `kind`, `conn`, `code` (the message's `status`), `reason` (its `data`)

Fields the format has no key for (a `ws` message's `url`, a `rest` message's
`conn`, ...) are not recorded: sources leave them at their defaults. A kind the
format does not know is recorded with every field; the reader counts such a line
as bad rather than guess at it.

Files (segments). The first segment is the path given (`capture.jsonl`); each
rotation starts the next, numbered before the format suffixes:
`capture.0001.jsonl`, `capture.0002.jsonl`, ... (`capture.0001.jsonl.zst` when
compressed). A segment is closed before the next one opens, so each is a
complete file, readable on its own (its gzip member or zstd frame ends properly);
replay them together with `hbar-data replay` (it merges by receive time; see
`capture_segments`). An existing file is never overwritten or appended to: a
writer whose path exists already continues after the highest segment there.
`rotate_bytes` bounds the uncompressed JSON Lines bytes of a segment, so where a
segment ends does not depend on the compressor; only a single line longer than
that gets a segment to itself.

Crash safety. Lines are collected in memory and handed to the operating system
whole, at `flush()`: at least every `flush_every` messages and whenever a
message's receive time `t` is `flush_interval` seconds past the last flush (the
messages' own clock, so a replay flushes on the capture's time, and a quiet feed
keeps its tail until the next message, `flush()` or `close()`). Compressed
segments are flushed to a decodable point (gzip: sync flush; zstd: end of block)
each time. So a process killed at any moment (SIGKILL included) loses at most the
messages since the last flush; everything before is intact and readable, and at
worst one torn final line remains, which the reader counts as one bad line.
Rotation and `close()` also fsync the segment; a power failure may lose what the
operating system had not yet written back from the last segment.

The writer is an observer (`raw_messages.subscribe(writer)`), costs about a
microsecond per message (orjson plus a list append) and is not thread-safe: feed
it from one thread, as the sources do.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import BinaryIO, Final, Literal, TypeAlias, cast

import orjson
import zstandard
from reactivex import abc

from operators.events import RawMessage
from pipeline.errors import CaptureError, UsageError

__all__ = [
    "DEFAULT_FLUSH_EVERY",
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_ROTATE_BYTES",
    "CaptureWriter",
    "Compression",
    "capture_segments",
    "segment_path",
]

log = logging.getLogger(__name__)

StrPath: TypeAlias = str | PathLike[str]
Compression: TypeAlias = Literal["gz", "zst"]

DEFAULT_ROTATE_BYTES: Final = 1 << 30
"""A segment holds at most 1 GiB of JSON Lines text."""
DEFAULT_FLUSH_EVERY: Final = 1000
DEFAULT_FLUSH_INTERVAL: Final = 1.0
"""Seconds of receive time between flushes."""

_FORMAT_SUFFIXES: Final = (".jsonl", ".ndjson", ".json")
_COMPRESSION_SUFFIXES: Final[dict[str, Compression]] = {".gz": "gz", ".zst": "zst", ".zstd": "zst"}
_DEFAULT_LEVEL: Final[dict[Compression, int]] = {"gz": 1, "zst": 3}
_APPEND_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE


def _split_name(name: str) -> tuple[str, str]:
    """`capture.jsonl.gz` -> (`capture`, `.jsonl.gz`): the stem and the suffixes a segment keeps."""
    stem, tail = name, ""
    for suffixes in (tuple(_COMPRESSION_SUFFIXES), _FORMAT_SUFFIXES):
        lowered = stem.lower()
        for suffix in suffixes:
            if lowered.endswith(suffix) and len(stem) > len(suffix):
                stem, tail = stem[: -len(suffix)], stem[-len(suffix) :] + tail
                break
    return stem, tail


def segment_path(path: StrPath, index: int) -> Path:
    """The path of segment `index` of the capture at `path` (0 is `path` itself).

    `segment_path("cap.jsonl.zst", 2)` is `cap.0002.jsonl.zst`.
    """
    base = Path(path)
    if index == 0:
        return base
    stem, tail = _split_name(base.name)
    return base.with_name(f"{stem}.{index:04d}{tail}")


def capture_segments(path: StrPath) -> list[Path]:
    """The existing segments of the capture at `path`, in the order they were written."""
    return [p for _, p in _segments(Path(path))]


def _segments(base: Path) -> list[tuple[int, Path]]:
    stem, tail = _split_name(base.name)
    numbered = re.compile(re.escape(stem) + r"\.(\d{4,})" + re.escape(tail))
    found: list[tuple[int, Path]] = [(0, base)] if base.exists() else []
    if base.parent.is_dir():
        for entry in base.parent.iterdir():
            match = numbered.fullmatch(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
    return sorted(found)


def _compression_for(path: Path, compression: Compression | Literal["auto"] | None) -> str:
    implied = _COMPRESSION_SUFFIXES.get(path.suffix.lower())
    if compression == "auto":
        return implied or "none"
    if compression not in (None, "gz", "zst"):
        raise UsageError(f"capture compression must be None, 'gz' or 'zst', not {compression!r}")
    chosen = compression or "none"
    if implied is not None and implied != chosen:
        raise UsageError(
            f"capture {str(path)!r} ends in {path.suffix!r} but compression {compression!r} "
            "was asked for"
        )
    return chosen


class _Segment:
    """One capture file being written: the file and, when compressed, its compressor."""

    def __init__(self, path: Path, compression: str, level: int | None) -> None:
        self.path = path
        # "xb": a segment is always a new file, never someone's earlier capture.
        self.raw = open(path, "xb")  # noqa: SIM115 - closed by close()
        self.stream: BinaryIO = self.raw
        self._sync: Callable[[], object] = _nothing
        if compression == "gz":
            gz = gzip.GzipFile(
                filename="",
                fileobj=self.raw,
                mode="wb",
                compresslevel=_DEFAULT_LEVEL["gz"] if level is None else level,
                mtime=0,
            )
            self.stream = cast(BinaryIO, gz)
            self._sync = gz.flush  # zlib's sync flush: everything so far decodes
        elif compression == "zst":
            zst = zstandard.ZstdCompressor(
                level=_DEFAULT_LEVEL["zst"] if level is None else level
            ).stream_writer(self.raw, closefd=False)
            self.stream = zst
            self._sync = lambda: zst.flush(zstandard.FLUSH_BLOCK)  # ends a block, not the frame

    def write(self, data: bytes) -> None:
        self.stream.write(data)

    def flush(self) -> None:
        self._sync()
        self.raw.flush()

    def close(self) -> None:
        try:
            if self.stream is not self.raw:
                self.stream.close()  # ends the gzip member or zstd frame; leaves `raw` open
            self.raw.flush()
            os.fsync(self.raw.fileno())
        finally:
            self.raw.close()


def _nothing() -> None:
    return None


class CaptureWriter(abc.ObserverBase[RawMessage]):
    """Records every `RawMessage` it is given as a JSON Lines capture (see the module doc).

    Args:
        path: the first segment (its directory is created if missing); later
            ones are numbered beside it.
        rotate_bytes: uncompressed bytes per segment before the next one starts
            (`None`: never rotate).
        compression: `"gz"`, `"zst"`, `None` (plain text), or `"auto"` (from the
            path's suffix: `.gz`, `.zst`/`.zstd`, else plain).
        level: the compressor's level. Unless given, gzip 1 (level 6 costs about
            three times the CPU for files a quarter smaller) and zstd 3 (smaller
            and faster than gzip at any level: the better choice).
        flush_every: messages between flushes at most.
        flush_interval: seconds of receive time between flushes at most.

    Raises:
        UsageError: an option that cannot be used.
        CaptureError: the first segment cannot be created.
    """

    def __init__(
        self,
        path: StrPath,
        *,
        rotate_bytes: int | None = DEFAULT_ROTATE_BYTES,
        compression: Compression | Literal["auto"] | None = "auto",
        level: int | None = None,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
    ) -> None:
        base = Path(path)
        if rotate_bytes is not None and (type(rotate_bytes) is not int or rotate_bytes <= 0):
            raise UsageError(
                f"rotate_bytes must be a positive integer or None, not {rotate_bytes!r}"
            )
        if type(flush_every) is not int or flush_every <= 0:
            raise UsageError(f"flush_every must be a positive integer, not {flush_every!r}")
        if not flush_interval > 0:
            raise UsageError(f"flush_interval must be positive seconds, not {flush_interval!r}")
        if base.is_dir():
            raise CaptureError(f"cannot create capture {str(base)!r}: it is a directory")
        self._base = base
        self._compression = _compression_for(base, compression)
        self._level = level
        self._rotate_bytes = rotate_bytes if rotate_bytes is not None else 1 << 62
        self._flush_every = flush_every
        self._interval_ns = int(flush_interval * 1_000_000_000)
        self._pending: list[bytes] = []
        self._size = 0  # uncompressed bytes of the current segment, pending included
        self._flushed_t = 0
        self._deadline = 0  # so the first message is flushed at once and starts the clock
        self._closed = False
        self.messages = 0
        """Messages recorded so far (all segments)."""
        self.dropped = 0
        """Messages given after `close()`: not recorded."""
        self.paths: list[Path] = []
        """The segments written so far, in order; the last is the one being written."""
        existing = _segments(base)
        self._index = existing[-1][0] + 1 if existing else 0
        self._segment = self._open_segment()

    # ------------------------------------------------------------------ observer

    def on_next(self, value: RawMessage) -> None:
        """Record one message (a `flush` happens when one is due)."""
        if self._closed:
            self._dropped(value)
            return
        if value.kind == "ws":
            try:
                line = orjson.dumps(
                    {"t": value.t, "kind": "ws", "conn": value.conn, "data": value.data},
                    option=_APPEND_NEWLINE,
                )
            except TypeError:
                line = self._line(value)
        else:
            line = self._line(value)
        size = len(line)
        if self._size + size > self._rotate_bytes and self._size:
            self._rotate()
        self._size += size
        pending = self._pending
        pending.append(line)
        self.messages += 1
        t = value.t
        if len(pending) >= self._flush_every or not self._flushed_t <= t < self._deadline:
            self._flush_pending(t)

    write = on_next

    def on_error(self, error: Exception) -> None:
        """The source failed: keep what was recorded (flushed and closed)."""
        log.warning("capture %s: source failed (%s); closing the capture", self._base, error)
        self.close()

    def on_completed(self) -> None:
        """The source ended: flush and close."""
        self.close()

    # ------------------------------------------------------------------ control

    def flush(self) -> None:
        """Hand every recorded message to the operating system (survives a process crash)."""
        if not self._closed:
            self._flush_pending(self._flushed_t)

    def close(self) -> None:
        """Flush, end the current segment properly and fsync it. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._write_pending()
        finally:
            self._segment.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"CaptureWriter({str(self._segment.path)!r}, {state}, messages={self.messages})"

    # ------------------------------------------------------------------ inside

    def _line(self, msg: RawMessage) -> bytes:
        kind = msg.kind
        obj: dict[str, object]
        if kind == "ws":
            obj = {"t": msg.t, "kind": "ws", "conn": msg.conn, "data": msg.data}
        elif kind == "rest":
            obj = {
                "t": msg.t,
                "kind": "rest",
                "method": msg.method,
                "url": msg.url,
                "status": msg.status,
                "data": msg.data,
            }
        elif kind == "open":
            obj = {"t": msg.t, "kind": "open", "conn": msg.conn, "url": msg.url}
        elif kind == "close":
            obj = {
                "t": msg.t,
                "kind": "close",
                "conn": msg.conn,
                "code": msg.status,
                "reason": msg.data,
            }
        else:
            obj = msg._asdict()
        try:
            return orjson.dumps(obj, option=_APPEND_NEWLINE)
        except TypeError:
            return orjson.dumps(_printable(obj), option=_APPEND_NEWLINE)

    def _dropped(self, msg: RawMessage) -> None:
        if not self.dropped:
            log.warning(
                "capture %s is closed: messages from t=%d on are not recorded", self._base, msg.t
            )
        self.dropped += 1

    def _flush_pending(self, t: int) -> None:
        self._write_pending()
        self._segment.flush()
        self._flushed_t = t
        self._deadline = t + self._interval_ns

    def _write_pending(self) -> None:
        if self._pending:
            # One write of whole lines: a crash cannot interleave or split earlier lines.
            self._segment.write(b"".join(self._pending))
            self._pending.clear()

    def _rotate(self) -> None:
        self._write_pending()
        self._segment.close()
        self._index += 1
        self._size = 0
        self._segment = self._open_segment()

    def _open_segment(self) -> _Segment:
        try:
            self._base.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = str(self._base.parent)
            raise CaptureError(f"cannot create capture directory {where!r}: {exc}") from exc
        while True:
            path = segment_path(self._base, self._index)
            try:
                segment = _Segment(path, self._compression, self._level)
            except FileExistsError:
                # Someone else made this segment since we looked: never write over it.
                self._index += 1
                continue
            except OSError as exc:
                raise CaptureError(
                    f"cannot create capture {str(path)!r}: {exc.strerror or exc}"
                ) from exc
            self.paths.append(path)
            return segment


def _printable(obj: dict[str, object]) -> dict[str, object]:
    """`obj` with lone surrogates in its strings replaced: JSON text cannot carry them.

    Sources decode strictly, so this only meets a message built by hand.
    """
    log.warning("capture: a message with text that is not valid Unicode; replacing it")
    return {
        key: value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value
        for key, value in obj.items()
    }
