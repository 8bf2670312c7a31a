"""`local_book` proven on real Binance traffic (cryptofeed's recordings).

Each recording holds a combined stream with `depth@100ms` diffs for four
symbols and, in a separate file, the REST depth snapshots taken meanwhile. The
two are merged by receive time, parsed, and fed to one `local_book` per symbol;
the final book must equal the one a plain reference rebuilds on its own
(snapshot, then every diff with `u > lastUpdateId`, in order, with exact
decimals), and every symbol must have synced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path

import orjson
import polars as pl
import pytest
import reactivex
from polars.testing import assert_frame_equal

import operators
from operators import (
    BookEvent,
    BookResync,
    BookSnapshot,
    DepthDiff,
    Event,
    RawMessage,
    local_book,
)
from sinks.book_frame import BookFrame
from sinks.schemas import BOOK


def _data_dir() -> Path:
    shared = os.environ.get("HBAR_SHARED_DIR")
    base = Path(shared) if shared else Path(__file__).resolve().parents[1].parent / "shared"
    return base / "data" / "binance-real"


DATA = _data_dir()
RECORDINGS = ["BINANCE_US", "BINANCE", "BINANCE_TR"]

pytestmark = pytest.mark.skipif(
    not (DATA / "BINANCE_US.ws.1.0").is_file(),
    reason=f"real recordings not found in {DATA} (set HBAR_SHARED_DIR to the shared folder)",
)


# ------------------------------------------------------------------ reading the recordings


def _ns(seconds: str) -> int:
    """`1633998274.723671` -> integer nanoseconds, without float rounding."""
    whole, _, frac = seconds.strip().partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "0" * 9)[:9])


def read_recording(name: str) -> list[RawMessage]:
    """A cryptofeed `.ws` + `.http` pair as `RawMessage`s, merged by receive time."""
    ws_lines = (DATA / f"{name}.ws.1.0").read_text().splitlines()
    url, _, opened = ws_lines[0].rpartition(" <-> ")
    raws = [RawMessage(_ns(opened), "open", conn=1, url=url)]
    for line in ws_lines[1:]:
        if line:
            stamp, _, frame = line.partition(": ")
            raws.append(RawMessage(_ns(stamp), "ws", conn=1, data=frame))
    for line in (DATA / f"{name}.http.0.0").read_text().splitlines():
        if line:
            head, _, body = line.partition(": ")
            request, _, stamp = head.rpartition(" -> ")
            path = request[request.index("/api/") :]
            raws.append(
                RawMessage(_ns(stamp), "rest", data=body, url=path, status=200, method="GET")
            )
    raws.sort(key=lambda raw: raw.t)  # stable: the socket's own order is kept
    return raws


def parse_with_orjson(raws: Iterable[RawMessage]) -> list[Event]:
    """Just the depth traffic, straight from the wire layout into events."""
    events: list[Event] = []
    for raw in raws:
        if raw.kind == "ws":
            data = orjson.loads(raw.data)["data"]
            if data.get("e") == "depthUpdate":
                events.append(
                    DepthDiff(
                        data["s"], data["E"], data["U"], data["u"], data["b"], data["a"], raw.t
                    )
                )
        elif raw.kind == "rest":
            body = orjson.loads(raw.data)
            symbol = raw.url.partition("symbol=")[2].partition("&")[0]
            events.append(
                BookSnapshot(
                    symbol, body["lastUpdateId"], body["bids"], body["asks"], raw.t, "rest"
                )
            )
    return events


def parse_with_operator(raws: Iterable[RawMessage]) -> list[Event]:
    parse = getattr(operators, "parse", None)
    if parse is None:
        pytest.skip("operators.parse is not there yet")
    events: list[Event] = []
    reactivex.from_iterable(raws).pipe(parse()).subscribe(events.append)
    return events


PARSERS: dict[str, Callable[[Iterable[RawMessage]], list[Event]]] = {
    "orjson": parse_with_orjson,
    "operators.parse": parse_with_operator,
}


# ------------------------------------------------------------------ the reference book


class ReferenceBook:
    """The documented procedure in its plainest form, with exact decimals."""

    def __init__(self, snapshot: BookSnapshot) -> None:
        self.update_id = snapshot.last_update_id
        self.bids = {Decimal(p): Decimal(q) for p, q in snapshot.bids if Decimal(q)}
        self.asks = {Decimal(p): Decimal(q) for p, q in snapshot.asks if Decimal(q)}
        self.started = False

    def apply(self, diff: DepthDiff) -> None:
        if diff.final_id <= self.update_id:
            return
        if self.started:
            assert diff.first_id == self.update_id + 1, "the recording has a gap"
        else:
            assert diff.first_id <= self.update_id + 1 <= diff.final_id
            self.started = True
        for side, levels in ((self.bids, diff.bids), (self.asks, diff.asks)):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q)
        self.update_id = diff.final_id

    def frame(self) -> pl.DataFrame:
        bids = sorted(self.bids.items(), reverse=True)
        asks = sorted(self.asks.items())
        rows = [("bid", p, q) for p, q in bids] + [("ask", p, q) for p, q in asks]
        return pl.DataFrame(
            {
                "side": [side for side, _, _ in rows],
                "price": [float(p) for _, p, _ in rows],
                "quantity": [float(q) for _, _, q in rows],
                "update_id": [self.update_id] * len(rows),
            },
            schema=BOOK,
        )


def reference(events: list[Event], symbol: str, skip: int | None = None) -> ReferenceBook:
    """Built from the symbol's first REST snapshot and all its diffs (but the
    `skip`-th, if given, counted from the first one the snapshot does not cover)."""
    snapshot = next(
        e
        for e in events
        if isinstance(e, BookSnapshot) and e.symbol == symbol and e.source == "rest"
    )
    book = ReferenceBook(snapshot)
    fresh = [
        e
        for e in events
        if isinstance(e, DepthDiff) and e.symbol == symbol and e.final_id > snapshot.last_update_id
    ]
    for i, diff in enumerate(fresh):
        if i == skip:
            break
        book.apply(diff)
    return book


def depth_symbols(events: list[Event]) -> list[str]:
    return sorted({e.symbol for e in events if isinstance(e, DepthDiff)})


def run_book(events: Iterable[object], symbol: str) -> tuple[BookFrame, list[BookEvent]]:
    frame = BookFrame(symbol)
    out: list[BookEvent] = []

    def on_event(event: BookEvent) -> None:
        out.append(event)
        frame.write(event)

    reactivex.from_iterable(events).pipe(local_book(symbol)).subscribe(on_event)
    return frame, out


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("parser", list(PARSERS))
@pytest.mark.parametrize("recording", RECORDINGS)
def test_every_symbol_syncs_and_matches_the_reference(recording: str, parser: str) -> None:
    events = PARSERS[parser](read_recording(recording))
    symbols = depth_symbols(events)
    assert len(symbols) >= 3, symbols
    for symbol in symbols:
        frame, out = run_book(events, symbol)
        want = reference(events, symbol)
        assert not frame.stale, f"{recording} {symbol} never synced"
        assert frame.update_id == want.update_id
        assert len(frame) > 0
        assert_frame_equal(frame.get(), want.frame())
        # One request, for the first snapshot; no gap, no crossed book.
        assert [e.reason for e in out if isinstance(e, BookResync)] == ["start"], symbol


@pytest.mark.parametrize("recording", RECORDINGS)
def test_a_lost_diff_serves_the_last_good_book_until_a_snapshot_resyncs(recording: str) -> None:
    events = parse_with_orjson(read_recording(recording))
    for symbol in depth_symbols(events):
        full = reference(events, symbol)
        first_snapshot = next(
            e for e in events if isinstance(e, BookSnapshot) and e.symbol == symbol
        )
        fresh = [
            e
            for e in events
            if isinstance(e, DepthDiff)
            and e.symbol == symbol
            and e.final_id > first_snapshot.last_update_id
        ]
        if len(fresh) < 5:
            continue
        lost = len(fresh) // 2
        kept = [e for e in events if e is not fresh[lost]]

        # Without a new snapshot the book stays at the diff before the loss.
        frame, out = run_book(kept, symbol)
        before = reference(events, symbol, skip=lost)
        assert frame.stale
        assert [e.reason for e in out if isinstance(e, BookResync)] == ["start", "gap"]
        assert_frame_equal(frame.get(), before.frame())

        # Answer the request with the true book as of the diff after the loss,
        # delivered after the one after that: the book resyncs and ends right.
        after = reference(events, symbol, skip=lost + 2)
        answer = BookSnapshot(
            symbol,
            after.update_id,
            [[str(p), str(q)] for p, q in after.bids.items()],
            [[str(p), str(q)] for p, q in after.asks.items()],
            fresh[lost + 2].t,
            "rest",
        )
        answered = list(kept)
        answered.insert(answered.index(fresh[lost + 2]) + 1, answer)
        frame, out = run_book(answered, symbol)
        assert not frame.stale
        assert_frame_equal(frame.get(), full.frame())
