"""The fault matrix: every fault the fake exchange injects, alone and all together.

Each case runs the live job against its own `FakeExchange` (real sockets on
127.0.0.1) over one shared `SyntheticMarket` whose clock runs `SPEED` times fast.
All cases run at once on one event loop, so the whole matrix takes about as
long as its slowest case. A run goes through three phases, each ended by a
condition (never by a fixed sleep):

1. until its fault has happened and been survived (the exchange counted the
   injected fault, the client counted what it saw, the preload is in);
2. its faults are switched off and the market clock is halted half a minute
   after the next candle closes, the same market time for every case: a fault
   on the very last final kline could only be found by the gap detector's
   staleness timer, which runs on the event loop's wall clock, not the market's;
3. until the last candle closed before the halt is in its 1m frame.

Then each case must end with the frames of the fault-free case: the 1m, 1h and
1d frames equal to the fault-free run's and to the market's own candles, every
final 1m kline present once; order-book and ticker rows only from frames the
market really produced (each snapshot and ticker equal to the market's at its
id, no id twice, ids sorted, received no earlier than produced); no crash, all
messages accounted for; and the summary's `faults:` line naming the fault.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
import pytest
from live_helpers import MINUTE_MS, SYMBOL, contiguous, live_run, market_truth
from polars.testing import assert_frame_equal

from operators.events import Gap
from pipeline.fake_exchange import Clock, FakeExchange, Faults, Limits, SyntheticMarket
from pipeline.fault_summary import faults_line
from pipeline.live import LiveCounters, LiveRun
from pipeline.rest import RestStats
from pipeline.stats import RunStats
from pipeline.ws import WsStats

SPEED = 60.0
"""A 1m candle closes every wall second."""
HOUR_MS = 3_600_000
FAULTS_TIMEOUT = 30.0
"""Wall seconds every case gets to see (and survive) its faults."""
SETTLE_TIMEOUT = 15.0
"""Wall seconds every case gets, once the market halts, to hold its last candle."""
LIFETIME = 1.5
"""The fake exchange's "24 h": seconds a socket may live."""
NO_FAULTS = Faults()
BINANCE_US_LIMITS = Limits()

pytestmark = pytest.mark.timeout(FAULTS_TIMEOUT + SETTLE_TIMEOUT + 60)


class MarketClock(Clock):
    """A fast market clock that can be halted at a market time (no frame comes after it)."""

    def __init__(self, start_ms: int, speed: float) -> None:
        super().__init__(start_ms, speed)
        self.halt: int | None = None

    def now_ms(self) -> int:
        now = super().now_ms()
        return now if self.halt is None else min(now, self.halt)


class PinnedClock(Clock):
    """A market clock that stands wherever the test puts it: the market's truth at any time."""

    def __init__(self) -> None:
        super().__init__(0, 1.0)
        self.at = 0

    def now_ms(self) -> int:
        return self.at


@dataclass
class Run:
    """One case in flight, then its outcome."""

    case: Case
    exchange: FakeExchange
    live: LiveRun
    task: asyncio.Task[object] | None = None
    error: BaseException | None = None
    faults_seen: bool = False
    settled: bool = False

    def seen(self) -> bool:
        """Phase 1 is over: the run is preloaded and its faults happened and were survived."""
        if self.task is not None and self.task.done():
            return True
        if not self.live.ready.is_set():
            return False
        injected = self.exchange.stats.faults
        if not all(any(k.startswith(key) for k in injected) for key in self.case.injected):
            return False
        return self.case.survived(self)

    def holds(self, last_open: int) -> bool:
        """Phase 3 is over: the 1m frame is full and ends at the last candle before the halt."""
        if self.task is not None and self.task.done():
            return True
        assert self.live.feed is not None
        frame = self.live.feed.frames(SYMBOL)["klines_1m"].get()
        if frame.height < 60 or not contiguous(frame):
            return False
        return frame["timestamp"].dt.epoch("ms").max() == last_open


