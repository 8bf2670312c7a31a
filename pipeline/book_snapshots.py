"""Answering a local book's snapshot requests with REST depth snapshots, without hammering REST.

A live run subscribes `SnapshotFetcher.request` to `LocalBooks.resyncs`; the
fetcher calls `fetch(symbol)` (a live run passes `RestClient.depth(symbol,
limit=1000)`, whose response enters the feed as a captured `RawMessage`; the
fetcher never sees the book itself). Per symbol:

- at most one request is in flight; requests made meanwhile are merged into
  one follow-up, made only if the book still wants a snapshot once the answer
  is in (`wants`), since that answer usually settles them;
- a failed request is retried, while the book still wants one;
- consecutive fetches are spaced out: `base` seconds after the first, then
  twice as long each time, up to `cap`; once a symbol has gone `quiet` seconds
  without a fetch, the next one goes at once again. A stream that flaps (drops,
  gaps, crossed books) therefore costs a snapshot every `cap` seconds at most,
  while a rare gap is repaired immediately.

The REST client keeps the venue's weight limits on top of this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from operators import BookResync
from pipeline._pacing import Sleep
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.local_book import LocalBooks
    from pipeline.rest import RestClient

__all__ = ["SNAPSHOT_LIMIT", "SnapshotFetcher", "SnapshotStats", "answer_resyncs"]

log = logging.getLogger(__name__)

SNAPSHOT_LIMIT: Final = 1000
"""Levels asked of `/api/v3/depth`: Binance's documented choice for a local book."""


@dataclass
class SnapshotStats:
    """What the fetcher did (cumulative, all symbols)."""

    requests: int = 0
    """`BookResync`s received."""
    fetches: int = 0
    """Snapshots asked for over REST."""
    failures: int = 0
    """Fetches that raised (logged, retried while still wanted)."""
    merged: int = 0
    """Requests merged into a fetch already under way or waiting."""
    wait_seconds: float = 0.0
    """Time spent spacing fetches out."""


class _Symbol:
    __slots__ = ("again", "busy", "last_start", "next_allowed", "streak")

    def __init__(self) -> None:
        self.busy = False
        self.again = False
        self.streak = -1
        self.last_start = -float("inf")
        self.next_allowed = -float("inf")


class SnapshotFetcher:
    """Fetches depth snapshots for `BookResync` requests; see the module doc for the rules.

    - `fetch(symbol)`: makes the REST request (its answer reaches the book elsewhere).
    - `spawn(coroutine)`: runs a background job the owner cancels at shutdown.
    - `wants(symbol)`: whether the book still needs a snapshot (`LocalBooks.wants_snapshot`).
    - `base`, `cap`, `quiet`: spacing between a symbol's fetches, seconds
      (`quiet` defaults to `2 * cap`).
    - `clock` (monotonic seconds) and `sleep`: injectable for tests.
    """

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[object]],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        wants: Callable[[str], bool],
        *,
        base: float = 1.0,
        cap: float = 60.0,
        quiet: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 <= base <= cap:
            raise ValueError(f"need 0 <= base <= cap, got base={base!r}, cap={cap!r}")
        self._fetch = fetch
        self._spawn = spawn
        self._wants = wants
        self._base = base
        self._cap = cap
        self._quiet = 2 * cap if quiet is None else quiet
        self._clock = clock
        self._sleep = sleep
        self._symbols: dict[str, _Symbol] = {}
        self.stats = SnapshotStats()

    def request(self, resync: BookResync) -> None:
        """A book asked for a snapshot: fetch one now, later, or with the fetch under way."""
        self.stats.requests += 1
        state = self._symbols.get(resync.symbol)
        if state is None:
            state = self._symbols[resync.symbol] = _Symbol()
        if state.busy:
            self.stats.merged += 1
            state.again = True
            return
        state.busy = True
        self._spawn(self._serve(resync.symbol, state))

    def in_flight(self, symbol: str) -> bool:
        """Whether a fetch for `symbol` is under way or waiting for its turn."""
        state = self._symbols.get(symbol)
        return state is not None and state.busy

    async def _serve(self, symbol: str, state: _Symbol) -> None:
        try:
            while True:
                delay = state.next_allowed - self._clock()
                if delay > 0:
                    log.info("%s depth snapshot in %.1f s (spacing out requests)", symbol, delay)
                    self.stats.wait_seconds += delay
                    await self._sleep(delay)
                # Whatever was asked until now, this fetch answers.
                state.again = False
                self._spaced(state)
                ok = await self._fetched(symbol)
                # A failure, or a request made meanwhile: again, if the answer did not settle it.
                if (not ok or state.again) and self._wants(symbol):
                    continue
                return
        finally:
            state.busy = False

    def _spaced(self, state: _Symbol) -> None:
        now = self._clock()
        state.streak = state.streak + 1 if now - state.last_start < self._quiet else 0
        state.last_start = now
        state.next_allowed = now + min(self._cap, self._base * 2.0 ** min(state.streak, 62))

    async def _fetched(self, symbol: str) -> bool:
        self.stats.fetches += 1
        log.debug("fetching a depth snapshot of %s", symbol)
        try:
            await self._fetch(symbol)
        except PipelineError as exc:
            self.stats.failures += 1
            log.warning("depth snapshot of %s failed: %s", symbol, exc)
            return False
        return True

    def render(self) -> str:
        """One line for a run's summary."""
        s = self.stats
        return (
            f"book snapshots: {s.requests} requested, {s.fetches} fetched, {s.failures} failed, "
            f"{s.merged} merged, {s.wait_seconds:.1f} s spacing"
        )


def answer_resyncs(
    books: LocalBooks,
    rest: Callable[[], RestClient] | RestClient,
    spawn: Callable[[Coroutine[Any, Any, None]], object],
    *,
    limit: int = SNAPSHOT_LIMIT,
    **spacing: Any,
) -> SnapshotFetcher:
    """Answer every request of `books` with `GET /api/v3/depth?symbol=..&limit=..` on `rest`.

    `rest` may be a callable returning the client at fetch time (a client made
    lazily). The response is not handed to the book here: it reaches it through
    `rest.messages` and the feed, like every response, so a capture holds it.
    `spacing`: `SnapshotFetcher`'s `base`, `cap`, `quiet`, `clock`, `sleep`.
    """

    async def fetch(symbol: str) -> object:
        client = rest if not callable(rest) else rest()
        return await client.depth(symbol, limit=limit)

    fetcher = SnapshotFetcher(fetch, spawn, books.wants_snapshot, **spacing)
    books.resyncs.subscribe(fetcher.request)
    return fetcher
