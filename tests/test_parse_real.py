"""`parse` over real Binance traffic recorded by cryptofeed (shared/data/binance-real).

The recordings are read by a small helper here, not by the pipeline's capture
reader, so these tests pin the parser alone against what the exchanges really
sent: every line must parse, and facts checked by hand in the files (one closed
OMGBUSD kline, gap-free diff ids, closed empty candles) must come out.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import reactivex

from operators import (
    BadMessage,
    BookSnapshot,
    Connected,
    DepthDiff,
    Event,
    Ignored,
    Kline,
    Parser,
    RawMessage,
    parse,
)

SHARED = Path(
    os.environ.get("HBAR_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared")
)
DATA = SHARED / "data" / "binance-real"

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(),
    reason=f"real recordings not found at {DATA} (set HBAR_SHARED_DIR to the shared directory)",
)


def _ns(seconds: str) -> int:
    return int(Decimal(seconds) * 1_000_000_000)


def read_ws(path: Path, conn: int = 1) -> Iterator[RawMessage]:
    """A cryptofeed `.ws` recording: `<url> <-> <s>`, then `<s>: <frame>` lines."""
    with path.open(encoding="utf-8") as lines:
        url, _, seconds = next(lines).rstrip("\n").partition(" <-> ")
        yield RawMessage(_ns(seconds), "open", conn, url=url)
        for line in lines:
            line = line.rstrip("\n")
            if not line:
                continue
            seconds, _, frame = line.partition(": ")
            yield RawMessage(_ns(seconds), "ws", conn, frame)


def read_http(path: Path) -> Iterator[RawMessage]:
    """A cryptofeed `.http` recording: `<url> -> <s>: <body>` lines."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            line = line.rstrip("\n")
            if not line or " -> " not in line:
                continue
            url, _, rest = line.partition(" -> ")
            seconds, _, body = rest.partition(": ")
            yield RawMessage(_ns(seconds), "rest", 0, body, url, 200, "GET")


def parsed(raws: Iterator[RawMessage]) -> list[Event]:
    return list(Parser().parse_all(raws))


def counts(events: list[Event]) -> Counter[str]:
    return Counter(type(e).__name__ for e in events)


@pytest.mark.parametrize(
    ("venue", "expected"),
    [
        ("BINANCE_US", {"Connected": 1, "DepthDiff": 336, "Ignored": 139, "Kline": 5}),
        ("BINANCE", {"Connected": 1, "DepthDiff": 177, "Ignored": 86, "Kline": 2}),
        ("BINANCE_TR", {"Connected": 1, "DepthDiff": 84, "Ignored": 47, "Kline": 8}),
    ],
)
def test_every_ws_line_parses(venue: str, expected: dict[str, int]) -> None:
    path = DATA / f"{venue}.ws.1.0"
    raws = list(read_ws(path))
    events = parsed(iter(raws))
    lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line)
    assert len(raws) == lines  # every recorded line became a message
    assert len(events) == len(raws)  # and each message one event
    assert counts(events) == expected  # none of them a BadMessage


@pytest.mark.parametrize(
    ("venue", "snapshots"), [("BINANCE_US", 4), ("BINANCE", 4), ("BINANCE_TR", 3)]
)
def test_every_rest_snapshot_parses(venue: str, snapshots: int) -> None:
    raws = list(read_http(DATA / f"{venue}.http.0.0"))
    events = parsed(iter(raws))
    assert len(raws) == snapshots
    assert counts(events) == {"BookSnapshot": snapshots}
    for raw, event in zip(raws, events, strict=True):
        assert isinstance(event, BookSnapshot)
        assert event.source == "rest"
        assert raw.url.split("symbol=")[1].startswith(event.symbol + "&")
        assert 0 < len(event.bids) <= 1000
        assert 0 < len(event.asks) <= 1000


def test_exchange_info_is_ignored() -> None:
    raws = list(read_http(DATA / "BINANCE_US.0"))
    assert parsed(iter(raws)) == [Ignored("rest /api/v3/exchangeInfo", raws[0].t)]


def test_the_closed_omgbusd_kline_is_the_only_final_one() -> None:
    events = parsed(read_ws(DATA / "BINANCE_US.ws.1.0"))
    klines = [e for e in events if isinstance(e, Kline)]
    finals = [k for k in klines if k.final]
    assert len(klines) == 5
    assert [(k.symbol, k.interval, k.open_time, k.close_time) for k in finals] == [
        ("OMGBUSD", "1m", 1633998240000, 1633998299999)
    ]
    final = finals[0]
    assert (final.open, final.high, final.low, final.close, final.volume) == (
        13.7212,
        13.8076,
        13.7212,
        13.7664,
        536.51,
    )
    # Received 1.68 s after the candle closed (its event time says 1.76 s).
    assert final.t // 1_000_000 - final.close_time == 1681


@pytest.mark.parametrize(
    ("venue", "symbols"), [("BINANCE_US", 4), ("BINANCE", 4), ("BINANCE_TR", 3)]
)
def test_diff_ids_are_contiguous_per_symbol(venue: str, symbols: int) -> None:
    events = parsed(read_ws(DATA / f"{venue}.ws.1.0"))
    last: dict[str, int] = {}
    per_symbol: defaultdict[str, int] = defaultdict(int)
    for event in events:
        if isinstance(event, DepthDiff):
            assert event.first_id <= event.final_id
            if event.symbol in last:
                assert event.first_id == last[event.symbol] + 1, event
            last[event.symbol] = event.final_id
            per_symbol[event.symbol] += 1
    assert len(per_symbol) == symbols  # ELFBUSD on Binance TR sent no diff
    assert min(per_symbol.values()) > 1


def test_rest_snapshots_fall_inside_the_recorded_diffs() -> None:
    # Attribution check: each snapshot's id lies within its own symbol's diffs.
    diffs = [e for e in parsed(read_ws(DATA / "BINANCE_US.ws.1.0")) if isinstance(e, DepthDiff)]
    for snapshot in parsed(read_http(DATA / "BINANCE_US.http.0.0")):
        assert isinstance(snapshot, BookSnapshot)
        own = [d for d in diffs if d.symbol == snapshot.symbol]
        assert own[0].first_id <= snapshot.last_update_id <= own[-1].final_id, snapshot.symbol


def test_binance_tr_closed_empty_candles_parse() -> None:
    events = parsed(read_ws(DATA / "BINANCE_TR.ws.1.0"))
    finals = [e for e in events if isinstance(e, Kline) and e.final]
    assert {k.symbol for k in finals} == {"XEMUSDT", "LTCBRL", "BELBTC", "ELFBUSD"}
    empty = sorted((k.symbol, k.volume, k.open, k.close) for k in finals if k.volume == 0.0)
    assert empty == [
        ("BELBTC", 0.0, 0.00002369, 0.00002369),
        ("ELFBUSD", 0.0, 0.3117, 0.3117),
    ]
    assert all(k.open_time == 1681153980000 for k in finals)


def test_the_operator_over_a_whole_recording() -> None:
    out: list[Event] = []
    completed: list[bool] = []
    reactivex.from_iterable(read_ws(DATA / "BINANCE.ws.1.0")).pipe(parse()).subscribe(
        out.append, on_completed=lambda: completed.append(True)
    )
    assert completed == [True]
    assert isinstance(out[0], Connected)
    assert not any(isinstance(e, BadMessage) for e in out)
    assert len(out) == 266
