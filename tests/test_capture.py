"""The capture reader: every format and compression, exact times, merging, bad input, errors."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import zstandard
from capture_builders import REAL, needs_real
from reactivex.scheduler import HistoricalScheduler

from operators.events import RawMessage
from pipeline.capture import (
    LineCounts,
    capture_observable,
    merge_messages,
    open_capture,
    read_capture,
    seconds_to_ns,
)
from pipeline.clock import ReplayScheduler, ns_to_datetime
from pipeline.errors import CaptureError

T0 = 1_732_600_000_123_456_789

RECORDS: list[dict[str, object]] = [
    {"t": T0, "kind": "open", "conn": 1, "url": "wss://stream.binance.us:9443/stream?streams=a"},
    {"t": T0 + 1, "kind": "ws", "conn": 1, "data": '{"stream":"a","data":{}}'},
    {
        "t": T0 + 2,
        "kind": "rest",
        "method": "GET",
        "url": "/api/v3/klines?symbol=HBARUSDT&interval=1h&limit=72",
        "status": 200,
        "data": "[]",
    },
    {"t": T0 + 3, "kind": "close", "conn": 1, "code": 1006, "reason": "abnormal closure"},
]
EXPECTED = [
    RawMessage(T0, "open", 1, "", "wss://stream.binance.us:9443/stream?streams=a"),
    RawMessage(T0 + 1, "ws", 1, '{"stream":"a","data":{}}'),
    RawMessage(
        T0 + 2, "rest", 0, "[]", "/api/v3/klines?symbol=HBARUSDT&interval=1h&limit=72", 200, "GET"
    ),
    RawMessage(T0 + 3, "close", 1, "abnormal closure", "", 1006),
]


def jsonl(records: Sequence[Mapping[str, object]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def write(path: Path, data: bytes, compression: str = "none") -> Path:
    if compression == "gzip":
        data = gzip.compress(data)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1633998274.5036721", 1_633_998_274_503_672_100),
        ("1633998274.865238", 1_633_998_274_865_238_000),
        ("1633998274", 1_633_998_274_000_000_000),
        ("0.000000001", 1),
        ("1.0000000019", 1_000_000_001),  # beyond ns: truncated, never rounded
        ("1681154040.3143198", 1_681_154_040_314_319_800),
    ],
)
def test_seconds_to_ns_is_exact(text: str, ns: int) -> None:
    assert seconds_to_ns(text) == ns
    assert seconds_to_ns(text.encode()) == ns


def test_seconds_to_ns_differs_from_float_rounding() -> None:
    # The reason for parsing the text: a float loses the last digits.
    assert int(float("1633998274.5036721") * 1e9) != seconds_to_ns("1633998274.5036721")


@pytest.mark.parametrize("text", ["", ".5", "1.", "1e5", "-1.5", "1.2.3", " 1.5", "nan", "1,5"])
def test_seconds_to_ns_rejects_non_decimals(text: str) -> None:
    with pytest.raises(ValueError, match="decimal number of seconds"):
        seconds_to_ns(text)


# ---------------------------------------------------------------- JSON Lines


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".bin"])
def test_jsonl_any_compression_by_magic_bytes(
    tmp_path: Path, compression: str, suffix: str
) -> None:
    # The suffix says nothing: `.gz` may be plain and `.jsonl` compressed.
    path = write(tmp_path / f"capture{suffix}", jsonl(RECORDS), compression)
    capture = open_capture(path)
    assert capture.format == "jsonl"
    assert capture.compression == compression
    counts = LineCounts()
    assert list(read_capture(path, counts)) == EXPECTED
    assert counts == LineCounts(lines=4, messages=4)


def test_zstd_with_several_frames(tmp_path: Path) -> None:
    # A recorder that flushes writes one zstd frame per flush.
    compressor = zstandard.ZstdCompressor()
    data = b"".join(compressor.compress(jsonl([r])) for r in RECORDS)
    assert list(read_capture(write(tmp_path / "c.zst", data))) == EXPECTED


def test_concatenated_gzip_members(tmp_path: Path) -> None:
    data = b"".join(gzip.compress(jsonl([r])) for r in RECORDS)
    assert list(read_capture(write(tmp_path / "c.gz", data))) == EXPECTED


def test_rest_defaults_and_close_without_reason(tmp_path: Path) -> None:
    records: list[dict[str, object]] = [
        {"t": 5, "kind": "rest", "url": "/api/v3/depth?symbol=X", "data": "{}"},
        {"t": 6, "kind": "close", "conn": 3},
        {"t": 7, "kind": "open", "conn": 3},
    ]
    assert list(read_capture(write(tmp_path / "c.jsonl", jsonl(records)))) == [
        RawMessage(5, "rest", 0, "{}", "/api/v3/depth?symbol=X", 200, "GET"),
        RawMessage(6, "close", 3, "", "", 0),
        RawMessage(7, "open", 3, "", ""),
    ]


def test_every_bad_line_is_counted_and_skipped(tmp_path: Path) -> None:
    good = jsonl(RECORDS[1:2])
    lines = [
        good,
        b"\n",
        b"   \n",
        b"not json at all\n",
        b"[1, 2, 3]\n",
        b'{"kind": "ws", "conn": 1, "data": "x"}\n',
        b'{"t": 1.5, "kind": "ws", "conn": 1, "data": "x"}\n',
        b'{"t": true, "kind": "ws", "conn": 1, "data": "x"}\n',
        b'{"t": 1, "kind": "telepathy", "conn": 1}\n',
        b'{"t": 1, "kind": "ws", "conn": 1, "data": 42}\n',
        b'{"t": 1, "kind": "ws", "conn": "1", "data": "x"}\n',
        b'{"t": 1, "kind": "rest", "url": 7, "data": "x"}\n',
        b'{"t": 1, "kind": "close", "conn": 1, "code": "1006"}\n',
        good,
        b'{"t": 1, "kind": "ws", "conn": 1, "data": "x"',  # cut short, no newline
    ]
    path = write(tmp_path / "c.jsonl", b"".join(lines))
    counts = LineCounts()
    messages = list(read_capture(path, counts))
    assert messages == [EXPECTED[1], EXPECTED[1]]
    assert (counts.lines, counts.messages, counts.blank, counts.bad) == (15, 2, 2, 11)
    assert counts.lines == counts.messages + counts.blank + counts.skipped + counts.bad
    assert counts.bad_reasons["invalid JSON"] == 2
    assert "unknown kind 'telepathy'" in counts.bad_reasons
    assert "a capture line must be a JSON object, not list" in counts.bad_reasons


def test_a_bad_line_never_stops_the_file(tmp_path: Path) -> None:
    data = jsonl(RECORDS[:1]) + b"\x00\xff garbage\n" + jsonl(RECORDS[1:])
    counts = LineCounts()
    assert list(read_capture(write(tmp_path / "c.jsonl", data), counts)) == EXPECTED
    assert counts.bad == 1


def test_the_first_line_decides_the_format(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="not a capture"):
        open_capture(write(tmp_path / "c.jsonl", b"\x00\xff garbage\n" + jsonl(RECORDS)))


def test_truncated_gzip_yields_what_it_holds(tmp_path: Path) -> None:
    data = gzip.compress(jsonl(RECORDS * 50))
    path = write(tmp_path / "cut.jsonl.gz", data[: len(data) // 2])
    counts = LineCounts()
    messages = list(read_capture(path, counts))
    assert 0 < len(messages) < 200
    assert counts.bad == 1
    assert any("breaks off" in reason for reason in counts.bad_reasons)
    assert counts.lines == counts.messages + counts.blank + counts.skipped + counts.bad


def test_empty_file_is_an_empty_capture(tmp_path: Path) -> None:
    assert list(read_capture(write(tmp_path / "empty.jsonl", b""))) == []
    assert list(read_capture(write(tmp_path / "empty.gz", b"", "gzip"))) == []


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"cannot open capture .*nope\.jsonl"):
        open_capture(tmp_path / "nope.jsonl")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open capture"):
        read_capture(tmp_path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage" * 10)
    with pytest.raises(CaptureError, match=r"cannot decompress capture .*c\.jsonl\.gz.*gzip"):
        open_capture(path)


def test_corrupt_zstd(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl.zst", b"\x28\xb5\x2f\xfd" + b"\xff" * 40)
    with pytest.raises(CaptureError, match=r"cannot decompress.*zstd"):
        open_capture(path)


def test_unrecognised_content(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.txt", b"dear diary,\ntoday the market...\n")
    with pytest.raises(CaptureError, match=r"not a capture .*notes\.txt.*b'dear diary,"):
        open_capture(path)


def test_errors_come_before_the_first_message(tmp_path: Path) -> None:
    good = write(tmp_path / "good.jsonl", jsonl(RECORDS))
    with pytest.raises(CaptureError):
        capture_observable([good, tmp_path / "missing.jsonl"])


# ---------------------------------------------------------------- cryptofeed


def test_cryptofeed_ws_lines(tmp_path: Path) -> None:
    text = (
        "wss://stream.binance.us:9443/stream?streams=a@depth@100ms <-> 1633998274.5036721\n"
        '1633998274.723671: {"stream":"a@depth@100ms","data":{}}\n'
        "1633998275.5: not json, but a frame all the same\n"
        "\n"
        "1633998276 no separator\n"
        "soon: {}\n"
    )
    counts = LineCounts()
    messages = list(read_capture(write(tmp_path / "X.ws.1.0", text.encode()), counts))
    assert messages == [
        RawMessage(
            1_633_998_274_503_672_100,
            "open",
            1,
            "",
            "wss://stream.binance.us:9443/stream?streams=a@depth@100ms",
        ),
        RawMessage(1_633_998_274_723_671_000, "ws", 1, '{"stream":"a@depth@100ms","data":{}}'),
        RawMessage(1_633_998_275_500_000_000, "ws", 1, "not json, but a frame all the same"),
    ]
    assert (counts.lines, counts.messages, counts.blank, counts.bad) == (6, 3, 1, 2)


def test_cryptofeed_frame_before_any_open_is_bad(tmp_path: Path) -> None:
    counts = LineCounts()
    path = write(tmp_path / "X.ws.2.0", b"1633998274.5: {}\n")
    # A first line that is a frame is still recognised as cryptofeed.
    assert list(read_capture(path, counts)) == []
    assert counts.bad == 1


def test_cryptofeed_http_lines(tmp_path: Path) -> None:
    text = (
        "https://api.binance.us/api/v3/depth?symbol=COMPUSDT&limit=1000 -> 1633998274.865238: "
        '{"lastUpdateId":1,"bids":[],"asks":[]}\n'
        "https://api.binance.us/api/v3/exchangeInfo -> 1633998274.5: {}\n"
        'configuration: {"trades":["CRV-USDT"]}\n'
    )
    counts = LineCounts()
    messages = list(read_capture(write(tmp_path / "X.http.0.0", text.encode()), counts))
    assert messages == [
        RawMessage(
            1_633_998_274_865_238_000,
            "rest",
            0,
            '{"lastUpdateId":1,"bids":[],"asks":[]}',
            "/api/v3/depth?symbol=COMPUSDT&limit=1000",
            200,
            "GET",
        ),
        RawMessage(1_633_998_274_500_000_000, "rest", 0, "{}", "/api/v3/exchangeInfo", 200, "GET"),
    ]
    assert (counts.lines, counts.messages, counts.skipped) == (3, 2, 1)


@needs_real
@pytest.mark.parametrize(
    "name",
    [
        "BINANCE_US.ws.1.0",
        "BINANCE_US.http.0.0",
        "BINANCE_US.0",
        "BINANCE.ws.1.0",
        "BINANCE.http.0.0",
        "BINANCE_TR.ws.1.0",
        "BINANCE_TR.http.0.0",
    ],
)
def test_real_recordings_every_line_accounted_for(name: str) -> None:
    path = REAL / name
    raw_lines = path.read_bytes().splitlines()
    counts = LineCounts()
    messages = list(read_capture(path, counts))
    assert open_capture(path).format == "cryptofeed"
    assert counts.bad == 0
    assert counts.lines == len(raw_lines)
    assert (
        counts.messages
        == len(messages)
        == sum(1 for line in raw_lines if line.strip()) - (counts.skipped)
    )
    assert counts.lines == counts.messages + counts.blank + counts.skipped
    kinds = {m.kind for m in messages}
    if ".ws." in name:
        assert messages[0].kind == "open"
        assert kinds == {"open", "ws"}
        assert {m.conn for m in messages} == {1}
    else:
        assert kinds == {"rest"}
        assert all(m.url.startswith("/api/v3/") and m.status == 200 for m in messages)


@needs_real
def test_real_recording_first_frame_exactly() -> None:
    first, second = list(read_capture(REAL / "BINANCE_US.ws.1.0"))[:2]
    assert first.kind == "open"
    assert first.t == 1_633_998_274_503_672_100
    assert first.url.startswith("wss://stream.binance.us:9443/stream?streams=crvusdt@depth@100ms/")
    assert second.t == 1_633_998_274_723_671_000
    assert second.data.startswith('{"stream":"compusdt@depth@100ms","data":{"e":"depthUpdate"')
    assert second.data.endswith("}}")


# ---------------------------------------------------------------- merging


def _times(messages: Iterator[RawMessage]) -> list[tuple[int, str]]:
    return [(m.t, m.data) for m in messages]


def test_merge_by_receive_time_stable(tmp_path: Path) -> None:
    a = write(
        tmp_path / "a.jsonl",
        jsonl([{"t": t, "kind": "ws", "conn": 1, "data": f"a{t}"} for t in (1, 3, 3, 7)]),
    )
    b = write(
        tmp_path / "b.jsonl",
        jsonl([{"t": t, "kind": "ws", "conn": 1, "data": f"b{t}"} for t in (0, 3, 8)]),
    )
    counts = LineCounts()
    merged = merge_messages([open_capture(a), open_capture(b)], counts)
    # Equal times: the earlier file first, then file order.
    assert _times(merged) == [
        (0, "b0"), (1, "a1"), (3, "a3"), (3, "a3"), (3, "b3"), (7, "a7"), (8, "b8"),
    ]  # fmt: skip
    assert (counts.lines, counts.messages) == (7, 7)


def test_merge_keeps_connection_ids_apart(tmp_path: Path) -> None:
    a = write(
        tmp_path / "a.jsonl",
        jsonl(
            [
                {"t": 1, "kind": "open", "conn": 1, "url": "wss://a"},
                {"t": 4, "kind": "ws", "conn": 1, "data": "a"},
                {"t": 5, "kind": "rest", "url": "/api/v3/time", "data": "{}"},
                {"t": 6, "kind": "close", "conn": 1},
            ]
        ),
    )
    ws = b"wss://b <-> 0.000000002\n0.000000003: b\n"
    b = write(tmp_path / "b.ws.1.0", ws)
    c = write(tmp_path / "c.ws.1.0", ws)
    merged = list(merge_messages([open_capture(p) for p in (a, b, c)]))
    conns = [(m.t, m.kind, m.conn) for m in merged]
    assert conns == [
        (1, "open", 1),
        (2, "open", 2),
        (2, "open", 3),
        (3, "ws", 2),
        (3, "ws", 3),
        (4, "ws", 1),
        (5, "rest", 0),
        (6, "close", 1),
    ]


def test_a_single_capture_keeps_its_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", jsonl([{"t": 1, "kind": "ws", "conn": 7, "data": "x"}]))
    assert [m.conn for m in merge_messages([open_capture(path)])] == [7]


# ---------------------------------------------------------------- observable


@pytest.mark.parametrize("scheduler_type", [HistoricalScheduler, ReplayScheduler])
def test_observable_advances_the_clock_before_each_message(
    tmp_path: Path, scheduler_type: type[HistoricalScheduler]
) -> None:
    times = [T0, T0 + 1_000_000, T0 + 250_000_000_000, T0 + 250_000_000_000]
    path = write(
        tmp_path / "c.jsonl",
        jsonl([{"t": t, "kind": "ws", "conn": 1, "data": str(i)} for i, t in enumerate(times)]),
    )
    scheduler = scheduler_type()
    seen: list[tuple[str, datetime]] = []
    done: list[bool] = []
    counts = LineCounts()
    capture_observable(path, scheduler, counts).subscribe(
        lambda m: seen.append((m.data, scheduler.now)), on_completed=lambda: done.append(True)
    )
    assert seen == [(str(i), ns_to_datetime(t)) for i, t in enumerate(times)]
    assert done == [True]
    assert counts.messages == 4
    assert seen[0][1] == datetime(2024, 11, 26, 5, 46, 40, 123456, tzinfo=UTC)


def test_observable_reads_afresh_for_each_subscriber(tmp_path: Path) -> None:
    source = capture_observable(write(tmp_path / "c.jsonl", jsonl(RECORDS)))
    first: list[RawMessage] = []
    second: list[RawMessage] = []
    source.subscribe(first.append)
    source.subscribe(second.append)
    assert first == second == EXPECTED


def test_observable_without_scheduler_does_not_need_times_in_order(tmp_path: Path) -> None:
    records = [{"t": t, "kind": "ws", "conn": 1, "data": str(t)} for t in (5, 2, 9)]
    got: list[int] = []
    capture_observable(write(tmp_path / "c.jsonl", jsonl(records))).subscribe(
        lambda m: got.append(m.t)
    )
    assert got == [5, 2, 9]
