"""Pure ReactiveX operators over market-data events.

Each operator lives in its own private module and is re-exported here with its
full documentation, the way `reactivex.operators` does it. Nothing in this
package does I/O, touches asyncio or reads the wall clock: time-based operators
take a scheduler, so tests drive them on a `TestScheduler` and replays on a
virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from reactivex import Observable
from reactivex.abc import SchedulerBase

from operators import _intervals
from operators._dedupe import DUPLICATE
from operators._detect_gaps import DEFAULT_GRACE_MS
from operators._final_only import NON_FINAL
from operators._intervals import INTERVAL_MS
from operators._local_book import (
    RESYNC_BAD_DIFF,
    RESYNC_BAD_SNAPSHOT,
    RESYNC_CROSSED,
    RESYNC_DISCONNECT,
    RESYNC_GAP,
    RESYNC_OVERFLOW,
    RESYNC_REASONS,
    RESYNC_SNAPSHOT_BEHIND,
    RESYNC_START,
    BookEvent,
    BookOperator,
    BookResync,
    BookUpdate,
    PriceLevel,
)
from operators._monotonic import STALE
from operators._parse import MAX_BAD_TEXT, Parser
from operators.events import (
    BadMessage,
    BookSnapshot,
    Connected,
    ControlReply,
    DepthDiff,
    Disconnected,
    Event,
    Gap,
    Ignored,
    Kline,
    MarketEvent,
    RawMessage,
    Ticker,
)

__all__ = [
    "DEFAULT_GRACE_MS",
    "DUPLICATE",
    "INTERVAL_MS",
    "MAX_BAD_TEXT",
    "NON_FINAL",
    "RESYNC_BAD_DIFF",
    "RESYNC_BAD_SNAPSHOT",
    "RESYNC_CROSSED",
    "RESYNC_DISCONNECT",
    "RESYNC_GAP",
    "RESYNC_OVERFLOW",
    "RESYNC_REASONS",
    "RESYNC_SNAPSHOT_BEHIND",
    "RESYNC_START",
    "STALE",
    "BadMessage",
    "BookEvent",
    "BookOperator",
    "BookResync",
    "BookSnapshot",
    "BookUpdate",
    "Connected",
    "ControlReply",
    "DepthDiff",
    "Disconnected",
    "Event",
    "Gap",
    "Ignored",
    "Kline",
    "MarketEvent",
    "Parser",
    "PriceLevel",
    "RawMessage",
    "Ticker",
    "conflate",
    "dedupe",
    "detect_gaps",
    "final_only",
    "interval_ms",
    "interval_name",
    "local_book",
    "monotonic",
    "parse",
]

_T = TypeVar("_T")

# One section per private module; each wrapper carries the module's full documentation.

# --- parse ---------------------------------------------------------------


def parse() -> Callable[[Observable[RawMessage]], Observable[Event]]:
    """Turn each raw message into typed events; bad input becomes `BadMessage`, never an error.

    The first operator of the pipeline: sources (WebSocket and REST clients,
    the capture reader) emit `RawMessage`s, and everything downstream works on
    the events this operator makes of them.

    - `open` gives `Connected`; the socket's URL is remembered, so that raw
      `/ws/<stream>` payloads, which do not name their stream, can be
      attributed. `close` gives `Disconnected(code=status, reason=data)`.
    - `ws` frames, combined (`{"stream": "hbarusdt@kline_1m", "data": {...}}`)
      or raw: `<sym>@kline_<interval>` gives `Kline` (`final` is the frame's
      `x`); `<sym>@depth5/10/20[@100ms]` gives `BookSnapshot(source="ws")`;
      `<sym>@depth[@100ms]` gives `DepthDiff`; `<sym>@ticker` gives
      `Ticker(source="ws")`. Other streams (`aggTrade`, `bookTicker`, ...)
      give `Ignored(stream)`; `{"result": .., "id": ..}`, `{"error": ..}` and
      `{"code": .., "msg": ..}` give `ControlReply`. Symbols are upper case;
      a payload's `s` must agree with its stream's name.
    - `rest` bodies, attributed by the request path and query in `url`:
      `/api/v3/klines` gives one `Kline` per row, final only if it closed more
      than a second before receipt (`close_time < t // 1_000_000 - 1000`:
      the forming candle and one closed just before the response are not);
      `/api/v3/depth` gives `BookSnapshot(source="rest")`;
      `/api/v3/ticker/24hr` gives `Ticker(source="rest")` with
      `event_time=closeTime` (one per item when the body is an array). Any
      other endpoint gives `Ignored("rest <path>")`, a status other than 200
      `Ignored("rest <path> status <status>")`.

    A message that breaks the layout gives `BadMessage`, whose `reason` names
    the field and the offending value and whose `text` is the raw text cut to
    `MAX_BAD_TEXT` characters; each is logged at DEBUG on the
    `operators.parse` logger. Breaking the layout means: invalid JSON, not an
    object, a missing field, a wrong JSON type (times and ids must be
    integers, and a boolean is not one; decimals must be strings, not
    numbers; `x` must be a boolean), a decimal string that is not an unsigned
    decimal, a book level that is not a pair of such strings, a stream name
    that is not one, a payload whose symbol disagrees with its stream or
    cannot be told. Even a failure of the parser itself on one message becomes
    a `BadMessage` (logged as an error); the stream never ends because of its
    input, and only the source's own `on_error` or completion pass through.

    Book levels are passed on as the strings received (checked, not
    converted): Polars converts them in bulk when a frame is read.

    Each subscription gets a fresh `Parser`, so a replay starts with no
    remembered sockets. Use `Parser` directly to parse without ReactiveX.

    .. marble::
        :alt: parse

        -o-k-?-d-c-|      (o: open, k: kline frame, ?: garbage, d: klines body of 2 rows)
        [   parse()   ]
        -C-K-B-(KK)-D-|   (C: Connected, K: Kline, B: BadMessage, D: Disconnected)

    Returns:
        An operator from `RawMessage`s to `Event`s: zero, one or several per
        message (a REST klines body gives one per row).
    """
    from operators._parse import parse_

    return parse_()


# --- dedupe, final_only, monotonic, detect_gaps, conflate ------------------

# Section imports follow the sections before them, hence the E402 waivers.


def dedupe(
    key: Callable[[_T], Hashable],
    window: int = 1024,
    on_drop: Callable[[_T, str], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Drop every item whose key was seen among the last `window` distinct keys.

    For replayed frames: a WebSocket reconnect or a REST poll repeats data the
    pipeline already has. Unlike `reactivex.operators.distinct`, memory is
    bounded: the operator remembers at most `window` keys (a set and a ring,
    O(1) per item); once `window` newer distinct keys have passed, a key is
    forgotten and an item carrying it passes again. Keys are remembered in
    order of first arrival: a dropped repeat does not make its key younger.
    `window=1` compares with the previous key only (like
    `distinct_until_changed`, but cheaper).

    The first item with a given key is the one kept. State lives inside
    `subscribe`: every subscription (and every replay) starts with no keys.

    .. marble::
        :alt: dedupe

        -a-b-a-c-b-|
        [ dedupe(window=2) ]
        -a-b---c---|

    Args:
        key: Maps an item to a hashable identity, e.g.
            `lambda s: (s.symbol, s.last_update_id)` for order-book snapshots.
        window: How many distinct keys to remember; at least 1.
        on_drop: Called as `on_drop(item, "duplicate")` for each item dropped,
            so the pipeline can count drops per stream; it must not block.

    Returns:
        An operator that passes each item whose key is not among the last
        `window` distinct keys. An exception raised by `key` or `on_drop` is
        sent as `on_error` (a programming error, not bad market data).

    Raises:
        ValueError: `window` is not a positive int.
    """
    from operators._dedupe import dedupe_

    return dedupe_(key, window, on_drop)


def final_only(
    on_drop: Callable[[Kline, str], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Pass final klines, drop the candles still forming; anything else passes untouched.

    A `Kline` with `final=False` (a WebSocket frame with `x: false`, or the
    forming candle a REST response ends with) is dropped; a `Kline` with
    `final=True` and every item that is not a `Kline` (order-book snapshots,
    tickers, `Gap`, `BadMessage`, ...) pass in order, unchanged, so the whole
    parsed event stream can flow through it.

    .. marble::
        :alt: final_only

        -f-n-b-f-|      (f: final Kline, n: forming Kline, b: BookSnapshot)
        [final_only()]
        -f---b-f-|

    Args:
        on_drop: Called as `on_drop(kline, "non-final")` for each kline
            dropped, so the pipeline can count drops; it must not block. An
            exception it raises is sent as `on_error`.

    Returns:
        An operator from events to the same events without forming klines.
    """
    from operators._final_only import final_only_

    return final_only_(on_drop)


def monotonic(
    key: Callable[[_T], int],
    on_drop: Callable[[_T, str], None] | None = None,
) -> Callable[[Observable[_T]], Observable[_T]]:
    """Keep an item only if its key is strictly greater than the last key kept.

    For series whose updates carry an increasing id or time: order-book
    snapshots (`last_update_id`: an unchanged book repeats its id, and the
    first arrival is kept) and 24h tickers (`event_time`). An item whose key
    equals the last kept key is dropped as `"duplicate"`, one whose key is
    smaller as `"stale"`; a dropped item does not change the last kept key.
    The first item always passes. Apply it to one series (one symbol, one
    stream): keys of different series are not comparable.

    State lives inside `subscribe`: every subscription (and every replay)
    starts with no last key.

    .. marble::
        :alt: monotonic

        -1-3-3-2-4-|
        [ monotonic() ]
        -1-3-----4-|

    Args:
        key: Maps an item to its id, e.g. `lambda s: s.last_update_id`.
        on_drop: Called as `on_drop(item, "duplicate")` or
            `on_drop(item, "stale")` for each item dropped, so the pipeline can
            count drops; it must not block.

    Returns:
        An operator that passes the items whose key increases. An exception
        raised by `key` or `on_drop` is sent as `on_error`.
    """
    from operators._monotonic import monotonic_

    return monotonic_(key, on_drop)


def detect_gaps(
    interval_ms: int,
    scheduler: SchedulerBase | None = None,
    grace_ms: int = DEFAULT_GRACE_MS,
) -> Callable[[Observable[_T]], Observable[_T | Gap]]:
    """Report missing final klines of one series as `Gap(symbol, interval, start, end, t)`.

    Input: the final `Kline`s of one symbol and interval, in any order (live,
    backfilled and late ones mixed). The series is the `(symbol, interval)` of
    the first final kline; klines of any other series, forming klines and every
    other item pass through unchecked, so put it after `final_only` on a
    stream already split per series.

    Output: every input item, unchanged and in order, plus `Gap` events, whose
    `[start, end)` are the open times (ms) of candles that are missing, so a
    REST backfill can fetch them.

    Exact semantics. Per subscription the operator keeps `next_open`: every
    open time below it has been either seen or reported. The first final kline
    sets it to `open_time + interval_ms` (nothing before the first kline is
    ever reported). Then, for each final kline of the series:

    - `open_time == next_open`: the next candle; no gap, `next_open` advances
      by one interval.
    - `open_time > next_open`: candles were skipped. `Gap(start=next_open,
      end=open_time, t=kline.t)` is emitted just before the kline, and
      `next_open = open_time + interval_ms`.
    - `open_time < next_open`: late, older, repeated, or filling a gap already
      reported (a backfill). It passes; no gap, no change of state.

    Staleness timer, only when `scheduler` is given, so that a feed that goes
    silent is reported without waiting for its next kline:

    - Clock: the scheduler's `now` is read as time since the Unix epoch, the
      clock open times use (`AsyncIOScheduler` live, a `HistoricalScheduler`
      at the capture's receive times in a replay, `TestScheduler` ticks as
      seconds in tests).
    - Deadline: `next_open + interval_ms + grace_ms`, the close of the next
      expected candle plus grace. It is armed by the first final kline and
      moved by every kline that moves `next_open`.
    - When it passes first, the operator emits `Gap(start=next_open, end,
      t=now in ns)`, where `end = next_open + k * interval_ms` and `k >= 1`
      counts the candles whose close plus grace is past (one, unless the clock
      jumped), sets `next_open = end` and arms the deadline of the next candle.
      While a feed stays silent, one `Gap` thus follows each expected candle's
      close by `grace_ms`.

    No open time is ever reported twice: once reported it is below
    `next_open`, so its kline or a backfill arriving later passes without a
    `Gap`, and a kline that jumps ahead reports only what the timer has not.
    Completion, error and disposal cancel the timer. A first kline older than
    the clock by more than two intervals plus grace (a REST preload) arms a
    deadline already past; the preload's later klines move it before it runs
    as long as they arrive in the same burst on the scheduler's thread, so
    use the scheduler the feed runs on.

    `Gap` is emitted after the state is updated, so a subscriber may answer
    it synchronously by pushing a backfill into the same stream.

    .. marble::
        :alt: detect_gaps

        -a-b-e-----|    (final klines opening at minutes 0, 1 and 4)
        [ detect_gaps(60_000) ]
        -a-b-(g,e)-|    (g: Gap(start=minute 2, end=minute 4, t=e.t))

    Args:
        interval_ms: The series' candle length in ms, e.g. `interval_ms("1m")`.
        scheduler: Enables the staleness timer; `None` reports only gaps that a
            later kline reveals.
        grace_ms: How late a final kline may be before it counts as missing.
            WebSocket finals come within about a second of the close; for a
            series polled over REST use more than the poll period plus one
            second (REST calls a candle final only a second after it closed).

    Returns:
        An operator from events to the same events plus `Gap`s.

    Raises:
        ValueError: `interval_ms` is not a positive int or `grace_ms` a
            non-negative int.
    """
    from operators._detect_gaps import detect_gaps_

    return detect_gaps_(interval_ms, scheduler, grace_ms)


def conflate(scheduler: SchedulerBase) -> Callable[[Observable[_T]], Observable[_T]]:
    """Hand a slow subscriber the latest value, never a backlog.

    Upstream `on_next` only stores the value as the latest and, if no delivery
    is pending, schedules one on `scheduler`; a delivery sends whatever is
    latest at the time it runs. Values that a newer one replaced before their
    delivery are dropped. The feed never waits for the subscriber: at most one
    delivery is scheduled at a time, deliveries never overlap (values arriving
    while the subscriber is busy are sent by the next delivery, scheduled when
    the current one ends), and memory is one value. Completion and errors are
    delivered on the scheduler too, after the pending value. Disposal cancels
    a pending delivery; nothing is delivered after it.

    Use it to publish frames to strategies: a slow strategy sees the latest
    frame and never stalls the feed.

    .. marble::
        :alt: conflate

        -a-(b,c,d)-e-|
        [ conflate() ]
        -a-d-------e-|

    Args:
        scheduler: Where deliveries run: the subscriber's event loop or thread.

    Returns:
        An operator delivering the latest value on `scheduler`.
    """
    from operators._conflate import conflate_

    return conflate_(scheduler)


def interval_ms(interval: str) -> int:
    """Return the length of a Binance kline interval in ms: `interval_ms("1m") == 60_000`.

    Known: 1s (binance.com only), 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 8h,
    12h, 1d, 3d, 1w (see `INTERVAL_MS`).

    Raises:
        ValueError: `interval` is `1M` (a calendar month has no fixed length)
            or not a Binance interval; the message names the value.
    """
    return _intervals.interval_ms(interval)


def interval_name(ms: int) -> str:
    """Return the Binance name of an interval length: `interval_name(3_600_000) == "1h"`.

    Raises:
        ValueError: No fixed-length Binance interval lasts `ms` milliseconds.
    """
    return _intervals.interval_name(ms)


# --- local order book --------------------------------------------------------


def local_book(symbol: str, max_buffered: int = 1000) -> BookOperator:
    """Keep one symbol's full L2 order book from depth diffs and REST snapshots.

    Follows Binance's "How to manage a local order book correctly": diffs
    (`DepthDiff`, from `<sym>@depth@100ms`) are buffered until a REST depth
    snapshot (`BookSnapshot` with `source="rest"`) arrives; buffered diffs with
    `u <= lastUpdateId` are dropped; the first diff applied must satisfy
    `U <= lastUpdateId + 1 <= u`, and each later one `U == previous u + 1`.
    Quantities are absolute and a zero quantity removes the level. A diff whose
    `u` is not above the book's is a repeat and is ignored; one that starts at
    or before the book's `u` and ends after it is applied whole (exact, since
    quantities are absolute).

    Other events are ignored, as are diffs and snapshots of other symbols and
    `depth20` snapshots (`source="ws"`), so the whole parsed event stream can
    be piped in. `Disconnected` (of the socket carrying the depth stream) marks
    the book stale.

    Out of sync: a sequence gap, a disconnect, a crossed book (best bid >= best
    ask after a diff), a malformed level, a snapshot older than the oldest diff
    it would have to bridge, or (while out of sync) a diff buffer that
    overflows `max_buffered` when the last request went out at least
    `max_buffered` diffs ago (so requests stay rate-limited). The operator then
    emits one
    `BookUpdate(synced=False)` (consumers keep serving the last in-sync book,
    marked stale), buffers the diffs that follow (at most `max_buffered`, the
    oldest dropped first), and emits a `BookResync(symbol, reason, t)` that the
    live pipeline answers with a fresh REST snapshot; when one arrives that the
    buffered diffs can bridge, the book resyncs. A snapshot may arrive before
    any diff, or be ahead of every diff so far: it is held until a diff
    reaches `lastUpdateId + 1`. While in sync, snapshots are ignored.

    A resync is requested only once a diff shows the stream is live (at once
    on a gap; after a disconnect or at the start, on the first diff that
    arrives), so the snapshot cannot predate the diffs buffered to bridge it.
    The very first diff therefore yields `BookResync(reason="start")`: a
    pipeline may answer it, or fetch the first snapshot on its own. The
    `BookResync` is always the last event emitted for an input, and the
    operator's state is settled before it goes out, so a request may be
    answered synchronously.

    Output (`BookEvent = BookUpdate | BookResync`): `BookUpdate(reset=True)`
    carries the whole book after each (re)sync; each diff applied in sync then
    yields a `BookUpdate` carrying just its changes as `(price, qty)` floats
    (qty 0.0: remove), with the book's new `update_id` (`u`) and best bid and
    ask. Fold them as `sinks.BookFrame` does to keep the book. Applying a diff
    costs a few dict writes per level; nothing here sorts or builds a frame.

    State lives inside `subscribe`: every subscription starts empty.

    Args:
        symbol: The symbol whose book to keep (case-insensitive; Binance's upper
            case is matched).
        max_buffered: Most diffs kept while out of sync; at least 1.

    Returns:
        An operator from the parsed event stream to `BookEvent`s.

    Raises:
        ValueError: `symbol` is empty or `max_buffered` is not a positive int.
    """
    from operators._local_book import local_book_

    return local_book_(symbol, max_buffered)
