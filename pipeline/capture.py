"""Read captures: the JSON Lines format of DESIGN.md and cryptofeed's raw recordings.

Every source emits `RawMessage`s, so a replay shares everything after this module
with a live run. Two layouts are recognised by their first non-blank line (never
by the file name), each optionally gzip- or zstd-compressed (recognised by magic
bytes):

- JSON Lines (`{"t": ..., "kind": "ws", "conn": 1, "data": "..."}`), one object a
  line, as written by the capture writer;
- cryptofeed raw recordings: `<url> <-> <seconds>` (a socket opened),
  `<seconds>: <frame>` (a text frame on the last socket opened) and
  `<url> -> <seconds>: <body>` (a REST response; status 200, method GET, the URL
  reduced to path and query). cryptofeed's own `configuration: {...}` line is
  skipped.

Times are converted to integer nanoseconds from the decimal text itself (digits
beyond the ninth decimal are truncated), never through a float.

Every line is accounted for in `LineCounts`: a line is a message, blank, skipped
metadata, or bad. A bad line (not JSON, not an object, a missing or mistyped
field, an unknown kind, an unreadable time prefix, invalid UTF-8) is counted and
logged, never raised. A file that cannot be opened, decompressed or recognised
raises `CaptureError` when it is opened, before any message is emitted; a
compressed stream that breaks off after some lines (a recorder that was killed)
yields what it held and counts the break as one bad line.
"""

from __future__ import annotations

import gzip
import heapq
import io
import logging
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Final, Literal, TypeAlias
from urllib.parse import urlsplit

import orjson
import reactivex
import zstandard
from reactivex import abc
from reactivex.disposable import Disposable
from reactivex.scheduler import HistoricalScheduler

from operators.events import RawMessage
from pipeline.clock import advancer
from pipeline.errors import CaptureError

__all__ = [
    "PLAIN_READ_BUFFER",
    "Capture",
    "CaptureFormat",
    "LineCounts",
    "capture_observable",
    "jsonl_message",
    "merge_messages",
    "open_capture",
    "push_merged",
    "read_capture",
    "seconds_to_ns",
]

log = logging.getLogger(__name__)

StrPath: TypeAlias = str | PathLike[str]
CaptureFormat: TypeAlias = Literal["jsonl", "cryptofeed"]

GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_READ_SIZE: Final = 1 << 16
PLAIN_READ_BUFFER: Final = 1 << 16
"""A plain file's read buffer: at the default 8 KiB, refilling costs ~0.9 µs a line."""
_SNIFF_BYTES: Final = 1 << 16
_MAX_LOGGED_TEXT: Final = 200
_KINDS: Final = frozenset({"ws", "rest", "open", "close"})
_CONFIGURATION: Final = b"configuration: "


@dataclass
class LineCounts:
    """Where every line of the captures went: `lines == messages + blank + skipped + bad`."""

    lines: int = 0
    messages: int = 0
    blank: int = 0
    skipped: int = 0
    """cryptofeed metadata (`configuration: ...`), not exchange traffic."""
    bad: int = 0
    """Lines that could not be read as a message: counted and logged, never emitted."""
    bad_reasons: dict[str, int] = field(default_factory=dict)

    def add_bad(self, where: str, reason: str, text: bytes) -> None:
        self.bad += 1
        self.bad_reasons[reason] = self.bad_reasons.get(reason, 0) + 1
        log.warning("%s: bad capture line (%s): %r", where, reason, text[:_MAX_LOGGED_TEXT])


class _ConnIds:
    """Hands out connection ids unique across the files of one merged read."""

    def __init__(self) -> None:
        self._next = 0

    def new(self) -> int:
        self._next += 1
        return self._next


def seconds_to_ns(text: bytes | str) -> int:
    """Convert decimal seconds (`"1633998274.5036721"`) to integer nanoseconds, exactly.

    Digits beyond the ninth decimal are truncated. Raises `ValueError` for
    anything but digits with at most one decimal point.
    """
    raw = text.encode() if isinstance(text, str) else text
    whole, dot, frac = raw.partition(b".")
    if not whole.isdigit() or (dot and not frac.isdigit()):
        raise ValueError(f"not a decimal number of seconds: {raw[:40]!r}")
    return int(whole) * 1_000_000_000 + (int(frac[:9].ljust(9, b"0")) if frac else 0)