@dataclass(frozen=True)
class Case:
    """A fault, what the exchange counts when it injects it, and what the client must show."""

    name: str
    faults: Faults = NO_FAULTS
    limits: Limits = BINANCE_US_LIMITS
    ws_options: dict[str, object] = field(default_factory=dict)
    injected: tuple[str, ...] = ()
    """Prefixes of `exchange.stats.faults` keys the fault must have produced."""
    survived: Callable[[Run], bool] = lambda run: True
    """The client's side of phase 1: it saw the fault (and got over it)."""
    summary: tuple[str, ...] = ()
    """Patterns the `faults:` line must match."""
    absent: tuple[str, ...] = ()
    """Patterns the `faults:` line must not match."""


def ws(live: LiveRun) -> WsStats:
    assert live.ws is not None
    return live.ws.stats


def rest(live: LiveRun) -> RestStats:
    assert live.rest is not None
    return live.rest.stats


def feed(live: LiveRun) -> RunStats:
    assert live.feed is not None
    return live.feed.stats


def repeats(live: LiveRun, kind: str) -> int:
    """Order-book and ticker frames the feed dropped as `duplicate` or `stale`."""
    streams = feed(live).streams
    labels = (f"{SYMBOL} depth20", f"{SYMBOL} ticker")
    return sum(getattr(streams[label], kind) for label in labels if label in streams)


def reconnected(run: Run, n: int = 1) -> bool:
    """`n` reconnects, each followed by a backfill, and a socket open again."""
    w = ws(run.live)
    return w.reconnects >= n and run.live.counters.reconnect_backfills >= n and w.connects > n


def healthy_again(run: Run) -> bool:
    """Every misbehaving socket is gone: the one open now came after them."""
    faulty = run.case.faults.faulty_connections
    assert faulty is not None
    stats = run.exchange.stats
    return stats.ws_connections > faulty and stats.ws_open == 1


# Slow reconnects (about 1.5 s, 90 market seconds): a final kline is always missed.
SLOW_RECONNECT: dict[str, object] = {"backoff_base": 1.5, "rand": lambda: 0.999}
SWITCHOVER: dict[str, object] = {"lifetime": LIFETIME, "renew_before": 0.5}

