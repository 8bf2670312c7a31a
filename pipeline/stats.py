"""The run summary: what was read, kept, dropped and rejected, per stream.

Accounting rules (every input line ends up in exactly one place):

- Capture lines (`LineCounts`): `lines == messages + blank + skipped + bad`.
  A bad line (not even a capture record) never becomes a message.
- Messages: each `open`/`close` message is one connection event; each `ws` or
  `rest` message lands in exactly one stream row, as `msgs`.
- Per stream row, the unit is the event: `read == kept + duplicate + stale +
  non-final + unchanged + ignored + bad`. A WebSocket frame is one event, so for
  a WebSocket stream `msgs == read`. A REST klines body carries many klines:
  its row (`HBARUSDT kline_1h (rest)`) counts the body once in `msgs` and every
  kline in it in `read` and the outcome columns. A REST body with no rows at all
  is one ignored event under `rest <path>`.
- `kept` means the event changed a frame; `unchanged` that it reached the frame
  but changed nothing (the same kline again, beyond the dedupe window).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from operators.events import Connected, Disconnected, Gap
from pipeline.capture import LineCounts

__all__ = ["OUTCOMES", "RunStats", "StreamCounts", "stream_label"]

OUTCOMES: Final = ("kept", "duplicate", "stale", "non_final", "unchanged", "ignored", "bad")
"""Where an event can end up; the columns of the summary after `msgs` and `read`."""

_HEADERS: Final = ("stream", "msgs", "read", "kept", "dup", "stale", "non-final", "unchanged",
                   "ignored", "bad")  # fmt: skip


@dataclass(slots=True)
class StreamCounts:
    """Counters of one stream (a symbol's WebSocket stream, its REST rows, an ignored stream)."""

    label: str
    read: int = 0
    extra: int = 0
    """Events beyond the first of multi-event messages (REST klines): `msgs = read - extra`."""
    kept: int = 0
    duplicate: int = 0
    stale: int = 0
    non_final: int = 0
    unchanged: int = 0
    ignored: int = 0
    bad: int = 0

    @property
    def messages(self) -> int:
        """Messages that reached this stream (a REST body counts once)."""
        return self.read - self.extra

    @property
    def dropped(self) -> int:
        return self.duplicate + self.stale + self.non_final + self.unchanged

    @property
    def balanced(self) -> bool:
        """`read == kept + dropped + ignored + bad`."""
        return self.read == self.kept + self.dropped + self.ignored + self.bad

    def drop(self, reason: str) -> None:
        """Count one event dropped for `reason` (`duplicate`, `stale`, `non-final`)."""
        if reason == "duplicate":
            self.duplicate += 1
        elif reason == "stale":
            self.stale += 1
        elif reason == "non-final":
            self.non_final += 1
        else:
            raise ValueError(f"unknown drop reason {reason!r} for stream {self.label!r}")

    def row(self) -> tuple[int, ...]:
        return (self.messages, self.read, *(getattr(self, name) for name in OUTCOMES))


def stream_label(stream: str) -> str:
    """A Binance stream name as the summary shows it (`hbarusdt@depth20@100ms`: `HBARUSDT depth20`).

    Names that are not `<symbol>@<stream>` (`rest /api/v3/exchangeInfo`,
    `!ticker@arr`) are shown as they are.
    """
    symbol, at, rest = stream.partition("@")
    if not at or not symbol.isalnum():
        return stream
    return f"{symbol.upper()} {rest.split('@')[0]}"


@dataclass
class RunStats:
    """Everything the run summary shows; filled by the feed and the capture reader."""

    lines: LineCounts | None = None
    """Capture line counts; None for a live run."""
    messages: int = 0
    """Raw messages the feed received."""
    streams: dict[str, StreamCounts] = field(default_factory=dict)
    connections: list[Connected | Disconnected] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    def stream(self, label: str) -> StreamCounts:
        """The counters of `label`, created on first use."""
        counts = self.streams.get(label)
        if counts is None:
            counts = self.streams[label] = StreamCounts(label)
        return counts

    @property
    def bad(self) -> int:
        """Bad messages plus bad capture lines."""
        return sum(c.bad for c in self.streams.values()) + (self.lines.bad if self.lines else 0)

    def problems(self) -> list[str]:
        """Every accounting rule that does not hold (empty when all is accounted for)."""
        found = [
            f"{c.label}: read {c.read} != kept + dropped + ignored + bad "
            f"({c.kept} + {c.dropped} + {c.ignored} + {c.bad})"
            for c in self.streams.values()
            if not c.balanced
        ]
        landed = sum(c.messages for c in self.streams.values()) + len(self.connections)
        if landed != self.messages:
            found.append(
                f"{self.messages} messages, but {landed} counted in streams and connections"
            )
        lines = self.lines
        if lines is not None:
            if lines.lines != lines.messages + lines.blank + lines.skipped + lines.bad:
                found.append(
                    f"{lines.lines} capture lines != {lines.messages} messages + {lines.blank} "
                    f"blank + {lines.skipped} skipped + {lines.bad} bad"
                )
            if lines.messages != self.messages:
                found.append(f"{lines.messages} messages read, {self.messages} reached the feed")
        return found

    def render(self) -> str:
        """The summary as text: input, a table of streams, connections, gaps, accounting."""
        out: list[str] = []
        lines = self.lines
        if lines is not None:
            bad_lines = f", {lines.bad} bad" if lines.bad else ""
            out.append(
                f"capture: {lines.lines} lines = {lines.messages} messages + {lines.blank} blank"
                f" + {lines.skipped} skipped{bad_lines}"
            )
            for reason, n in sorted(lines.bad_reasons.items()):
                out.append(f"  bad line x{n}: {reason}")
        out.extend(self._table())
        out.extend(self._connection_lines())
        if self.gaps:
            out.append(f"gaps: {len(self.gaps)}")
            out.extend(
                f"  {g.symbol} {g.interval} [{_ms(g.start)}, {_ms(g.end)}) seen at {_ns(g.t)}"
                for g in self.gaps
            )
        problems = self.problems()
        if problems:
            out.append("NOT ACCOUNTED FOR:")
            out.extend(f"  {p}" for p in problems)
        else:
            out.append(f"accounted for: all {self.messages} messages")
        return "\n".join(out)

    def _table(self) -> Iterator[str]:
        # Streams a symbol has but that saw nothing (its REST ticker, say) are left out.
        rows = [self.streams[k] for k in sorted(self.streams) if self.streams[k].read]
        if not rows:
            yield "streams: none"
            return
        cells = [_HEADERS] + [(c.label, *map(str, c.row())) for c in rows]
        total = StreamCounts("total")
        for c in rows:
            total.read += c.read
            total.extra += c.extra
            for name in OUTCOMES:
                setattr(total, name, getattr(total, name) + getattr(c, name))
        cells.append(("total", *map(str, total.row())))
        widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADERS))]
        for i, row in enumerate(cells):
            if i == len(cells) - 1:
                yield "  ".join("-" * w for w in widths)
            yield "  ".join(
                cell.ljust(w) if j == 0 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()

    def _connection_lines(self) -> Iterator[str]:
        if not self.connections:
            return
        yield f"connections: {len(self.connections)} events"
        for event in self.connections:
            if isinstance(event, Connected):
                yield f"  {_ns(event.t)}  #{event.conn} open   {_short(event.url)}"
            else:
                yield f"  {_ns(event.t)}  #{event.conn} closed {event.code} {event.reason}".rstrip()


def _ns(t: int) -> str:
    return datetime.fromtimestamp(t // 1_000_000 / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _ms(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _short(url: str, limit: int = 90) -> str:
    return url if len(url) <= limit else url[: limit - 3] + "..."
