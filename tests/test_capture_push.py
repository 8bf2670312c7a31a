"""`push_merged` and `Capture.push_messages` give what iterating `messages()` gives."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from test_capture import EXPECTED, RECORDS, jsonl, write

from operators.events import RawMessage
from pipeline.capture import LineCounts, merge_messages, open_capture, push_merged

BAD_LINES = [
    b"\n",
    b"   \n",
    b"not json at all\n",
    b"[1, 2, 3]\n",
    b'{"kind": "ws", "conn": 1, "data": "x"}\n',
    b'{"t": 1.5, "kind": "ws", "conn": 1, "data": "x"}\n',
    b'{"t": 1, "kind": "telepathy", "conn": 1}\n',
    b'{"t": 1, "kind": "ws", "conn": "1", "data": "x"}\n',
    b'{"t": 1, "kind": "rest", "url": 7, "data": "x"}\n',
    b'{"t": 1, "kind": "close", "conn": 1, "code": "1006"}\n',
    b"\x00\xff garbage\n",
]


def pushed(paths: list[Path]) -> tuple[list[tuple[str, int]], list[RawMessage], LineCounts]:
    """The calls push_merged makes, in order: ("t", advanced to) and ("push", message index)."""
    calls: list[tuple[str, int]] = []
    seen: list[RawMessage] = []

    def push(msg: RawMessage) -> None:
        calls.append(("push", len(seen)))
        seen.append(msg)

    counts = LineCounts()
    push_merged([open_capture(p) for p in paths], push, counts, lambda t: calls.append(("t", t)))
    return calls, seen, counts


def iterated(paths: list[Path]) -> tuple[list[RawMessage], LineCounts]:
    counts = LineCounts()
    return list(merge_messages([open_capture(p) for p in paths], counts)), counts


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_same_messages_and_counts_as_iterating(tmp_path: Path, compression: str) -> None:
    data = jsonl(RECORDS[:2]) + b"".join(BAD_LINES) + jsonl(RECORDS[1:]) + b'{"t": 1, "ki'
    path = write(tmp_path / "c.jsonl", data, compression)
    calls, seen, counts = pushed([path])
    messages, expected_counts = iterated([path])
    assert messages == [*EXPECTED[:2], *EXPECTED[1:]]
    assert seen == messages
    # Each message's time reaches the clock before the message does.
    assert calls == [c for i, m in enumerate(messages) for c in (("t", m.t), ("push", i))]
    assert counts == expected_counts
    assert (counts.lines, counts.messages, counts.blank, counts.bad) == (17, 5, 2, 10)


def test_cryptofeed_and_merged_files_too(tmp_path: Path) -> None:
    crypto = write(
        tmp_path / "X.ws.1.0",
        b"wss://a <-> 1633998274.5\n1633998274.7: {}\n\nnonsense\n1633998275: []\n",
    )
    first = write(tmp_path / "a.jsonl", jsonl(RECORDS) + b"\n")
    for paths in ([crypto], [first, crypto], [crypto, first, first]):
        calls, seen, counts = pushed(paths)
        messages, expected_counts = iterated(paths)
        assert seen == messages
        assert [c for c in calls if c[0] == "t"] == [("t", m.t) for m in messages]
        assert counts == expected_counts


def test_truncated_gzip_counts_one_bad_line(tmp_path: Path) -> None:
    data = gzip.compress(jsonl(RECORDS * 50))
    path = write(tmp_path / "cut.jsonl.gz", data[: len(data) // 2])
    _, seen, counts = pushed([path])
    messages, expected_counts = iterated([path])
    assert seen == messages
    assert messages
    assert counts == expected_counts
    assert counts.bad == 1


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError, ValueError])
def test_what_push_raises_propagates_and_the_lines_read_are_counted(
    tmp_path: Path, error: type[BaseException]
) -> None:
    """An interruption settles the counts; an OSError of push is no broken compressed stream."""
    path = write(tmp_path / "c.jsonl", b"\n" + jsonl(RECORDS * 3))
    seen: list[RawMessage] = []

    def push(msg: RawMessage) -> None:
        seen.append(msg)
        if len(seen) == 3:
            raise error("stop")

    for paths in ([path], [path, path]):
        seen.clear()
        counts = LineCounts()
        with pytest.raises(error):
            push_merged([open_capture(p) for p in paths], push, counts)
        assert counts.bad == 0
        assert counts.messages >= 3
        assert counts.lines == counts.messages + counts.blank + counts.skipped + counts.bad
    # One file: exactly the blank line and the three messages were read.
    seen.clear()
    counts = LineCounts()
    with pytest.raises(error):
        push_merged([open_capture(path)], push, counts)
    assert (counts.lines, counts.messages, counts.blank) == (4, 3, 1)
