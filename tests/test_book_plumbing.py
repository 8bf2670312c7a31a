"""`pipeline.local_book` (the books a feed keeps) and `pipeline.book_snapshots`
(answering their snapshot requests), each on its own: hand-made events, a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from polars.testing import assert_frame_equal
from test_local_book import book_frame

from operators import BookResync
from operators.events import BookSnapshot, DepthDiff, Disconnected, RawMessage
from pipeline.book_snapshots import SnapshotFetcher, answer_resyncs
from pipeline.errors import ExchangeUnavailableError
from pipeline.feed import Feed
from pipeline.local_book import LocalBooks, SymbolBook

A, B = "AAAUSDT", "BBBUSDT"
Side = dict[str, str]


def diff(
    symbol: str, first: int, final: int, b: Side | None = None, a: Side | None = None
) -> DepthDiff:
    bids = [[p, q] for p, q in (b or {}).items()]
    asks = [[p, q] for p, q in (a or {}).items()]
    return DepthDiff(symbol, final, first, final, bids, asks, final)


def snap(symbol: str, last: int, b: Side, a: Side, t: int = 0) -> BookSnapshot:
    return BookSnapshot(
        symbol, last, [[p, q] for p, q in b.items()], [[p, q] for p, q in a.items()], t, "rest"
    )


# ------------------------------------------------------------------ LocalBooks


def stale(book: SymbolBook) -> bool:
    # A call, not the property: mypy would take an asserted property as settled.
    return book.stale


def test_a_gap_resyncs_that_symbol_only_and_serves_its_old_book_meanwhile() -> None:
    books = LocalBooks()
    asked: list[BookResync] = []
    books.resyncs.subscribe(asked.append)
    a, b = books(A), books(B)
    assert books(A) is a, "one book per symbol"

    assert a.push(diff(A, 10, 11, {"1.0": "5"})) is False  # buffered until a snapshot
    assert b.push(diff(B, 20, 21, a={"9.0": "1"})) is False
    assert [(r.symbol, r.reason) for r in asked] == [(A, "start"), (B, "start")]
    assert books.wants_snapshot(A)
    assert a.push(snap(A, 10, {"1.0": "4"}, {"2.0": "3"})) is True
    assert b.push(snap(B, 20, {"8.0": "1"}, {"9.0": "2"})) is True
    assert not stale(a)
    assert not books.wants_snapshot(A)
    good_a = book_frame({"1.0": "5"}, {"2.0": "3"}, 11)
    assert_frame_equal(a.frame.get(), good_a)

    # A loses updates 12..13: A alone goes stale and asks; its frame keeps the last good book.
    assert a.push(diff(A, 14, 15, {"1.0": "7"})) is True  # the frame turns stale
    assert stale(a)
    assert [(r.symbol, r.reason) for r in asked[2:]] == [(A, "gap")]
    assert_frame_equal(a.frame.get(), good_a)
    assert b.push(diff(B, 22, 22, a={"9.0": "0"})) is True
    assert not stale(b)
    assert_frame_equal(b.frame.get(), book_frame({"8.0": "1"}, {}, 22))

    # The answer, then the diff after it: A is back, from the snapshot plus the buffered diff.
    a.push(snap(A, 14, {"1.0": "6", "0.5": "1"}, {"2.0": "3"}))
    assert not stale(a)
    assert a.syncs == 2
    assert_frame_equal(a.frame.get(), book_frame({"1.0": "7", "0.5": "1"}, {"2.0": "3"}, 15))
    assert dict(a.resyncs) == {"start": 1, "gap": 1}
    assert dict(b.resyncs) == {"start": 1}
    assert "book AAAUSDT: in sync at update 15, 3 levels; 2 diffs" in books.render()


def test_a_disconnect_marks_every_book_stale_until_it_resyncs() -> None:
    books = LocalBooks()
    a = books(A)
    a.push(diff(A, 1, 2, {"1.0": "1"}))
    a.push(snap(A, 1, {}, {"2.0": "1"}))
    assert a.push(Disconnected(1, 1006, "gone", 5)) is True
    assert stale(a)
    assert "stale since update 2" in books.render()
    a.push(diff(A, 7, 8, {"1.0": "2"}))
    assert dict(a.resyncs) == {"start": 1, "disconnect": 1}


def test_a_request_may_be_answered_synchronously() -> None:
    books = LocalBooks()
    a = books(A)

    def answer(_: BookResync) -> None:
        a.push(snap(A, 10, {"1.0": "4"}, {"2.0": "3"}))

    books.resyncs.subscribe(answer)
    assert a.push(diff(A, 10, 11, {"1.0": "5"})) is True
    assert not stale(a)
    assert a.update_id == 11


def test_the_frame_keeps_at_most_depth_levels_a_side() -> None:
    books = LocalBooks(depth=2)
    a = books(A)
    a.push(diff(A, 1, 2))
    a.push(snap(A, 1, {"1.0": "1", "0.9": "1", "0.8": "1"}, {"2.0": "1"}))
    assert a.frame.get()["price"].to_list() == [1.0, 0.9, 2.0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depth": 0}, "book depth must be a positive number of levels, not 0"),
        ({"max_buffered": True}, "book max_buffered must be a positive number of diffs, not True"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalBooks(**options)


def test_in_a_feed_only_symbols_with_diffs_count_as_used() -> None:
    books = LocalBooks()
    feed = Feed(local_book=books)
    body = '{"lastUpdateId":3,"bids":[["1.0","2"]],"asks":[["2.0","1"]]}'
    frame = (
        '{"stream":"aaausdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"AAAUSDT",'
        '"U":3,"u":4,"b":[["1.0","3"]],"a":[]}}'
    )
    feed.push(RawMessage(1, "ws", 1, frame))
    feed.push(RawMessage(2, "rest", 0, body, f"/api/v3/depth?symbol={A}&limit=1000", 200, "GET"))
    feed.add_symbol(B)
    assert books.used(A)
    assert not books.used(B)
    assert not books.used("NOPE")
    kept = books.drop_unused(feed.snapshot())
    assert "book" in kept[A]
    assert "book" not in kept[B]
    assert_frame_equal(kept[A]["book"], book_frame({"1.0": "3"}, {"2.0": "1"}, 4))
    assert feed.stats.streams[f"{A} depth (rest)"].kept == 1
    assert feed.stats.streams[f"{A} depth"].unchanged == 1


# ------------------------------------------------------------------ SnapshotFetcher


class Harness:
    """A fetcher on a fake clock whose fetches the test finishes by hand."""

    def __init__(self, **options: Any) -> None:
        self.now = 0.0
        self.started: list[tuple[str, float]] = []
        self.gates: list[asyncio.Future[None]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.wanted: set[str] = set()
        self.fetcher = SnapshotFetcher(
            self.fetch,
            self.spawn,
            self.wanted.__contains__,
            clock=lambda: self.now,
            sleep=self.sleep,
            **options,
        )

    async def fetch(self, symbol: str) -> object:
        self.started.append((symbol, self.now))
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate
        return None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(work))

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    def ask(self, symbol: str, reason: str = "gap") -> None:
        self.wanted.add(symbol)
        self.fetcher.request(BookResync(symbol, reason, 0))

    async def answer(self, *, settles: bool = True, error: Exception | None = None) -> None:
        """Finish the oldest open fetch; `settles`: the book no longer wants one."""
        await settle()
        gate = next(g for g in self.gates if not g.done())
        symbol = self.started[self.gates.index(gate)][0]
        if settles:
            self.wanted.discard(symbol)
        if error is None:
            gate.set_result(None)
        else:
            gate.set_exception(error)
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_one_fetch_in_flight_and_requests_meanwhile_merged() -> None:
    h = Harness()
    h.ask(A, "start")
    await settle()
    h.ask(A, "disconnect")
    h.ask(A, "snapshot_behind")
    assert h.fetcher.in_flight(A)
    assert h.started == [(A, 0.0)]
    # The answer did not settle it: one more fetch, after the spacing.
    await h.answer(settles=False)
    assert h.started == [(A, 0.0), (A, 1.0)]
    await h.answer()
    assert not h.fetcher.in_flight(A)
    assert h.fetcher.stats.merged == 2
    assert h.fetcher.stats.fetches == 2


@pytest.mark.asyncio
async def test_a_request_the_answer_settles_costs_no_second_fetch() -> None:
    h = Harness()
    h.ask(A)
    await settle()
    h.ask(A)
    await h.answer(settles=True)
    assert h.started == [(A, 0.0)]
    assert not h.fetcher.in_flight(A)


@pytest.mark.asyncio
async def test_fetches_of_a_flapping_symbol_back_off_and_reset_when_quiet() -> None:
    h = Harness(base=1.0, cap=8.0, quiet=20.0)
    for _ in range(6):
        h.ask(A)
        await h.answer()
    # 1, 2, 4, 8, 8 s apart: the spacing doubles up to the cap.
    assert [t for _, t in h.started] == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0]
    h.now += 20.0  # quiet for a while: the next one goes at once
    h.ask(A)
    await h.answer()
    assert h.started[-1] == (A, 43.0)
    assert h.fetcher.stats.wait_seconds == 23.0


@pytest.mark.asyncio
async def test_symbols_are_spaced_independently() -> None:
    h = Harness()
    h.ask(A)
    await h.answer()
    h.ask(B)
    await settle()
    h.ask(A)
    await h.answer()
    await h.answer()
    assert h.started == [(A, 0.0), (B, 0.0), (A, 1.0)]


@pytest.mark.asyncio
async def test_a_failed_fetch_is_retried_while_the_book_wants_one() -> None:
    h = Harness()
    h.ask(A)
    await h.answer(settles=False, error=ExchangeUnavailableError("/api/v3/depth", 6, "down"))
    await h.answer(settles=False, error=ExchangeUnavailableError("/api/v3/depth", 6, "down"))
    await h.answer()
    assert [t for _, t in h.started] == [0.0, 1.0, 3.0]
    assert h.fetcher.stats.failures == 2
    assert not h.fetcher.in_flight(A)
    assert "3 fetched, 2 failed" in h.fetcher.render()


@pytest.mark.asyncio
async def test_a_failed_fetch_is_not_retried_once_the_book_is_settled() -> None:
    h = Harness()
    h.ask(A)
    await h.answer(settles=True, error=ExchangeUnavailableError("/api/v3/depth", 6, "down"))
    assert len(h.started) == 1
    assert not h.fetcher.in_flight(A)


def test_bad_spacing_is_refused() -> None:
    with pytest.raises(ValueError, match="need 0 <= base <= cap"):
        SnapshotFetcher(lambda s: asyncio.sleep(0), lambda c: None, bool, base=2.0, cap=1.0)


@pytest.mark.asyncio
async def test_answer_resyncs_asks_rest_for_a_thousand_levels() -> None:
    calls: list[tuple[str, int]] = []

    class Rest:
        async def depth(self, symbol: str, limit: int = 100) -> dict[str, Any]:
            calls.append((symbol, limit))
            return {}

    books = LocalBooks()
    tasks: list[asyncio.Task[None]] = []
    fetcher = answer_resyncs(books, Rest(), lambda c: tasks.append(asyncio.ensure_future(c)))  # type: ignore[arg-type]
    books(A).push(diff(A, 1, 2))
    await asyncio.gather(*tasks)
    assert calls == [(A, 1000)]
    assert fetcher.stats.fetches == 1