CASES = [
    Case("none", summary=(r"^faults: none$",)),
    Case(
        "dropped socket",
        Faults(drop_after_frames=150, faulty_connections=1),
        ws_options=SLOW_RECONNECT,
        injected=("drop",),
        survived=reconnected,
        summary=(r"\b1 reconnect \(1 dropped socket\)", r"\b1 backfill after a reconnect\b"),
    ),
    Case(
        "silence",
        Faults(silent_after_frames=150, faulty_connections=1),
        ws_options={"silence_timeout": 1.0},
        injected=("silence",),
        survived=lambda run: ws(run.live).silence_timeouts >= 1 and reconnected(run),
        # The halted market is silent too: more timeouts may follow.
        summary=(r"\b\d+ reconnects? \(\d+ silence timeouts?\b",),
    ),
    Case(
        "garbage",
        Faults(garbage_every=20),
        injected=("garbage:truncated", "garbage:not_json", "garbage:wrong_types"),
        survived=lambda run: feed(run.live).bad >= 3,
        summary=(r"\b\d+ garbage frames rejected\b",),
    ),
    Case(
        "duplicates",
        Faults(duplicate_every=10),
        injected=("duplicate",),
        survived=lambda run: repeats(run.live, "duplicate") >= 3,
        summary=(r"\b\d+ duplicates dropped\b",),
    ),
    Case(
        "stale duplicates",
        Faults(duplicate_every=10, duplicate_lag=5),
        injected=("duplicate",),
        survived=lambda run: repeats(run.live, "stale") >= 3,
        summary=(r"\b\d+ duplicates dropped \(\d+ stale\)",),
    ),
    Case(
        "reconnect overlap",
        # The second connection starts with the last 30 frames of each stream again.
        Faults(drop_after_frames=150, reconnect_overlap=30, faulty_connections=2),
        injected=("overlap", "drop"),
        survived=lambda run: reconnected(run, 2) and repeats(run.live, "stale") >= 1,
        summary=(r"\b2 reconnects \(2 dropped sockets\)", r"\bduplicates dropped \(\d+ stale\)"),
    ),
    Case(
        "429",
        Faults(rest_throttle=2, retry_after=1),
        injected=("rest_throttle",),
        survived=lambda run: rest(run.live).rate_limited == 2,
        summary=(r"\b\d+ retries \(2 rate limited 429\b",),
    ),
    Case(
        "418",
        Faults(rest_ban=1, retry_after=1),
        injected=("rest_ban",),
        survived=lambda run: rest(run.live).banned == 1,
        summary=(r"\b\d+ (retry|retries) \(1 banned 418\b",),
    ),
    Case(
        "24 h switchover",
        limits=Limits(ws_lifetime_s=LIFETIME),
        ws_options=SWITCHOVER,
        survived=lambda run: ws(run.live).renewals >= 2,
        summary=(r"\b\d+ switchovers\b",),
        # The old socket is retired only once its successor delivers: nothing to fetch.
        absent=(r"\breconnect", r"\bbackfill"),
    ),
    Case(
        "24 h close unannounced",
        # The client does not know the venue's lifetime: every socket is closed under it.
        limits=Limits(ws_lifetime_s=LIFETIME),
        survived=lambda run: ws(run.live).server_closes >= 1 and reconnected(run),
        summary=(r"\b\d+ reconnects? \([^)]*\b\d+ closed by the server\b",),
    ),
    Case(
        "all together",
        # Each of the first two sockets: 20 frames, 1.2 s of silence (72 market seconds:
        # a final kline lost, a gap to repair), 40 more frames, dropped; the second
        # starts with 10 frames of each stream again. Sockets live 5 s, switched at 4 s.
        Faults(
            silent_after_frames=20,
            silent_for=1.2,
            drop_after_frames=60,
            garbage_every=20,
            duplicate_every=10,
            duplicate_lag=3,
            reconnect_overlap=10,
            faulty_connections=2,
            rest_throttle=1,
            rest_ban=1,
            retry_after=1,
        ),
        limits=Limits(ws_lifetime_s=5.0),
        ws_options={"lifetime": 5.0, "renew_before": 1.0, "silence_timeout": 2.0},
        injected=("drop", "silence", "garbage", "duplicate", "overlap", "rest_"),
        survived=lambda run: (
            healthy_again(run)
            and reconnected(run)
            and ws(run.live).renewals >= 1
            and rest(run.live).rate_limited >= 1
            and rest(run.live).banned >= 1
            and feed(run.live).bad >= 1
            and repeats(run.live, "duplicate") + repeats(run.live, "stale") >= 1
        ),
        summary=(
            r"\breconnects? \([^)]*\b\d+ dropped sockets?\b",
            r"\bswitchovers?\b",
            r"\b\d+ retries \(1 rate limited 429, 1 banned 418\b",
            r"\bgarbage frames? rejected\b",
            r"\bduplicates? dropped\b",
            r"\bbackfills? after (a )?reconnects?\b",
        ),
    ),
]


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Wait until `condition()` holds (True) or `timeout` wall seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@dataclass
class Matrix:
    """Every case's finished run, and the market they ran over."""

    runs: dict[str, Run]
    market: SyntheticMarket
    last_open: int
    """Open time of the last candle that closed before the market halted."""


