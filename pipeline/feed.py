"""The wiring shared by replays and live runs: raw messages in, per-symbol frames out.

```
RawMessage -> Parser -> route by (symbol, buffer):
  klines_1m     dedupe(exact repeats) -> final_only -> detect_gaps -> KlineFrame
  klines_1h/1d  dedupe(exact repeats) -> final_only -> KlineFrame
  order_book    depth20 snapshots -> monotonic(last_update_id) -> OrderBookFrame
  ticker        24hrTicker -> monotonic(event_time) -> TickerFrame
  book          a `LocalBook` plugged in with `local_book=` (DepthDiff, REST snapshots)
```

Routing is a dict dispatch, not `group_by`: on pre-parsed depth20 snapshots,
`group_by((symbol, buffer))` plus `flat_map` into a per-group chain cost about
5.0 µs a message against 2.6 µs for the composed chains below (frame writes
and counting included), twice as much as everything after the parse.

Each chain is, by definition, the composition of the `operators` package shown
above. On the hot path it runs fused (`pipeline._fused`): one closure per
symbol and buffer does the filters, the frame write and the counting, instead
of two or three ReactiveX observer hops (~0.3-0.5 µs each); `tests/test_fused.py`
checks on arbitrary event sequences that the fused step and the composition
count, write and publish the same. The 1m gap detector (finals only, about one
a minute, and a timer) stays a ReactiveX operator behind an `_Inlet`. Chain
state is made once per symbol and buffer, on first sight of the symbol, so
every feed (every replay) starts fresh. A combined-stream frame is routed by its
stream name: once the parser has handled one frame of a stream, the feed runs the
parser's handler for that name and hands the event straight to the step its
events go to (the parser's `handler`/`parse_loaded` split), with no dispatch on
the event per frame; anything else goes through `Parser.parse` and the dispatch.

Every message and event is counted in `stats` (see `pipeline.stats` for the
accounting rules). Bad messages are counted and logged at debug level, never
folded; nothing a message contains can stop the feed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from operator import attrgetter, itemgetter
from typing import Any, Final, Generic, Protocol, TypeVar

import orjson
import polars as pl
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

from operators import Parser, detect_gaps, interval_ms
from operators.events import (
    KIND_WS,
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
    RawMessage,
    Ticker,
)
from pipeline._fused import Outlet, fold_step, kline_step, monotonic_step
from pipeline.config import FeedConfig
from pipeline.errors import UsageError
from pipeline.stats import RunStats, StreamCounts, stream_label
from sinks.rolling_frame import RollingFrame, new_frame

__all__ = ["KLINE_BUFFERS", "Feed", "LocalBook", "LocalBookFactory", "build_feed"]

log = logging.getLogger(__name__)

KLINE_BUFFERS: Final = {"1m": "klines_1m", "1h": "klines_1h", "1d": "klines_1d"}
"""Kline intervals the feed folds, and their buffers; other intervals are ignored."""

GAP_CHECKED: Final = frozenset({"1m"})
"""Intervals whose finals come over the WebSocket, so a missing one is a gap to report."""


_KLINE_KEY: Final = itemgetter(slice(2, 10))
"""open_time, close_time, OHLCV and `final`: an exact repeat of a kline has the same key.

`final` belongs to the key: a forming update with the closing values must not
make the final kline that follows look like a repeat.
"""
_UPDATE_ID: Final = attrgetter("last_update_id")
_EVENT_TIME: Final = attrgetter("event_time")

_T = TypeVar("_T")


class LocalBook(Protocol):
    """What a local L2 book plugs into the feed, one per symbol (the `book` buffer).

    The feed hands it every `DepthDiff` and REST `BookSnapshot` of its symbol and
    every `Disconnected`, and dumps `frame` as the `book` buffer.
    """

    @property
    def frame(self) -> RollingFrame[Any]:
        """The `book` frame of the symbol."""
        ...

    def push(self, event: DepthDiff | BookSnapshot | Disconnected) -> bool:
        """Fold one event in; True if the book used it (counted as kept)."""
        ...


LocalBookFactory = Callable[[str, abc.SchedulerBase | None], LocalBook]
"""Makes the local book of one symbol: `factory(symbol, scheduler)`."""


def _nothing(_: Any) -> None:
    return None


class _Inlet(Generic[_T]):
    """The head of one chain: the router calls `push`, the chain's operators subscribe."""

    __slots__ = ("_observer", "observable", "push")

    def __init__(self) -> None:
        self.push: Callable[[_T], None] = _nothing
        self._observer: abc.ObserverBase[_T] | None = None

        def subscribe(
            observer: abc.ObserverBase[_T], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self.push = observer.on_next
            self._observer = observer
            return Disposable(self._detach)

        self.observable: Observable[_T] = Observable(subscribe)

    def send(self, value: _T) -> None:
        """Push `value` to the chain's current subscriber (none once completed)."""
        self.push(value)

    def _detach(self) -> None:
        self.push = _nothing
        self._observer = None

    def complete(self) -> None:
        observer = self._observer
        self._detach()
        if observer is not None:
            observer.on_completed()


class _Chain:
    """One buffer of one symbol: its step, its frame and its counters (WebSocket and REST).

    `step` is the whole chain fused into one call (`pipeline._fused`): it counts
    the event read, filters it and folds it into the frame. A chain with a
    ReactiveX tail (the 1m gap detector) feeds it through `inlet`.
    """

    __slots__ = ("buffer", "frame", "inlet", "rest", "step", "ws")

    def __init__(self, buffer: str, frame: RollingFrame[Any], ws: StreamCounts, rest: StreamCounts):
        self.buffer = buffer
        self.frame = frame
        self.inlet: _Inlet[Any] = _Inlet()
        self.step: Callable[[Any], None] = _nothing
        self.ws = ws
        self.rest = rest

    def enter(self, event: Kline | Ticker | BookSnapshot) -> StreamCounts:
        self.step(event)
        return self.ws if event.source == KIND_WS else self.rest


class _Symbol:
    """The chains, frames and subscribers of one symbol."""

    __slots__ = ("book", "chains", "events", "frames", "klines", "order_book", "symbol", "ticker")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.frames: dict[str, RollingFrame[Any]] = {}
        self.chains: list[_Chain] = []
        self.klines: dict[str, _Chain] = {}
        self.order_book: _Chain
        self.ticker: _Chain
        self.book: LocalBook | None = None
        self.events: Subject[Event] = Subject()


class Feed:
    """Raw messages in, one set of frames per symbol out; see the module doc for the flow.

    Push messages with `push(raw)` (a replay's loop, a live source's callback) or
    subscribe the feed to an observable with `attach(source)`. Time-based
    operators (the 1m gap detector's staleness timer) run on `scheduler`: a
    `ReplayScheduler` in a replay, the event loop's scheduler live, None for no
    timers.
    """

    def __init__(
        self,
        config: FeedConfig | None = None,
        scheduler: abc.SchedulerBase | None = None,
        stats: RunStats | None = None,
        local_book: LocalBookFactory | None = None,
    ) -> None:
        self.config = config or FeedConfig()
        self.scheduler = scheduler
        self.stats = stats if stats is not None else RunStats()
        self._local_book = local_book
        self._symbols: dict[str, _Symbol] = {}
        self._all_events: Subject[Event] = Subject()
        self._gaps: Subject[Gap] = Subject()
        self._connections: Subject[Connected | Disconnected] = Subject()
        self._debug = log.isEnabledFor(logging.DEBUG)
        self.push: Callable[[RawMessage], None] = self._make_push(Parser())
        self.error: Exception | None = None

    # ------------------------------------------------------------------ the hot path
    def _make_push(self, parser: Parser) -> Callable[[RawMessage], None]:
        parse = parser.parse
        parse_loaded = parser.parse_loaded
        handler_of = parser.handler
        loads = orjson.loads
        symbols = self._symbols
        stats = self.stats
        add_symbol = self._add_symbol
        slow = self._slow
        route = self._route
        # Combined-stream name -> (the parser's fast handler, the step its events
        # go to). A stream's handler always gives one event type for one symbol
        # (and interval), so the step is known from the name: no dispatch on the
        # event per frame. Filled on the first frame of a stream the parser
        # handled; bounded because the parser's handler cache is.
        routes: dict[str, tuple[Callable[[Any, int, str], Event], Callable[[Any], Any]]] = {}

        def push(raw: RawMessage) -> None:
            """Feed one raw message through the pipeline."""
            stats.messages += 1
            # Typed loosely on purpose: dispatch is by exact type, checked once.
            out: Any
            try:
                msg = loads(raw.data) if raw.kind == "ws" else None
            except Exception:  # invalid JSON (or not a RawMessage): `parse` explains
                msg = None
            if msg is None:
                out = parse(raw)
            else:
                # The parser's own fast path (`Parser.parse`), the step chosen by name.
                try:
                    handler, step = routes[msg["stream"]]
                    event = handler(msg["data"], raw.t, raw.data)
                except Exception:  # a new stream, a raw payload, or a broken layout
                    out = parse_loaded(raw, msg)
                    if type(out) is not BadMessage and type(msg) is dict:
                        learn(msg.get("stream"), out)
                else:
                    step(event)
                    return
            cls = type(out)
            # The common cases inline: one dict lookup, then the chain's fused step,
            # which counts the event read (`_Chain.step`).
            if cls is BookSnapshot:
                if out.source == "ws":  # a literal: no global look-up per frame
                    (symbols.get(out.symbol) or add_symbol(out.symbol)).order_book.step(out)
                    return
            elif cls is Ticker:
                (symbols.get(out.symbol) or add_symbol(out.symbol)).ticker.step(out)
                return
            elif cls is Kline:
                s = symbols.get(out.symbol) or add_symbol(out.symbol)
                kline_chain = s.klines.get(out.interval)
                if kline_chain is not None:
                    kline_chain.step(out)
                    return
            slow(raw, out)

        def learn(name: Any, event: Any) -> None:
            """Remember the route of stream `name`, whose handler just gave `event`."""
            handler = handler_of(name) if type(name) is str else None
            if handler is None:
                return
            step: Callable[[Any], Any] = route
            cls = type(event)
            if cls is BookSnapshot or cls is Ticker or cls is Kline:
                s = symbols.get(event.symbol) or add_symbol(event.symbol)
                if cls is BookSnapshot:
                    if event.source == KIND_WS:
                        step = s.order_book.step
                elif cls is Ticker:
                    step = s.ticker.step
                else:
                    kline_chain = s.klines.get(event.interval)
                    if kline_chain is not None:
                        step = kline_chain.step
            routes[name] = (handler, step)

        return push

    def _slow(self, raw: RawMessage, out: Event | list[Event]) -> None:
        if not isinstance(out, list):
            self._route(out)
            return
        if not out:
            # A REST body with no rows: one message, nothing to fold.
            counts = self.stats.stream(f"rest {raw.url.partition('?')[0]}")
            counts.read += 1
            counts.ignored += 1
            return
        route = self._route
        for i, event in enumerate(out):
            landed = route(event)
            if landed is not None and i:
                landed.extra += 1

    def _route(self, event: Event) -> StreamCounts | None:
        """Route any event (the general case); returns the counters it was counted in."""
        if isinstance(event, Kline | Ticker | BookSnapshot | DepthDiff):
            return self._route_market(event)
        if isinstance(event, BadMessage):
            return self._bad(event)
        if isinstance(event, Connected | Disconnected):
            self._connection(event)
            return None
        if isinstance(event, Ignored):
            counts = self.stats.stream(stream_label(event.stream))
        elif isinstance(event, ControlReply):
            counts = self.stats.stream("ws control replies")
        else:  # a new event type the parser learnt: counted, not lost
            counts = self.stats.stream(f"({type(event).__name__})")
        counts.read += 1
        counts.ignored += 1
        return counts

    def _route_market(self, event: Kline | Ticker | BookSnapshot | DepthDiff) -> StreamCounts:
        symbol = event.symbol
        s = self._symbols.get(symbol) or self._add_symbol(symbol)
        if isinstance(event, Kline):
            chain = s.klines.get(event.interval)
            if chain is not None:
                return chain.enter(event)
            label = f"{symbol} kline_{event.interval}"
            counts = self.stats.stream(label if event.source == KIND_WS else f"{label} (rest)")
        elif isinstance(event, Ticker):
            return s.ticker.enter(event)
        elif isinstance(event, BookSnapshot) and event.source == KIND_WS:
            return s.order_book.enter(event)
        else:
            # Diff-depth frames and REST depth snapshots: the local book's input.
            rest = isinstance(event, BookSnapshot)
            counts = self.stats.stream(f"{symbol} depth (rest)" if rest else f"{symbol} depth")
            if s.book is not None:
                counts.read += 1
                if s.book.push(event):
                    counts.kept += 1
                else:
                    counts.unchanged += 1
                return counts
        counts.read += 1
        counts.ignored += 1
        return counts

    def _bad(self, event: BadMessage) -> StreamCounts:
        if event.stream:
            label = stream_label(event.stream)
        else:  # not even the stream could be read (invalid JSON, say)
            label = "ws (stream unknown)" if event.conn else "(stream unknown)"
        counts = self.stats.stream(label)
        counts.read += 1
        counts.bad += 1
        # At debug level, as DESIGN.md asks: a feed may carry many, and the
        # summary and the live view count them per stream.
        log.debug(
            "bad message on %s (conn %s): %s: %.120r",
            counts.label, event.conn, event.reason, event.text,
        )  # fmt: skip
        return counts

    def _connection(self, event: Connected | Disconnected) -> None:
        self.stats.connections.append(event)
        log.info("%s", event)
        if type(event) is Disconnected:
            for s in self._symbols.values():
                if s.book is not None:
                    s.book.push(event)
        self._connections.on_next(event)

    # ------------------------------------------------------------------ wiring
    def _add_symbol(self, symbol: str) -> _Symbol:
        """Create a symbol's frames and chains (on first sight of it)."""
        s = _Symbol(symbol)
        config = self.config
        stats = self.stats
        for interval, buffer in KLINE_BUFFERS.items():
            label = f"{symbol} kline_{interval}"
            chain = _Chain(
                buffer,
                new_frame(buffer, config.capacity(buffer)),
                stats.stream(label),
                stats.stream(f"{label} (rest)"),
            )
            # dedupe(exact repeats) -> final_only, fused; the finals go on to
            # detect_gaps (a ReactiveX chain: finals are rare) or straight to the fold.
            finals: Callable[[Any], None]
            if interval in GAP_CHECKED:
                self._connect(s, chain, [detect_gaps(interval_ms(interval), self.scheduler)])
                finals = chain.inlet.send
            else:
                self._register(s, chain)
                finals = fold_step(chain.ws, chain.rest, self._outlet(s, chain))
            chain.step = kline_step(_KLINE_KEY, config.dedupe_window, chain.ws, chain.rest, finals)
            s.klines[interval] = chain
        depth = stats.stream(f"{symbol} depth20")
        s.order_book = _Chain(
            "order_book", new_frame("order_book", config.capacity("order_book")), depth, depth
        )
        self._register(s, s.order_book)
        s.order_book.step = monotonic_step(_UPDATE_ID, depth, depth, self._outlet(s, s.order_book))
        s.ticker = _Chain(
            "ticker",
            new_frame("ticker", config.capacity("ticker")),
            stats.stream(f"{symbol} ticker"),
            stats.stream(f"{symbol} ticker (rest)"),
        )
        self._register(s, s.ticker)
        s.ticker.step = monotonic_step(
            _EVENT_TIME, s.ticker.ws, s.ticker.rest, self._outlet(s, s.ticker)
        )
        if self._local_book is not None:
            s.book = self._local_book(symbol, self.scheduler)
            s.frames["book"] = s.book.frame
        self._symbols[symbol] = s
        log.debug("new symbol %s: frames %s", symbol, ", ".join(s.frames))
        return s

    def _register(self, s: _Symbol, chain: _Chain) -> None:
        s.frames[chain.buffer] = chain.frame
        s.chains.append(chain)

    def _connect(
        self,
        s: _Symbol,
        chain: _Chain,
        steps: list[Callable[[Observable[Any]], Observable[Any]]],
    ) -> None:
        """Register `chain` with a ReactiveX tail: `steps` from its inlet, then the sink."""
        self._register(s, chain)
        observable: Observable[Any] = chain.inlet.observable
        for step in steps:
            observable = step(observable)
        observable.subscribe(self._sink(s, chain), _raise)

    def _outlet(self, s: _Symbol, chain: _Chain) -> Outlet:
        """The end of a chain: the frame write, and what publishes a kept event."""
        frame = chain.frame
        events = s.events
        all_events = self._all_events
        debug = self._debug
        symbol, buffer = s.symbol, chain.buffer

        def publish(event: Any) -> None:
            if debug:
                log.debug("%s %s <- %s (%d rows)", symbol, buffer, event, len(frame))
            if events.observers:
                events.on_next(event)
            if all_events.observers:
                all_events.on_next(event)

        return Outlet(frame.write, publish, events, all_events, debug)

    def _sink(self, s: _Symbol, chain: _Chain) -> Callable[[Any], None]:
        """The end of a ReactiveX tail: gaps reported, events folded (`fold_step`)."""
        fold = fold_step(chain.ws, chain.rest, self._outlet(s, chain))
        gap = self._gap

        def sink(event: Any) -> None:
            if type(event) is Gap:
                gap(event)
            else:
                fold(event)

        return sink

    def _gap(self, gap: Gap) -> None:
        self.stats.gaps.append(gap)
        log.warning("gap in %s %s: open times [%d, %d)", gap.symbol, gap.interval, gap.start,
                    gap.end)  # fmt: skip
        self._gaps.on_next(gap)

    # ------------------------------------------------------------------ public API
    def attach(self, source: Observable[RawMessage]) -> abc.DisposableBase:
        """Feed every message of `source` through the pipeline; completion completes the feed."""
        return source.subscribe(self.push, self._source_failed, self.complete)

    def _source_failed(self, error: Exception) -> None:
        log.error("message source failed: %s", error)
        self.error = error
        self.complete()

    def complete(self) -> None:
        """End the run: every chain completes (timers stop), subscribers get `on_completed`."""
        for s in self._symbols.values():
            for chain in s.chains:
                chain.inlet.complete()
            s.events.on_completed()
        self._all_events.on_completed()
        self._gaps.on_completed()
        self._connections.on_completed()

    def add_symbol(self, symbol: str) -> None:
        """Create `symbol`'s (empty) frames now, before its first message (live runs)."""
        symbol = symbol.upper()
        if symbol not in self._symbols:
            self._add_symbol(symbol)

    @property
    def symbols(self) -> list[str]:
        """Symbols seen so far (upper case), in order of first sight."""
        return list(self._symbols)

    def frames(self, symbol: str) -> dict[str, RollingFrame[Any]]:
        """The frames of `symbol`, by buffer name (`klines_1m`, ..., `ticker`, maybe `book`).

        Raises `UsageError` for a symbol the feed has not seen.
        """
        s = self._symbols.get(symbol.upper())
        if s is None:
            seen = ", ".join(self._symbols) or "none yet"
            raise UsageError(f"unknown symbol {symbol!r}: symbols seen: {seen}")
        return dict(s.frames)

    def snapshot(self) -> dict[str, dict[str, pl.DataFrame]]:
        """Every symbol's frames as Polars frames (`get()` copies), for `sinks.dump_frames`."""
        return {
            symbol: {buffer: frame.get() for buffer, frame in s.frames.items()}
            for symbol, s in self._symbols.items()
        }

    def events(self, symbol: str | None = None) -> Observable[Event]:
        """Events as they change a frame: final klines, accepted snapshots and tickers.

        `symbol=None`: every symbol's. A subscriber sees events from the moment it
        subscribes (hot); a symbol not seen yet is created, so a strategy can
        subscribe before its first message.
        """
        if symbol is None:
            return self._all_events
        symbol = symbol.upper()
        s = self._symbols.get(symbol) or self._add_symbol(symbol)
        return s.events

    def gaps(self) -> Observable[Gap]:
        """Missing 1m final klines, as the gap detectors report them (for REST backfills)."""
        return self._gaps

    def connections(self) -> Observable[Connected | Disconnected]:
        """Sockets opened and closed, as the messages say."""
        return self._connections


def _raise(error: Exception) -> None:
    # An operator chain fails only on a programming error (a key function, a
    # frame write): surface it where the message was pushed.
    raise error


def build_feed(
    source: Observable[RawMessage],
    scheduler: abc.SchedulerBase | None = None,
    config: FeedConfig | None = None,
    capacities: Mapping[str, int] | None = None,
) -> Feed:
    """A `Feed` subscribed to `source` (`capacities` overrides `config`'s buffer sizes)."""
    if capacities is not None:
        config = FeedConfig(capacities=capacities)
    feed = Feed(config, scheduler)
    feed.attach(source)
    return feed
