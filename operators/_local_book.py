"""`local_book`: a symbol's full L2 book from depth diffs plus REST snapshots.

Binance's documented procedure ("How to manage a local order book correctly",
spot WebSocket streams): buffer the `depthUpdate` diffs, take a REST depth
snapshot, drop the diffs with `u <= lastUpdateId`, start from the first diff with
`U <= lastUpdateId + 1 <= u`, then apply each diff whose `U` is the previous
`u + 1`. Quantities are absolute; a zero removes the level.

Hand-written rather than composed: the procedure is a state machine (waiting for
a snapshot, holding a snapshot that is ahead of the stream, in sync) whose state
must live per subscription, and one diff may produce several outputs at once
(the resynced book, a stale mark, a new snapshot request).

The output is a stream of immutable values, never a view of the operator's own
dicts: `BookUpdate`s carry the changes just applied (or the whole book after a
(re)sync), so a consumer keeps its own copy with a couple of dict writes per
level, and a marble test, a buffer or a replay sees each state as it was. When
the book goes out of sync, consumers simply stop applying changes: what they
hold is the last in-sync state, which is exactly what must be served meanwhile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from heapq import heapify, heappop, heappush
from typing import Final, NamedTuple, TypeAlias

from reactivex import Observable, abc

from operators.events import BookSnapshot, DepthDiff, Disconnected

__all__ = [
    "RESYNC_BAD_DIFF",
    "RESYNC_BAD_SNAPSHOT",
    "RESYNC_CROSSED",
    "RESYNC_DISCONNECT",
    "RESYNC_GAP",
    "RESYNC_OVERFLOW",
    "RESYNC_REASONS",
    "RESYNC_SNAPSHOT_BEHIND",
    "RESYNC_START",
    "BookEvent",
    "BookOperator",
    "BookResync",
    "BookUpdate",
    "PriceLevel",
    "local_book_",
]

PriceLevel: TypeAlias = tuple[float, float]
"""`(price, quantity)` as floats; in a change, quantity 0.0 removes the level.