async def run_matrix() -> Matrix:
    # Ten minutes past the next hour: no hourly or daily candle closes during the
    # run, and the market is ahead of the wall clock, so the gap detector's
    # staleness timer (on the wall clock) never fires early.
    now_ms = time.time_ns() // 1_000_000
    clock = MarketClock((now_ms // HOUR_MS + 1) * HOUR_MS + 10 * MINUTE_MS, SPEED)
    market = SyntheticMarket([SYMBOL], clock=clock)
    runs: dict[str, Run] = {}
    try:
        for case in CASES:
            exchange = FakeExchange(market, case.faults, case.limits)
            urls = await exchange.start()
            options = {"backoff_base": 0.2, **case.ws_options}
            runs[case.name] = Run(case, exchange, live_run(urls, market, None, ws_options=options))
        for run in runs.values():
            run.task = asyncio.ensure_future(run.live.run())
        everyone = list(runs.values())
        await until(lambda: all(r.seen() for r in everyone), FAULTS_TIMEOUT)
        for run in everyone:
            run.faults_seen = run.seen()
            run.exchange.faults = Faults()
        # Half a minute after the next close: at least one candle closes on a healthy feed.
        last_open = clock.now_ms() // MINUTE_MS * MINUTE_MS
        clock.halt = last_open + MINUTE_MS + MINUTE_MS // 2
        await until(lambda: clock.now_ms() == clock.halt, FAULTS_TIMEOUT)
        await until(lambda: all(r.holds(last_open) for r in everyone), SETTLE_TIMEOUT)
        for run in everyone:
            run.settled = run.holds(last_open)
    finally:
        for run in runs.values():
            run.live.stop()
        for run in runs.values():
            if run.task is not None:
                try:
                    await run.task
                except Exception as exc:  # reported by the case's own test
                    run.error = exc
            await run.exchange.stop()
    return Matrix(runs, market, last_open)


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return asyncio.run(run_matrix())


# ---------------------------------------------------------------- the market's truth


class Truth:
    """The market's own order books and tickers at any time (a twin on a pinned clock)."""

    def __init__(self, market: SyntheticMarket) -> None:
        self.clock = PinnedClock()
        self.market = SyntheticMarket([SYMBOL], clock=self.clock, seed=market.seed)

    def depth_at(self, tick_ms: int) -> dict[str, object]:
        self.clock.at = tick_ms
        return self.market.depth(SYMBOL, 20)

    def book_with_id(self, update_id: int, received_ms: int) -> dict[str, object] | None:
        """The 20-level book the market showed with `update_id`, produced by `received_ms`."""
        hi = received_ms // 100  # 100 ms book ticks; produced no later than received
        lo = hi - 36_000  # an hour of ticks back
        while lo < hi:
            mid = (lo + hi + 1) // 2
            found = self.depth_at(mid * 100)["lastUpdateId"]
            assert isinstance(found, int)
            if found <= update_id:
                lo = mid
            else:
                hi = mid - 1
        book = self.depth_at(lo * 100)
        return book if book["lastUpdateId"] == update_id else None

    def ticker_at(self, event_ms: int) -> dict[str, object]:
        self.clock.at = event_ms
        return self.market.ticker_24hr(SYMBOL)


def check_order_book(frame: pl.DataFrame, truth: Truth) -> None:
    assert frame.height > 0
    ids = frame["update_id"]
    assert ids.is_sorted(), "order-book snapshots out of order"
    for (update_id,), rows in frame.group_by("update_id", maintain_order=True):
        assert isinstance(update_id, int)
        received = rows["timestamp"].dt.epoch("ms").min()
        assert isinstance(received, int)
        book = truth.book_with_id(update_id, received)
        assert book is not None, f"update id {update_id} is no book the market produced"
        expected = []
        for side in ("bid", "ask"):
            levels = book[f"{side}s"]
            assert isinstance(levels, list)
            expected += [(side, i, float(p), float(q)) for i, (p, q) in enumerate(levels)]
        got = list(rows.select("side", "level", "price", "quantity").iter_rows())
        # One snapshot per id: a repeat would show up as the rows twice.
        assert got == expected, f"snapshot {update_id} differs from the market's"


TICKER_FIELDS = {
    "best_bid": "bidPrice",
    "bid_qty": "bidQty",
    "best_ask": "askPrice",
    "ask_qty": "askQty",
    "last_price": "lastPrice",
    "last_qty": "lastQty",
    "volume_24h": "volume",
    "quote_volume_24h": "quoteVolume",
}


def check_ticker(frame: pl.DataFrame, truth: Truth) -> None:
    assert frame.height > 0
    ids = frame["event_id"]
    assert ids.is_sorted(), "ticker rows out of order"
    assert ids.is_unique().all(), "ticker rows repeated"
    assert (frame["timestamp"].dt.epoch("ms") == ids).all()
    for row in frame.iter_rows(named=True):
        event_ms = row["event_id"]
        assert event_ms % 1000 == 0, f"{event_ms} is no ticker tick of the market"
        market = truth.ticker_at(event_ms)
        for column, name in TICKER_FIELDS.items():
            assert row[column] == float(str(market[name])), (event_ms, column)


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_a_fault_leaves_the_frames_of_a_fault_free_run(matrix: Matrix, name: str) -> None:
    run = matrix.runs[name]
    live = run.live
    if run.error is not None:
        raise run.error
    assert run.faults_seen, (
        f"the fault never happened or was not survived: exchange {dict(run.exchange.stats.faults)}"
        f"\n{live.summary()}"
    )
    assert run.settled, f"the last candle never reached the 1m frame\n{live.summary()}"
    assert live.feed is not None
    assert live.feed.error is None
    assert feed(live).problems() == []
    assert ws(live).observer_errors == rest(live).observer_errors == 0

    frames = live.feed.snapshot()[SYMBOL]
    baseline = matrix.runs["none"].live.feed
    assert baseline is not None
    expected = baseline.snapshot()[SYMBOL]

    one_minute = frames["klines_1m"]
    assert one_minute.height == 60
    assert one_minute["timestamp"].is_unique().all()
    assert contiguous(one_minute)
    assert one_minute["timestamp"].dt.epoch("ms").max() == matrix.last_open
    assert_frame_equal(one_minute, market_truth(matrix.market, one_minute))
    for buffer in ("klines_1m", "klines_1h", "klines_1d"):
        assert_frame_equal(frames[buffer], expected[buffer])
    assert frames["klines_1h"].height == 72
    assert frames["klines_1d"].height == 60
    hourly = frames["klines_1h"]
    assert_frame_equal(hourly, market_truth(matrix.market, hourly, interval="1h"))

    truth = Truth(matrix.market)
    check_order_book(frames["order_book"], truth)
    check_ticker(frames["ticker"], truth)

    line = live.summary().splitlines()[-1]
    assert line.startswith("faults: ")
    for pattern in run.case.summary:
        assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
    for pattern in run.case.absent:
        assert not re.search(pattern, line), f"{pattern!r} in {line!r}"


# ---------------------------------------------------------------- the faults line


def test_the_faults_line_names_every_fault_in_words() -> None:
    stats = RunStats()
    stats.stream(f"{SYMBOL} depth20").duplicate = 9
    stats.stream(f"{SYMBOL} depth20").stale = 2
    stats.stream(f"{SYMBOL} ticker").duplicate = 1
    # Repeated forming klines are a quiet market, not a fault: not counted.
    stats.stream(f"{SYMBOL} kline_1m").duplicate = 5
    stats.stream(f"{SYMBOL} kline_1m").bad = 3
    stats.stream("ws (stream unknown)").bad = 1
    stats.gaps.append(Gap(SYMBOL, "1m", 0, MINUTE_MS, 0))
    ws_stats = WsStats(reconnects=2, silence_timeouts=1, dropped=1, renewals=1)
    rest_stats = RestStats(retries=3, rate_limited=2, banned=1)
    counters = LiveCounters(gaps_repaired=1, reconnect_backfills=2)
    assert faults_line([SYMBOL], counters, stats, rest_stats, ws_stats) == (
        "faults: 2 reconnects (1 silence timeout, 1 dropped socket), 1 switchover, "
        "3 retries (2 rate limited 429, 1 banned 418), 4 garbage frames rejected, "
        "12 duplicates dropped (2 stale), 1 gap repaired, 2 backfills after reconnects"
    )


def test_the_faults_line_of_a_clean_run_says_none() -> None:
    stats = RunStats()
    stats.stream(f"{SYMBOL} kline_1m").duplicate = 4
    line = faults_line([SYMBOL], LiveCounters(), stats, RestStats(), WsStats())
    assert line == "faults: none"
    assert faults_line([SYMBOL], LiveCounters()) == "faults: none"


def test_the_faults_line_counts_causes_without_a_reconnect_and_failures() -> None:
    ws_stats = WsStats(server_closes=1, connect_failures=2)
    rest_stats = RestStats(retries=1, server_errors=1, timeouts=1, connection_errors=1)
    counters = LiveCounters(failed_requests=1, store_failures=2)
    assert faults_line(["BTCUSDT"], counters, None, rest_stats, ws_stats) == (
        "faults: 0 reconnects (1 closed by the server, 2 failed connects), "
        "1 retry (1 server error 5xx, 1 timeout, 1 connection error), "
        "1 failed request, 2 failed store writes"
    )