@contextmanager
def _decompressed(path: Path) -> Iterator[tuple[io.BufferedIOBase, str]]:
    """`path` opened for reading decompressed bytes; the compression comes from magic bytes."""
    try:
        # Closed by the `with` below.
        raw = io.BufferedReader(io.FileIO(path, "rb"), buffer_size=PLAIN_READ_BUFFER)
    except OSError as exc:
        raise CaptureError(f"cannot open capture {str(path)!r}: {exc.strerror or exc}") from exc
    with raw:
        try:
            magic = raw.read(4)
            raw.seek(0)
        except OSError as exc:
            raise CaptureError(f"cannot read capture {str(path)!r}: {exc.strerror or exc}") from exc
        if magic.startswith(GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped, "gzip"
        elif magic == ZSTD_MAGIC:
            reader = zstandard.ZstdDecompressor().stream_reader(
                raw, read_size=_READ_SIZE, read_across_frames=True, closefd=False
            )
            with io.BufferedReader(reader, buffer_size=_READ_SIZE) as unzstd:
                yield unzstd, "zstd"
        else:
            yield raw, "none"


_DECOMPRESSION_ERRORS: Final = (OSError, EOFError, zlib.error, zstandard.ZstdError)


class Capture:
    """One capture file, opened and recognised; iterate `messages()` to read it.

    Opening reads up to the first non-blank line, so a file that cannot be opened,
    decompressed or recognised fails here with `CaptureError`, before any replay
    starts. Each call of `messages()` reads the file afresh.
    """

    def __init__(self, path: StrPath) -> None:
        self.path = Path(path)
        with _decompressed(self.path) as (stream, self.compression):
            first = self._first_line(stream)
        self.format: CaptureFormat = self._recognise(first)

    def _first_line(self, stream: io.BufferedIOBase) -> bytes:
        try:
            # Bounded: a binary file without newlines must not be read whole.
            while line := stream.readline(_SNIFF_BYTES):
                if line.strip():
                    return line
        except _DECOMPRESSION_ERRORS as exc:
            raise CaptureError(
                f"cannot decompress capture {str(self.path)!r} ({self.compression}): {exc}"
            ) from exc
        return b""

    def _recognise(self, first: bytes) -> CaptureFormat:
        head = first.lstrip()
        if not head or head.startswith(b"{"):
            # An empty file is an empty JSON Lines capture.
            return "jsonl"
        if _cryptofeed_line_kind(head) is not None:
            return "cryptofeed"
        raise CaptureError(
            f"not a capture {str(self.path)!r}: expected JSON Lines or a cryptofeed "
            f"recording, the first line starts with {head[:60]!r}"
        )

    def messages(
        self, counts: LineCounts | None = None, conn_ids: Callable[[], int] | None = None
    ) -> Generator[RawMessage, None, None]:
        """Yield the file's messages in file order, counting every line in `counts`.

        `conn_ids`, when given, replaces each connection id of the file by a fresh one
        (so ids stay unique across merged files); without it JSON Lines ids are kept
        and cryptofeed sockets are numbered 1, 2, ... in the order they open.
        """
        counts = counts if counts is not None else LineCounts()
        read = _jsonl_messages if self.format == "jsonl" else _cryptofeed_messages
        # One generator from file to message: a `yield from` layer costs ~0.1 µs a line.
        return read((), self.path.name, counts, conn_ids, self.path)

    def push_messages(
        self,
        push: Callable[[RawMessage], object],
        counts: LineCounts | None = None,
        advance: Callable[[int], object] | None = None,
    ) -> None:
        """Call `advance(msg.t)` (when given) then `push(msg)` for each message in file order.

        The same messages, ids and counts as `messages()`, without a generator
        between the file and `push` (for JSON Lines; ~0.5 µs a message less than
        iterating). Whatever `push` or `advance` raises propagates unchanged, and
        the lines read so far are counted in `counts` on the way out.
        """
        counts = counts if counts is not None else LineCounts()
        if self.format == "jsonl":
            _jsonl_push(self.path, counts, push, advance)
            return
        messages = self.messages(counts)
        try:
            for msg in messages:
                if advance is not None:
                    advance(msg.t)
                push(msg)
        finally:
            messages.close()

    def __repr__(self) -> str:
        return f"Capture({str(self.path)!r}, format={self.format}, compression={self.compression})"


def _opened(
    lines: Iterable[bytes], path: Path | None
) -> AbstractContextManager[tuple[Iterable[bytes], str]]:
    return _decompressed(path) if path is not None else nullcontext((lines, "none"))


def _jsonl_messages(
    lines: Iterable[bytes],
    name: str,
    counts: LineCounts,
    conn_ids: Callable[[], int] | None,
    path: Path | None = None,
) -> Generator[RawMessage, None, None]:
    """The messages of JSON Lines `lines` (or of the file at `path`), counted in `counts`."""
    loads = orjson.loads
    new = tuple.__new__
    ids: dict[int, int] = {}
    lineno = 0
    others = 0  # lines of this file that are not messages (blank or bad)
    with _opened(lines, path) as (stream, _):
        try:
            for line in stream:
                lineno += 1
                try:
                    obj = loads(line)
                    t = obj["t"]
                    kind = obj["kind"]
                    if type(t) is not int:
                        raise TypeError(f"'t' must be an integer of nanoseconds, not {t!r}")
                    if kind == "ws":
                        conn = obj["conn"]
                        data = obj["data"]
                        if type(data) is not str or type(conn) is not int:
                            raise TypeError("'ws' needs an integer 'conn' and a string 'data'")
                        if conn_ids is not None:
                            conn = ids.get(conn) or ids.setdefault(conn, conn_ids())
                        # tuple.__new__ skips NamedTuple's Python-level __new__ (~0.1 µs).
                        msg = new(RawMessage, (t, "ws", conn, data, "", 0, ""))
                    else:
                        msg = _jsonl_other(obj, t, kind, ids, conn_ids)
                except orjson.JSONDecodeError:
                    others += 1
                    _jsonl_not_json(counts, f"{name}:{lineno}", line)
                    continue
                except (KeyError, TypeError, ValueError) as exc:
                    others += 1
                    _jsonl_bad(counts, f"{name}:{lineno}", line, obj, exc)
                    continue
                yield msg
        except _DECOMPRESSION_ERRORS as exc:
            lineno += 1
            others += 1
            counts.add_bad(name, f"compressed data breaks off: {exc}", b"")
        finally:
            # Counted once per file rather than per line: this loop is on the hot path.
            counts.lines += lineno
            counts.messages += lineno - others


def _jsonl_push(
    path: Path,
    counts: LineCounts,
    push: Callable[[RawMessage], object],
    advance: Callable[[int], object] | None,
) -> None:
    """`_jsonl_messages` of the file at `path` (ids kept), each passed to `push`.

    The loop of `_jsonl_messages` with `advance(t); push(msg)` in place of the
    `yield`: keep the two in step (the tests compare them on every kind of line).
    """
    name = path.name
    loads = orjson.loads
    new = tuple.__new__
    ids: dict[int, int] = {}
    lineno = 0
    others = 0
    # Set while `advance`/`push` run, so that an OSError of theirs is not taken for
    # a broken compressed stream (a generator never sees its consumer's errors).
    pushing = False
    with _decompressed(path) as (stream, _):
        try:
            for line in stream:
                lineno += 1
                try:
                    obj = loads(line)
                    t = obj["t"]
                    kind = obj["kind"]
                    if type(t) is not int:
                        raise TypeError(f"'t' must be an integer of nanoseconds, not {t!r}")
                    if kind == "ws":
                        conn = obj["conn"]
                        data = obj["data"]
                        if type(data) is not str or type(conn) is not int:
                            raise TypeError("'ws' needs an integer 'conn' and a string 'data'")
                        msg = new(RawMessage, (t, "ws", conn, data, "", 0, ""))
                    else:
                        msg = _jsonl_other(obj, t, kind, ids, None)
                except orjson.JSONDecodeError:
                    others += 1
                    _jsonl_not_json(counts, f"{name}:{lineno}", line)
                    continue
                except (KeyError, TypeError, ValueError) as exc:
                    others += 1
                    _jsonl_bad(counts, f"{name}:{lineno}", line, obj, exc)
                    continue
                pushing = True
                if advance is not None:
                    advance(t)
                push(msg)
                pushing = False
        except _DECOMPRESSION_ERRORS as exc:
            if pushing:
                raise
            lineno += 1
            others += 1
            counts.add_bad(name, f"compressed data breaks off: {exc}", b"")
        finally:
            counts.lines += lineno
            counts.messages += lineno - others


def _jsonl_not_json(counts: LineCounts, where: str, line: bytes) -> None:
    if not line.strip():
        counts.blank += 1
    else:
        counts.add_bad(where, "invalid JSON", line)


def _jsonl_bad(counts: LineCounts, where: str, line: bytes, obj: object, exc: Exception) -> None:
    if type(obj) is not dict:
        reason = f"a capture line must be a JSON object, not {type(obj).__name__}"
    elif isinstance(exc, KeyError):
        reason = f"missing field {exc}"
    else:
        reason = str(exc)
    counts.add_bad(where, reason, line)


def jsonl_message(
    line: bytes, counts: LineCounts | None = None, where: str = "<line>"
) -> RawMessage | None:
    """The message of one JSON Lines capture line, or None for a blank or bad line.

    The line is counted in `counts` exactly as a file reader counts it (a bad
    line is also logged, as `where:1`). Connection ids are kept as written.
    Meant for tools that read captures a line at a time; reading a whole file
    through `read_capture` costs less per line.
    """
    counts = counts if counts is not None else LineCounts()
    messages = _jsonl_messages((line,), where, counts, None)
    try:
        return next(messages, None)
    finally:
        messages.close()  # counts the line now, not when the generator is collected


def _jsonl_other(
    obj: dict[str, object],
    t: int,
    kind: object,
    ids: dict[int, int],
    conn_ids: Callable[[], int] | None,
) -> RawMessage:
    """The rarer kinds, checked field by field (kept off the `ws` fast path)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if kind == "rest":
        url, data = obj["url"], obj["data"]
        status, method = obj.get("status", 200), obj.get("method", "GET")
        if type(url) is not str or type(data) is not str:
            raise TypeError("'rest' needs a string 'url' and a string 'data'")
        if type(status) is not int or type(method) is not str:
            raise TypeError("'rest' needs an integer 'status' and a string 'method'")
        return RawMessage(t, "rest", 0, data, url, status, method)
    conn = obj["conn"]
    if type(conn) is not int:
        raise TypeError(f"'conn' must be an integer, not {conn!r}")
    if conn_ids is not None:
        conn = ids.get(conn) or ids.setdefault(conn, conn_ids())
    if kind == "open":
        url = obj.get("url", "")
        if type(url) is not str:
            raise TypeError(f"'url' must be a string, not {url!r}")
        return RawMessage(t, "open", conn, "", url)
    code, reason = obj.get("code", 0), obj.get("reason", "")
    if type(code) is not int or type(reason) is not str:
        raise TypeError("'close' needs an integer 'code' and a string 'reason'")
    return RawMessage(t, "close", conn, reason, "", code)


def _cryptofeed_line_kind(line: bytes) -> str | None:
    """`ws`, `open`, `rest` or `skip` for a cryptofeed line, None if it is none of them."""
    if line[:1].isdigit():
        sep = line.find(b": ")
        return "ws" if sep > 0 else None
    if line.startswith((b"ws://", b"wss://")) and b" <-> " in line:
        return "open"
    if line.startswith((b"http://", b"https://")) and b" -> " in line:
        return "rest"
    if line.startswith(_CONFIGURATION):
        return "skip"
    return None


def _cryptofeed_messages(
    lines: Iterable[bytes],
    name: str,
    counts: LineCounts,
    conn_ids: Callable[[], int] | None,
    path: Path | None = None,
) -> Generator[RawMessage, None, None]:
    """The messages of cryptofeed `lines` (or of the file at `path`), counted in `counts`."""
    new = tuple.__new__
    conn = 0
    opened = 0
    lineno = 0
    with _opened(lines, path) as (stream, _):
        try:
            for line in stream:
                lineno += 1
                body = line.rstrip(b"\r\n")
                if not body.strip():
                    counts.blank += 1
                    continue
                try:
                    if body[:1].isdigit():
                        # The hot path: one text frame on the socket opened last.
                        sep = body.find(b": ")
                        if sep < 0:
                            raise ValueError("no '<seconds>: ' prefix")
                        if not conn:
                            raise ValueError("a frame before any '<url> <-> <seconds>' line")
                        stamp = seconds_to_ns(body[:sep])
                        # tuple.__new__ skips NamedTuple's Python-level __new__ (~0.2 µs).
                        msg = new(
                            RawMessage, (stamp, "ws", conn, body[sep + 2 :].decode(), "", 0, "")
                        )
                    else:
                        kind = _cryptofeed_line_kind(body)
                        if kind == "open":
                            url, _, stamp_text = body.rpartition(b" <-> ")
                            opened += 1
                            conn = conn_ids() if conn_ids is not None else opened
                            stamp = seconds_to_ns(stamp_text.strip())
                            msg = RawMessage(stamp, "open", conn, "", url.decode())
                        elif kind == "rest":
                            msg = _cryptofeed_rest(body)
                        elif kind == "skip":
                            counts.skipped += 1
                            continue
                        else:
                            raise ValueError("not a cryptofeed line")
                except (ValueError, UnicodeDecodeError) as exc:
                    counts.add_bad(f"{name}:{lineno}", str(exc), body)
                    continue
                counts.messages += 1
                yield msg
        except _DECOMPRESSION_ERRORS as exc:
            lineno += 1
            counts.add_bad(name, f"compressed data breaks off: {exc}", b"")
        finally:
            counts.lines += lineno


def _cryptofeed_rest(body: bytes) -> RawMessage:
    url, sep, rest = body.partition(b" -> ")
    stamp, sep2, payload = rest.partition(b": ")
    if not sep or not sep2:
        raise ValueError("no '<url> -> <seconds>: ' prefix")
    parts = urlsplit(url.decode())
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return RawMessage(seconds_to_ns(stamp), "rest", 0, payload.decode(), path, 200, "GET")


def open_capture(path: StrPath) -> Capture:
    """Open and recognise one capture (raises `CaptureError` if it cannot be read)."""
    return Capture(path)


def read_capture(path: StrPath, counts: LineCounts | None = None) -> Iterator[RawMessage]:
    """Yield the messages of one capture file in file order.

    Raises `CaptureError` at once (not at the first `next`) if the file cannot be
    opened, decompressed or recognised.
    """
    return Capture(path).messages(counts)


def merge_messages(
    captures: Sequence[Capture], counts: LineCounts | None = None
) -> Iterator[RawMessage]:
    """Merge captures by receive time; ties keep the order of `captures`, then file order.

    With more than one file, connection ids are renumbered so they never collide.
    """
    if len(captures) == 1:
        return captures[0].messages(counts)
    ids = _ConnIds()
    streams = [c.messages(counts, ids.new) for c in captures]
    return heapq.merge(*streams, key=_receive_time)


def push_merged(
    captures: Sequence[Capture],
    push: Callable[[RawMessage], object],
    counts: LineCounts | None = None,
    advance: Callable[[int], object] | None = None,
) -> None:
    """`merge_messages(captures, counts)`, each message passed to `advance(msg.t)` then `push`.

    A single capture is read without a generator in between (`Capture.push_messages`).
    Whatever `push` or `advance` raises propagates; the lines read so far are
    counted in `counts` either way.
    """
    if len(captures) == 1:
        captures[0].push_messages(push, counts, advance)
        return
    ids = _ConnIds()
    streams = [c.messages(counts, ids.new) for c in captures]
    try:
        for msg in heapq.merge(*streams, key=_receive_time):
            if advance is not None:
                advance(msg.t)
            push(msg)
    finally:
        # Closing the readers settles their line counts even when interrupted.
        for stream in streams:
            stream.close()


def _receive_time(msg: RawMessage) -> int:
    return msg.t


def capture_observable(
    paths: StrPath | Sequence[StrPath],
    scheduler: HistoricalScheduler | None = None,
    counts: LineCounts | None = None,
) -> reactivex.Observable[RawMessage]:
    """An observable of the captures' messages, merged by receive time.

    Every file is opened and recognised now (`CaptureError` otherwise); each
    subscription reads the files afresh and emits synchronously. With a
    `HistoricalScheduler`, its clock is advanced to each message's receive time
    before the message is emitted, so time-based operators run on the capture's
    clock (it never moves backwards: an earlier time leaves it where it is).
    """
    if isinstance(paths, str | PathLike):
        paths = [paths]
    if not paths:
        raise CaptureError("no capture given")
    captures = [Capture(p) for p in paths]

    def subscribe(
        observer: abc.ObserverBase[RawMessage], _: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        # A replay runs to the end of its captures: the whole read happens inside
        # subscribe, as `reactivex.from_iterable` does on the current thread.
        advance = advancer(scheduler) if scheduler is not None else None
        push_merged(captures, observer.on_next, counts, advance)
        observer.on_completed()
        return Disposable()

    return reactivex.create(subscribe)
