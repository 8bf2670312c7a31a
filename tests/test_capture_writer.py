"""`CaptureWriter`: what it writes is exactly what `pipeline.capture` reads back."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import reactivex
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.events import RawMessage
from pipeline.capture import LineCounts, read_capture
from pipeline.errors import CaptureError, UsageError
from sinks.capture_writer import CaptureWriter, capture_segments, segment_path

REPO = Path(__file__).resolve().parents[1]
T0 = 1_732_600_000_123_456_789
COMPRESSIONS = [None, "gz", "zst"]
SUFFIX = {None: ".jsonl", "gz": ".jsonl.gz", "zst": ".jsonl.zst"}


def sample() -> list[RawMessage]:
    """Every kind, with the awkward text replay must survive."""
    return [
        RawMessage(
            T0, "open", 1, url="wss://stream.binance.us:9443/stream?streams=hbarusdt@kline_1m"
        ),
        RawMessage(T0 + 1, "ws", 1, '{"stream":"hbarusdt@kline_1m","data":{"k":{"x":true}}}'),
        RawMessage(T0 + 2, "ws", 1, '{"stream":"hbarusdt@depth20@100ms","data":{"bids":[['),
        RawMessage(T0 + 3, "ws", 1, "not json at all \\ \" ' \t"),
        RawMessage(T0 + 4, "ws", 1, "line one\nline two\r\n\u2028\u2029\x00\x1f"),
        RawMessage(T0 + 5, "ws", 1, "unicode: é ü 漢字 🚀 \U0010ffff"),
        RawMessage(T0 + 6, "ws", 1, ""),
        RawMessage(
            T0 + 7,
            "rest",
            0,
            '[[1732600020000,"0.07"]]',
            "/api/v3/klines?symbol=HBARUSDT&interval=1h&limit=73",
            200,
            "GET",
        ),
        RawMessage(
            T0 + 8,
            "rest",
            0,
            '{"code": -1121, "msg": "Invalid symbol."}',
            "/api/v3/depth?symbol=NOPE",
            400,
            "GET",
        ),
        RawMessage(T0 + 9, "close", 1, "abnormal closure", "", 1006),
        RawMessage(T0 + 10, "open", 2, url="wss://x/ws"),
        RawMessage(T0 + 11, "close", 2, "", "", 1000),
    ]


def read_all(path: Path, counts: LineCounts | None = None) -> list[RawMessage]:
    return [m for segment in capture_segments(path) for m in read_capture(segment, counts)]


def write(path: Path, messages: list[RawMessage], **options: object) -> CaptureWriter:
    with CaptureWriter(path, **options) as writer:  # type: ignore[arg-type]
        for msg in messages:
            writer.on_next(msg)
    return writer


# ---------------------------------------------------------------- the format


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_every_kind_round_trips(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / f"capture{SUFFIX[compression]}"
    messages = sample()
    write(path, messages, compression=compression)
    counts = LineCounts()
    assert list(read_capture(path, counts)) == messages
    assert (counts.lines, counts.bad) == (len(messages), 0)


def test_each_kind_writes_the_keys_of_design_md(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    write(path, sample())
    lines = path.read_bytes().splitlines()
    keys = {orjson.loads(line)["kind"]: list(orjson.loads(line)) for line in lines}
    assert keys == {
        "open": ["t", "kind", "conn", "url"],
        "ws": ["t", "kind", "conn", "data"],
        "rest": ["t", "kind", "method", "url", "status", "data"],
        "close": ["t", "kind", "conn", "code", "reason"],
    }
    close = orjson.loads(lines[9])
    assert (close["code"], close["reason"]) == (1006, "abnormal closure")
    # One object a line, newline-terminated: the text's own newlines are escaped.
    assert path.read_bytes().count(b"\n") == len(sample())


def test_malformed_text_is_kept_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    broken = ['{"stream":"x","data":{', "}{", '"unterminated', "\\u12", "[1,2,,]", "\ufeff{}"]
    messages = [RawMessage(T0 + i, "ws", 3, text) for i, text in enumerate(broken)]
    write(path, messages)
    assert [m.data for m in read_capture(path)] == broken


text = st.text(st.characters(codec="utf-8"), max_size=40)
ids = st.integers(0, 2**31)
times = st.integers(0, 2**63 - 1)
messages_strategy = st.lists(
    st.one_of(
        st.builds(lambda t, c, d: RawMessage(t, "ws", c, d), times, ids, text),
        st.builds(lambda t, c, u: RawMessage(t, "open", c, "", u), times, ids, text),
        st.builds(
            lambda t, d, u, s, m: RawMessage(t, "rest", 0, d, u, s, m),
            times,
            text,
            text,
            st.integers(100, 599),
            st.sampled_from(["GET", "POST"]),
        ),
        st.builds(lambda t, c, r, k: RawMessage(t, "close", c, r, "", k), times, ids, text, ids),
    ),
    max_size=30,
)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=messages_strategy)
def test_any_messages_round_trip(
    tmp_path: Path, compression: str | None, messages: list[RawMessage]
) -> None:
    path = tmp_path / f"c{len(list(tmp_path.iterdir()))}{SUFFIX[compression]}"
    write(path, messages, compression=compression, rotate_bytes=300)
    assert read_all(path) == messages


def test_text_that_is_not_unicode_does_not_stop_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    # Sources decode strictly; only a hand-built message can hold a lone surrogate.
    write(path, [RawMessage(T0, "ws", 1, "a\ud800b"), RawMessage(T0 + 1, "ws", 1, "ok")])
    assert [m.data for m in read_capture(path)] == ["a?b", "ok"]


def test_an_unknown_kind_is_recorded_whole_and_read_as_bad(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    write(path, [RawMessage(T0, "ping", 1, "x"), RawMessage(T0 + 1, "ws", 1, "y")])
    assert orjson.loads(path.read_bytes().splitlines()[0])["kind"] == "ping"
    counts = LineCounts()
    assert [m.data for m in read_capture(path, counts)] == ["y"]
    assert counts.bad == 1


# ---------------------------------------------------------------- compression


@pytest.mark.parametrize(
    ("name", "magic"),
    [("c.jsonl", b"{"), ("c.jsonl.gz", b"\x1f\x8b"), ("c.jsonl.zst", b"\x28\xb5\x2f\xfd")],
)
def test_compression_follows_the_suffix_by_default(tmp_path: Path, name: str, magic: bytes) -> None:
    write(tmp_path / name, sample())
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert read_all(tmp_path / name) == sample()


def test_compressed_files_are_standard_streams(tmp_path: Path) -> None:
    write(tmp_path / "c.jsonl.gz", sample())
    write(tmp_path / "c.jsonl.zst", sample())
    write(tmp_path / "c.jsonl", sample())
    plain = (tmp_path / "c.jsonl").read_bytes()
    assert gzip.decompress((tmp_path / "c.jsonl.gz").read_bytes()) == plain
    zst = (tmp_path / "c.jsonl.zst").read_bytes()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zst) == plain


def test_explicit_compression_overrides_a_plain_name(tmp_path: Path) -> None:
    write(tmp_path / "capture", sample(), compression="zst")
    assert (tmp_path / "capture").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert read_all(tmp_path / "capture") == sample()


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("c.jsonl.gz", {"compression": "zst"}, "ends in '.gz'"),
        ("c.jsonl.gz", {"compression": None}, "ends in '.gz'"),
        ("c.jsonl", {"compression": "bz2"}, "'bz2'"),
        ("c.jsonl", {"rotate_bytes": 0}, "rotate_bytes must be"),
        ("c.jsonl", {"flush_every": 0}, "flush_every must be"),
        ("c.jsonl", {"flush_interval": 0.0}, "flush_interval must be"),
    ],
)
def test_bad_options_say_what_was_wrong(
    tmp_path: Path, name: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        CaptureWriter(tmp_path / name, **options)  # type: ignore[arg-type]
    assert not (tmp_path / name).exists()


def test_a_missing_directory_is_created(tmp_path: Path) -> None:
    write(tmp_path / "new" / "dir" / "c.jsonl", sample())
    assert read_all(tmp_path / "new" / "dir" / "c.jsonl") == sample()


def test_a_capture_that_cannot_be_created_is_a_capture_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CaptureError, match=r"cannot create capture .*file"):
        CaptureWriter(tmp_path / "file" / "c.jsonl")
    with pytest.raises(CaptureError, match="it is a directory"):
        CaptureWriter(tmp_path)


# ---------------------------------------------------------------- rotation


def line_sizes(messages: list[RawMessage]) -> list[int]:
    return [len(orjson.dumps(o)) + 1 for o in (_as_object(m) for m in messages)]


def _as_object(msg: RawMessage) -> dict[str, object]:
    if msg.kind == "ws":
        return {"t": msg.t, "kind": "ws", "conn": msg.conn, "data": msg.data}
    if msg.kind == "open":
        return {"t": msg.t, "kind": "open", "conn": msg.conn, "url": msg.url}
    if msg.kind == "close":
        return {
            "t": msg.t,
            "kind": "close",
            "conn": msg.conn,
            "code": msg.status,
            "reason": msg.data,
        }
    return {"t": msg.t, "kind": "rest", "method": msg.method, "url": msg.url,
            "status": msg.status, "data": msg.data}  # fmt: skip


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_segment_ends_where_the_next_line_would_not_fit(
    tmp_path: Path, compression: str | None
) -> None:
    messages = sample()
    sizes = line_sizes(messages)
    limit = sum(sizes[:3])  # exactly three lines fit the first segment
    path = tmp_path / f"capture{SUFFIX[compression]}"
    writer = write(path, messages, rotate_bytes=limit)
    # Greedy: each segment takes lines while they fit.
    expected: list[list[RawMessage]] = [[]]
    used = 0
    for msg, size in zip(messages, sizes, strict=True):
        if used + size > limit and used:
            expected.append([])
            used = 0
        expected[-1].append(msg)
        used += size
    assert len(expected[0]) == 3
    assert writer.paths == capture_segments(path)
    assert writer.paths == [segment_path(path, i) for i in range(len(expected))]
    # Every segment stands alone: read each by itself.
    assert [list(read_capture(p)) for p in writer.paths] == expected
    for segment in writer.paths:
        raw = segment.read_bytes()
        if compression == "gz":
            raw = gzip.decompress(raw)
        elif compression == "zst":
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        assert len(raw) <= limit


def test_segment_names_keep_the_suffixes(tmp_path: Path) -> None:
    assert segment_path(tmp_path / "capture.jsonl", 1).name == "capture.0001.jsonl"
    assert segment_path(tmp_path / "cap.2026-11-26.jsonl.zst", 12).name == (
        "cap.2026-11-26.0012.jsonl.zst"
    )
    assert segment_path(tmp_path / "recording", 3).name == "recording.0003"
    assert segment_path(tmp_path / "c.jsonl.gz", 0).name == "c.jsonl.gz"


def test_a_line_longer_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    big = RawMessage(T0 + 1, "ws", 1, "x" * 500)
    messages = [RawMessage(T0, "ws", 1, "a"), big, RawMessage(T0 + 2, "ws", 1, "b")]
    writer = write(tmp_path / "c.jsonl", messages, rotate_bytes=100)
    assert [list(read_capture(p)) for p in writer.paths] == [[m] for m in messages]


def test_an_existing_capture_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.zst"
    first = write(path, sample()[:5], rotate_bytes=200)
    second = write(path, sample()[5:])
    assert len(first.paths) > 1
    assert second.paths[0] == segment_path(path, len(first.paths))
    assert read_all(path) == sample()


# ---------------------------------------------------------------- as an observer


def test_subscribing_records_the_stream_and_completion_closes(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    writer = CaptureWriter(path)
    reactivex.from_iterable(sample()).subscribe(writer)
    assert writer.closed
    assert writer.messages == len(sample())
    assert read_all(path) == sample()


def test_a_failing_source_keeps_what_was_recorded(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.zst"
    writer = CaptureWriter(path)
    source = reactivex.concat(
        reactivex.from_iterable(sample()[:4]), reactivex.throw(RuntimeError("socket gone"))
    )
    source.subscribe(writer)
    assert writer.closed
    assert read_all(path) == sample()[:4]


def test_close_is_idempotent_and_later_messages_are_counted_not_written(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    writer = CaptureWriter(path)
    writer.on_next(sample()[0])
    writer.close()
    writer.close()
    writer.on_next(sample()[1])
    writer.flush()
    writer.on_completed()
    assert (writer.messages, writer.dropped) == (1, 1)
    assert read_all(path) == sample()[:1]


# ---------------------------------------------------------------- flushing and crashes


def ws(i: int, spacing_ns: int = 1000) -> RawMessage:
    return RawMessage(T0 + i * spacing_ns, "ws", 1, f'{{"i":{i},"p":"0.0{i % 97}"}}')


def on_disk(path: Path) -> list[RawMessage]:
    """What a reader sees now, while the writer is still open."""
    return list(read_capture(path, LineCounts()))


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_flushes_every_n_messages(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / f"c{SUFFIX[compression]}"
    messages = [ws(i) for i in range(25)]
    with CaptureWriter(path, flush_every=10) as writer:
        for msg in messages:
            writer.on_next(msg)
        # The first message flushes at once (it starts the clock), then every 10th.
        assert on_disk(path) == messages[:21]
        writer.flush()
        assert on_disk(path) == messages


def test_flushes_after_an_interval_of_receive_time(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    second = 1_000_000_000
    with CaptureWriter(path, flush_every=1000, flush_interval=2.0) as writer:
        writer.on_next(ws(0))  # starts the clock
        for i in range(1, 4):
            writer.on_next(ws(i, spacing_ns=second // 2))  # 1.5 s of receive time
        assert len(on_disk(path)) == 1
        writer.on_next(ws(4, spacing_ns=second // 2))  # 2 s after the last flush
        assert len(on_disk(path)) == 5
        # A clock that steps back (merged captures) flushes rather than waiting for it.
        writer.on_next(RawMessage(T0 - second, "ws", 1, "earlier"))
        assert len(on_disk(path)) == 6


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_flush_torn_at_any_byte_loses_only_that_flush(
    tmp_path: Path, compression: str | None
) -> None:
    path = tmp_path / f"c{SUFFIX[compression]}"
    first, second = [ws(i) for i in range(20)], [ws(i) for i in range(20, 40)]
    writer = CaptureWriter(path, flush_every=1 << 30, flush_interval=1e9)
    for msg in first:
        writer.on_next(msg)
    writer.flush()
    flushed = path.read_bytes()
    for msg in second:
        writer.on_next(msg)
    writer.flush()
    whole = path.read_bytes()
    writer.close()
    assert whole.startswith(flushed)
    # A crash during the second flush's write leaves any prefix of its bytes on disk.
    torn = tmp_path / f"torn{SUFFIX[compression]}"
    for cut in range(len(flushed), len(whole) + 1):
        torn.write_bytes(whole[:cut])
        counts = LineCounts()
        got = list(read_capture(torn, counts))
        assert got[: len(first)] == first
        assert got == (first + second)[: len(got)]
        assert counts.bad <= 1


CHILD = textwrap.dedent(
    """
    import sys
    from operators.events import RawMessage
    from sinks.capture_writer import CaptureWriter

    path, compression = sys.argv[1], sys.argv[2]
    writer = CaptureWriter(
        path, compression=None if compression == "none" else compression,
        rotate_bytes=40_000, flush_every=1 << 30, flush_interval=1e9,
    )
    for i in range(10**9):
        kind = ("ws", "ws", "ws", "rest")[i % 4]
        writer.on_next(RawMessage(1_000_000 + i, kind, 1 if kind == "ws" else 0,
                                  f'{{"i":{i},"text":"é漢🚀{"x" * (i % 300)}"}}',
                                  "/api/v3/x" if kind == "rest" else "",
                                  200 if kind == "rest" else 0,
                                  "GET" if kind == "rest" else ""))
        if i % 97 == 96:
            writer.flush()
            print(i + 1, flush=True)
    """
)


def expected_child_messages(n: int) -> Iterator[RawMessage]:
    for i in range(n):
        kind = ("ws", "ws", "ws", "rest")[i % 4]
        yield RawMessage(
            1_000_000 + i, kind, 1 if kind == "ws" else 0,
            f'{{"i":{i},"text":"é漢🚀{"x" * (i % 300)}"}}',
            "/api/v3/x" if kind == "rest" else "",
            200 if kind == "rest" else 0,
            "GET" if kind == "rest" else "",
        )  # fmt: skip


@pytest.mark.parametrize("compression", ["none", "gz", "zst"])
@pytest.mark.parametrize("acks", [3, 40])
def test_sigkill_loses_only_the_unflushed_tail(tmp_path: Path, compression: str, acks: int) -> None:
    path = tmp_path / f"c{SUFFIX[None if compression == 'none' else compression]}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), compression],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    flushed = 0
    for _ in range(acks):
        flushed = int(child.stdout.readline())
    # Killed wherever it is: most likely mid-message or mid-write.
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    counts = LineCounts()
    got = read_all(path, counts)
    assert len(got) >= flushed
    assert got == list(expected_child_messages(len(got)))
    assert counts.bad <= 1  # at most the one torn final line
    segments = capture_segments(path)
    assert len(segments) >= 1
    for closed in segments[:-1]:  # every rotated segment is complete
        one = LineCounts()
        list(read_capture(closed, one))
        assert one.bad == 0