Floats are exact keys here: Binance prices have at most 8 decimals and far fewer
than 15 significant digits, so two decimal strings name the same level exactly
when their floats are equal (`"0.05000000"` and `"0.0500"` included), which
string keys would get wrong.
"""

RESYNC_START: Final = "start"
"""The first diff arrived and no snapshot is at hand yet."""
RESYNC_GAP: Final = "gap"
"""A diff's `U` skipped past the book's `u + 1`: updates were lost."""
RESYNC_DISCONNECT: Final = "disconnect"
"""The socket dropped; asked for on the first diff of the new connection."""
RESYNC_SNAPSHOT_BEHIND: Final = "snapshot_behind"
"""The snapshot is older than the oldest diff still at hand: it cannot be bridged."""
RESYNC_OVERFLOW: Final = "overflow"
"""`max_buffered` diffs arrived since the last request and no usable snapshot did."""
RESYNC_CROSSED: Final = "crossed"
"""Best bid >= best ask after applying: the book cannot be right."""
RESYNC_BAD_DIFF: Final = "bad_diff"
"""A diff level was not a `[price, quantity]` pair of positive finite decimals."""
RESYNC_BAD_SNAPSHOT: Final = "bad_snapshot"
"""A snapshot level was not a `[price, quantity]` pair of positive finite decimals."""
RESYNC_REASONS: Final = (
    RESYNC_START,
    RESYNC_GAP,
    RESYNC_DISCONNECT,
    RESYNC_SNAPSHOT_BEHIND,
    RESYNC_OVERFLOW,
    RESYNC_CROSSED,
    RESYNC_BAD_DIFF,
    RESYNC_BAD_SNAPSHOT,
)


class BookUpdate(NamedTuple):
    """The local book changed: a diff was applied, the book (re)synced, or it went stale.

    Fold rule for a consumer that keeps the book (see `sinks.BookFrame`):
    `reset` -> replace both sides with `bids`/`asks`; otherwise, if `synced`,
    set each `(price, qty)` (qty 0.0: delete); if not `synced`, keep the book as
    it is and mark it stale. A consumer that has not seen a `reset` yet must
    ignore non-reset updates.
    """

    symbol: str
    update_id: int
    """The `u` of the last diff applied (the snapshot's `lastUpdateId` if none was).
    When stale: that of the last in-sync state, 0 if the book never synced."""
    synced: bool
    """False: the book is out of sync; a `BookResync` follows or already went out."""
    reset: bool
    """True: `bids`/`asks` are the whole book, in no particular order."""
    bids: list[PriceLevel]
    """Changes (or the whole side if `reset`); never mutated after emission."""
    asks: list[PriceLevel]
    best_bid: float | None
    """Highest bid of the (last in-sync) book; None when that side is empty."""
    best_ask: float | None
    t: int
    """Receive time (ns) of the event that caused this update."""


class BookResync(NamedTuple):
    """The book needs a fresh REST depth snapshot: answer with a `BookSnapshot(source="rest")`."""

    symbol: str
    reason: str
    """One of `RESYNC_REASONS`."""
    t: int
    """Receive time (ns) of the event that revealed the need."""


BookEvent: TypeAlias = BookUpdate | BookResync
"""What `local_book` emits."""

BookOperator: TypeAlias = Callable[[Observable[object]], Observable[BookEvent]]
"""`local_book(...)`: takes any event stream (it picks what it needs)."""

_INF: Final = float("inf")
_NOTHING: Final[tuple[BookEvent, ...]] = ()


class _Side:
    """One side of the book: price -> quantity, plus a heap that finds the best price.

    The heap holds `sign * price` (bids negated, so the best is always the
    minimum) and is cleaned lazily: a price removed from the dict stays in the
    heap until it surfaces at the top. A rebuild when it grows past twice the
    dict bounds memory; the best price costs O(1) amortised instead of the O(n)
    `max()` a removal of the top level would otherwise force.
    """

    __slots__ = ("heap", "levels", "sign")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.levels: dict[float, float] = {}
        self.heap: list[float] = []

    def apply(self, raw: Iterable[Sequence[str]]) -> list[PriceLevel]:
        """Apply `[[price, qty], ...]` strings; return them as floats.

        Raises ValueError/TypeError on a bad level, possibly after earlier levels
        were written: the caller then abandons this side (it never reaches a
        consumer), which spares a separate checking pass on the hot path.
        """
        out = [(float(p), float(q)) for p, q in raw]
        levels = self.levels
        heap = self.heap
        sign = self.sign
        for p, q in out:
            if q:
                # Chained comparisons also reject NaN, which would corrupt keys and heaps.
                if not (0.0 < p < _INF and 0.0 < q < _INF):
                    raise ValueError(f"bad level [{p!r}, {q!r}]")
                if p not in levels:
                    heappush(heap, sign * p)
                levels[p] = q
            else:
                # Binance may remove a level the book never had: that is normal.
                levels.pop(p, None)
        if len(heap) > 2 * len(levels) + 64:
            self.heap = heap = [sign * price for price in levels]
            heapify(heap)
        return out

    def best(self) -> float | None:
        heap = self.heap
        levels = self.levels
        sign = self.sign
        while heap:
            p = heap[0] * sign
            if p in levels:
                return p
            heappop(heap)
        return None


class _Keeper:
    """The per-subscription state machine; each method returns the events to emit.

    Every method finishes changing state before it returns, and a `BookResync`
    is always the last event returned: a pipeline that answers a request
    synchronously re-enters a consistent keeper.
    """

    __slots__ = (
        "asks",
        "best_ask",
        "best_bid",
        "bids",
        "buffer",
        "last_u",
        "max_buffered",
        "need",
        "pending",
        "requested",
        "since_request",
        "symbol",
        "synced",
    )

    def __init__(self, symbol: str, max_buffered: int) -> None:
        self.symbol = symbol
        self.max_buffered = max_buffered
        self.synced = False
        # Read only while synced; replaced wholesale by every (re)sync.
        self.bids = _Side(-1.0)
        self.asks = _Side(1.0)
        self.last_u = 0
        self.best_bid: float | None = None
        self.best_ask: float | None = None
        # Out of sync: the diffs since the book was lost, oldest first.
        self.buffer: deque[DepthDiff] = deque()
        # A snapshot ahead of every diff buffered so far (the buffer is then empty).
        self.pending: BookSnapshot | None = None
        # The reason to give when the next diff shows the stream is live.
        self.need = RESYNC_START
        self.requested = False
        self.since_request = 0

    # -- requests and state changes ---------------------------------------------

    def _request(self, reason: str, t: int) -> BookResync:
        self.requested = True
        self.since_request = 0
        return BookResync(self.symbol, reason, t)

    def _stale(self, t: int) -> BookUpdate:
        """Leave sync. The keeper's own sides are not read again before a resync
        replaces them (they may hold a crossing or half-applied diff); consumers
        keep the last in-sync state, which they never saw those changes reach."""
        self.synced = False
        return BookUpdate(
            self.symbol, self.last_u, False, False, [], [], self.best_bid, self.best_ask, t
        )

    # -- inputs -------------------------------------------------------------------

    def diff(self, d: DepthDiff) -> Sequence[BookEvent]:
        if self.synced:
            return self._diff_synced(d)
        return self._diff_waiting(d)

    def _diff_synced(self, d: DepthDiff) -> Sequence[BookEvent]:
        u = d.final_id
        last = self.last_u
        if u <= last:
            # Already applied (a repeat, or a replayed frame): the book holds it.
            return _NOTHING
        if d.first_id > last + 1:
            out = self._stale(d.t)
            self.buffer.append(d)
            return (out, self._request(RESYNC_GAP, d.t))
        # A diff with U <= last < u overlaps what was applied; its quantities are
        # absolute, so applying it whole still yields the book at u.
        raw_bids = d.bids
        raw_asks = d.asks
        try:
            # Most diffs touch one side only: skip the other's call altogether.
            bids = self.bids.apply(raw_bids) if raw_bids else []
            asks = self.asks.apply(raw_asks) if raw_asks else []
        except (TypeError, ValueError):
            # Nothing after this diff can be bridged: a snapshot newer than it is needed.
            return (self._stale(d.t), self._request(RESYNC_BAD_DIFF, d.t))
        bb = self.bids.best() if bids else self.best_bid
        ba = self.asks.best() if asks else self.best_ask
        if bb is not None and ba is not None and bb >= ba:
            out = self._stale(d.t)
            # The diff may well be right and the book wrong (a level missed):
            # keep it, a snapshot older than its u can still use it.
            self.buffer.append(d)
            return (out, self._request(RESYNC_CROSSED, d.t))
        self.last_u = u
        self.best_bid = bb
        self.best_ask = ba
        return (BookUpdate(self.symbol, u, True, False, bids, asks, bb, ba, d.t),)

    def _diff_waiting(self, d: DepthDiff) -> Sequence[BookEvent]:
        snap = self.pending
        if snap is not None:
            lid = snap.last_update_id
            if d.final_id <= lid:
                return _NOTHING
            self.pending = None
            self.buffer.append(d)
            if d.first_id <= lid + 1:
                return self._sync(snap, d.t)
            return (self._request(RESYNC_SNAPSHOT_BEHIND, d.t),)
        buffer = self.buffer
        buffer.append(d)
        if not self.requested:
            # Asked for only now that a diff proves the stream is live, so the
            # snapshot cannot predate the diffs buffered to bridge it.
            return (self._request(self.need, d.t),)
        self.since_request += 1
        if len(buffer) > self.max_buffered:
            buffer.popleft()
            if self.since_request >= self.max_buffered:
                # The last request went unanswered (or its answer is too old by now).
                return (self._request(RESYNC_OVERFLOW, d.t),)
        return _NOTHING

    def snapshot(self, s: BookSnapshot) -> Sequence[BookEvent]:
        if self.synced:
            # The book is right by the U/u rules; a late answer to an old request adds nothing.
            return _NOTHING
        self.requested = False
        lid = s.last_update_id
        buffer = self.buffer
        while buffer and buffer[0].final_id <= lid:
            buffer.popleft()
        if not buffer:
            # Ahead of the stream (or no diff yet): hold it until a diff reaches lid + 1.
            pending = self.pending
            if pending is None or lid >= pending.last_update_id:
                self.pending = s
            return _NOTHING
        if buffer[0].first_id > lid + 1:
            return (self._request(RESYNC_SNAPSHOT_BEHIND, s.t),)
        self.pending = None
        return self._sync(s, s.t)

    def disconnect(self, t: int) -> Sequence[BookEvent]:
        # Diffs across a reconnect are not contiguous; only a new snapshot helps.
        self.buffer.clear()
        self.requested = False
        self.need = RESYNC_DISCONNECT
        if self.synced:
            return (self._stale(t),)
        return _NOTHING

    # -- (re)sync -----------------------------------------------------------------

    def _sync(self, s: BookSnapshot, t: int) -> Sequence[BookEvent]:
        """Build the book from `s` and the buffered diffs (the first of which covers
        `lastUpdateId + 1`), then leave the diffs that could not be applied buffered."""
        bids = _Side(-1.0)
        asks = _Side(1.0)
        try:
            bids.apply(s.bids)
            asks.apply(s.asks)
        except (TypeError, ValueError):
            return (self._request(RESYNC_BAD_SNAPSHOT, t),)
        buffer = self.buffer
        last = s.last_update_id
        used = 0
        broken: str | None = None
        for d in buffer:
            if d.final_id <= last:
                used += 1
                continue
            if d.first_id > last + 1:
                broken = RESYNC_GAP
                break
            try:
                bids.apply(d.bids)
                asks.apply(d.asks)
            except (TypeError, ValueError):
                broken = RESYNC_BAD_DIFF
                used += 1
                break
            last = d.final_id
            used += 1
        bb = bids.best()
        ba = asks.best()
        crossed = bb is not None and ba is not None and bb >= ba
        if broken is not None or not crossed:
            # The applied diffs are spent: a later resync needs a newer snapshot
            # (past the break), or none at all.
            for _ in range(used):
                buffer.popleft()
        if crossed:
            return (self._request(RESYNC_CROSSED, t),)
        self.synced = True
        self.bids = bids
        self.asks = asks
        self.last_u = last
        self.best_bid = bb
        self.best_ask = ba
        update = BookUpdate(
            self.symbol,
            last,
            True,
            True,
            list(bids.levels.items()),
            list(asks.levels.items()),
            bb,
            ba,
            t,
        )
        if broken is None:
            return (update,)
        return (update, self._stale(t), self._request(broken, t))


def local_book_(symbol: str, max_buffered: int = 1000) -> BookOperator:
    """Implementation of `operators.local_book` (documented there)."""
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"local_book symbol must be a non-empty string, got {symbol!r}")
    if isinstance(max_buffered, bool) or not isinstance(max_buffered, int) or max_buffered < 1:
        raise ValueError(f"local_book max_buffered must be a positive int, got {max_buffered!r}")
    sym = symbol.upper()

    def operator(source: Observable[object]) -> Observable[BookEvent]:
        def subscribe(
            observer: abc.ObserverBase[BookEvent], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            keeper = _Keeper(sym, max_buffered)
            emit = observer.on_next
            on_diff = keeper.diff
            on_snapshot = keeper.snapshot
            on_disconnect = keeper.disconnect

            def on_next(event: object) -> None:
                out: Sequence[BookEvent]
                if type(event) is DepthDiff:
                    if event.symbol != sym:
                        return
                    out = on_diff(event)
                elif type(event) is BookSnapshot:
                    if event.symbol != sym or event.source != "rest":
                        return
                    out = on_snapshot(event)
                elif type(event) is Disconnected:
                    if event.replaced:
                        return  # the successor's diffs continue the sequence
                    out = on_disconnect(event.t)
                else:
                    return
                for item in out:
                    emit(item)

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator
