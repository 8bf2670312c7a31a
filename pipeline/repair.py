"""Repairing what a live feed missed, and holding live messages while history loads.

Two helpers shared by `pipeline.live.LiveRun` and `pipeline.DataManager`:

- `Holdback` holds WebSocket messages while a preload runs and releases them
  after it, so history enters the feed before the live stream (the feed's
  dedupe and upsert make the seam neither miss nor double a kline).
- `KlineRepairer` listens to a `Feed`'s connections and gaps and fetches over
  REST what they say was missed: after every reconnect (a socket opened after
  one closed) the 1m klines since the last final one kept, per symbol; for
  every `Gap`, exactly its range. The responses enter the feed like any other
  REST response (through `RestClient.messages`), so they are captured and a
  replay folds them too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from operators import interval_ms
from operators.events import Connected, Disconnected, Gap, RawMessage
from pipeline.config import FeedConfig
from pipeline.errors import PipelineError
from pipeline.feed import Feed
from pipeline.rest import RestClient

__all__ = ["Holdback", "KlineRepairer", "RepairCounters", "RepairCounts", "guarded"]

log = logging.getLogger(__name__)

BACKFILL_INTERVAL: Final = "1m"
"""The interval the WebSocket carries, so the one a reconnect may have missed finals of."""
_BACKFILL_BUFFER: Final = "klines_1m"


class Holdback:
    """Passes messages to `push`, except while held: then keeps them until released.

    Holds nest: `hold()` twice needs `release()` twice (a preload inside a
    preload); `release(everything=True)` ends every hold at once (shutdown).
    Held messages are passed on in arrival order.
    """

    def __init__(self, push: Callable[[RawMessage], None], *, held: bool = False) -> None:
        self._push = push
        self._holds = 1 if held else 0
        self._held: list[RawMessage] = []

    @property
    def holding(self) -> bool:
        """True while messages are being kept back."""
        return self._holds > 0

    def __call__(self, raw: RawMessage) -> None:
        """Pass `raw` on now, or keep it until the last hold is released."""
        if self._holds:
            self._held.append(raw)
        else:
            self._push(raw)

    def hold(self) -> None:
        """Keep messages back from now on, until a matching `release()`."""
        self._holds += 1

    def release(self, *, everything: bool = False) -> int:
        """End one hold (all with `everything`); once none is left, pass the kept ones on.

        Returns how many messages were passed on. Releasing with no hold left
        is harmless.
        """
        self._holds = 0 if everything else max(0, self._holds - 1)
        if self._holds or not self._held:
            return 0
        # Swapped out first: a push that leads to more messages must not see these again.
        held, self._held = self._held, []
        log.debug("releasing %d WebSocket messages held during a preload", len(held))
        push = self._push
        for raw in held:
            push(raw)
        return len(held)


class RepairCounts(Protocol):
    """Where a `KlineRepairer` counts what it did (`RepairCounters`, `LiveCounters`)."""

    reconnect_backfills: int
    gaps_repaired: int
    failed_requests: int


@dataclass
class RepairCounters:
    """What a `KlineRepairer` did."""

    reconnect_backfills: int = 0
    """Reconnects after which the 1m klines since the last one kept were fetched."""
    gaps_repaired: int = 0
    """Gaps whose range was fetched over REST."""
    failed_requests: int = 0
    """Backfills and repairs that raised (logged; the feed goes on)."""


_Spawn = Callable[[Coroutine[Any, Any, None]], object]


class KlineRepairer:
    """Fetches over REST the klines a `Feed` reports missing; see the module doc.

    - `rest`: the client to fetch with; its responses must reach `feed`.
    - `symbols`: the symbols whose 1m klines are streamed: a reconnect
      backfills them and their gaps are repaired; others' are left alone (a
      silent series of a symbol only preloaded is not a loss). Called at each
      trigger: a `DataManager` adds symbols as it goes.
    - `now_ms`: the clock the feed's receive times use; it sizes a backfill.
    - `spawn`: starts a fetch as a task owned by the caller (who cancels it on
      shutdown); the repairer never blocks the feed.

    `attach()` subscribes to the feed; `close()` stops starting new fetches.
    A second reconnect while a symbol's backfill is in flight runs that backfill
    once more after it; a gap whose exact range is already being fetched is
    not fetched twice.
    """

    def __init__(
        self,
        rest: RestClient,
        feed: Feed,
        config: FeedConfig,
        counters: RepairCounts,
        spawn: _Spawn,
        *,
        symbols: Callable[[], Iterable[str]],
        now_ms: Callable[[], int],
    ) -> None:
        self.rest = rest
        self.feed = feed
        self.config = config
        self.counters = counters
        self._spawn = spawn
        self._symbols = symbols
        self._now_ms = now_ms
        self._closed_since_open = False
        self._closed = False
        self._backfilling: dict[str, bool] = {}
        """Symbol -> whether another backfill is due once the one in flight ends."""
        self._repairing: set[Gap] = set()
        """Gaps in flight, keyed without their receive time (`t` = 0)."""

    def attach(self) -> None:
        """Start reacting to the feed's connections and gaps (until it completes)."""
        self.feed.connections().subscribe(self.on_connection)
        self.feed.gaps().subscribe(self.on_gap)

    def close(self) -> None:
        """Start no fetch from now on (the ones in flight are the caller's to cancel)."""
        self._closed = True

    # ------------------------------------------------------------ triggers
    def on_connection(self, event: Connected | Disconnected) -> None:
        """A socket opened after one closed: backfill every symbol's 1m klines."""
        if isinstance(event, Disconnected):
            # A switchover retires the old socket only once the new one delivers: no gap.
            if not event.replaced:
                self._closed_since_open = True
        elif self._closed_since_open:
            self._closed_since_open = False
            self.counters.reconnect_backfills += 1
            for symbol in self._symbols():
                self.backfill(symbol)

    def on_gap(self, gap: Gap) -> None:
        """Fetch exactly the missing range of `gap` (once while in flight)."""
        key = gap._replace(t=0)
        if self._closed or key in self._repairing or gap.symbol not in self._symbols():
            return
        self._repairing.add(key)
        self._spawn(self._repair(key))

    def backfill(self, symbol: str) -> None:
        """Fetch `symbol`'s 1m klines since the last final one kept (rerun if one is in flight)."""
        if self._closed:
            return
        if symbol in self._backfilling:
            self._backfilling[symbol] = True
            return
        self._backfilling[symbol] = False
        self._spawn(self._backfill(symbol))

    # ------------------------------------------------------------ fetches
    async def _backfill(self, symbol: str) -> None:
        try:
            while True:
                await self._guarded(
                    self._fetch_since_last(symbol), f"1m backfill of {symbol} after a reconnect"
                )
                if not self._backfilling.get(symbol) or self._closed:
                    return
                self._backfilling[symbol] = False
        finally:
            self._backfilling.pop(symbol, None)

    async def _fetch_since_last(self, symbol: str) -> None:
        capacity = self.config.capacity(_BACKFILL_BUFFER)
        frame = self.feed.frames(symbol)[_BACKFILL_BUFFER].get()
        last = None if frame.is_empty() else frame["timestamp"].dt.epoch("ms").max()
        if last is None:
            # Nothing kept yet: fill the frame (one row more, the forming candle).
            await self.rest.klines(symbol, BACKFILL_INTERVAL, limit=capacity + 1)
            return
        assert isinstance(last, int)
        # The candles opened after `last` up to the forming one, plus one spare in
        # case this clock is behind the exchange's.
        missing = max(0, (self._now_ms() - last) // interval_ms(BACKFILL_INTERVAL)) + 1
        if missing > capacity + 1:
            # Longer than the frame: only the newest rows would stay in it.
            await self.rest.klines(symbol, BACKFILL_INTERVAL, limit=capacity + 1)
        else:
            # The client pages forward past 1000 rows from startTime.
            await self.rest.klines(symbol, BACKFILL_INTERVAL, limit=missing, start_time=last + 1)

    async def _repair(self, gap: Gap) -> None:
        try:
            step = interval_ms(gap.interval)
            rows = max(1, (gap.end - gap.start + step - 1) // step)
            request = self.rest.klines(
                gap.symbol, gap.interval, limit=rows, start_time=gap.start, end_time=gap.end - 1
            )
            what = f"repair of {gap.symbol} {gap.interval} gap [{gap.start}, {gap.end})"
            if await self._guarded(request, what):
                self.counters.gaps_repaired += 1
        finally:
            self._repairing.discard(gap)

    async def _guarded(self, request: Awaitable[object], what: str) -> bool:
        return await guarded(request, what, self.counters)


async def guarded(request: Awaitable[object], what: str, counters: RepairCounts) -> bool:
    """Await a REST `request`; a failure is counted and logged, not raised (the feed goes on)."""
    try:
        await request
    except PipelineError as exc:
        counters.failed_requests += 1
        log.warning("%s failed: %s", what, exc)
        return False
    log.debug("%s done", what)
    return True
