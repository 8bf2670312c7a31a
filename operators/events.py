"""The values that flow through the pipeline.

Sources emit `RawMessage`s; `operators.parse` turns each into typed events.
Everything downstream is shared by live runs and replays, so these types are the
contract between the layers.

They are `NamedTuple`s on purpose: the hot path builds several hundred thousand a
second, and a tuple subclass is the cheapest immutable record CPython offers
(about 0.4 µs to build, a frozen dataclass costs twice that).

Errors and connection changes are values too (`BadMessage`, `Connected`,
`Disconnected`, `Gap`): a feed must survive any single bad frame, so nothing
here is ever raised through `on_error`.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple, TypeAlias

__all__ = [
    "KIND_CLOSE",
    "KIND_OPEN",
    "KIND_REST",
    "KIND_WS",
    "REPLACED_REASON",
    "BadMessage",
    "BookSnapshot",
    "Connected",
    "ControlReply",
    "DepthDiff",
    "Disconnected",
    "Event",
    "Gap",
    "Ignored",
    "Kline",
    "Level",
    "MarketEvent",
    "RawMessage",
    "Ticker",
]

KIND_WS: Final = "ws"
KIND_REST: Final = "rest"
KIND_OPEN: Final = "open"
KIND_CLOSE: Final = "close"
REPLACED_REASON: Final = "replaced by a newer connection before the 24 h limit"
"""The close reason of a socket retired after its successor delivered data: nothing was missed."""

RawKind: TypeAlias = Literal["ws", "rest", "open", "close"]


class RawMessage(NamedTuple):
    """One message exactly as a source received it, before any parsing.

    The same type comes from the WebSocket client, the REST client and the
    capture reader, and is what the capture writer records.
    """

    t: int
    """Receive time, integer nanoseconds since the Unix epoch."""
    kind: str
    """`ws` (a text frame), `rest` (a response body), `open` or `close` (a socket)."""
    conn: int = 0
    """Connection id for `ws`/`open`/`close`; 0 for `rest`."""
    data: str = ""
    """The raw text as received (frame or body); for `close`, the close reason."""
    url: str = ""
    """`open`: the socket URL; `rest`: the request path and query."""
    status: int = 0
    """`rest`: the HTTP status; `close`: the WebSocket close code."""
    method: str = ""
    """`rest`: the HTTP method."""


Level: TypeAlias = list[str]
"""One book level as Binance sends it: `[price, quantity]`, both decimal strings.

Levels stay strings until a frame is read: converting 40 pairs per message costs
more than parsing the message, and Polars converts a whole column at once.
"""


class Kline(NamedTuple):
    """One candle, final or still forming, from a WebSocket frame or a REST row."""

    symbol: str
    """Upper case, as Binance spells it: `HBARUSDT`."""
    interval: str
    """`1m`, `1h`, `1d`, ..."""
    open_time: int
    """Milliseconds since the epoch; the candle's identity."""
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    final: bool
    """WebSocket: the frame's `x`. REST: closed over a second before receipt."""
    t: int
    """Receive time of the message it came from, ns."""
    source: str
    """`ws` or `rest`."""


class BookSnapshot(NamedTuple):
    """A whole (partial) book: a `depth20` frame or a REST `/api/v3/depth` body."""

    symbol: str
    last_update_id: int
    bids: list[Level]
    """Best first, as received."""
    asks: list[Level]
    t: int
    source: str
    """`ws` (partial-depth stream) or `rest` (depth snapshot for the local book)."""


class DepthDiff(NamedTuple):
    """A `depthUpdate` frame: the changes between update ids `first_id` and `final_id`."""

    symbol: str
    event_time: int
    """`E`, ms."""
    first_id: int
    """`U`."""
    final_id: int
    """`u`."""
    bids: list[Level]
    asks: list[Level]
    t: int


class Ticker(NamedTuple):
    """A `24hrTicker` event (or a REST `/api/v3/ticker/24hr` body)."""

    symbol: str
    event_time: int
    """`E`, ms (REST: `closeTime`). Also the event id: the ticker has no update id."""
    best_bid: float
    bid_qty: float
    best_ask: float
    ask_qty: float
    last_price: float
    last_qty: float
    volume_24h: float
    quote_volume_24h: float
    t: int
    source: str


class ControlReply(NamedTuple):
    """A reply to a client request on the socket: `{"result":..,"id":..}` or `{"error":..}`.

    Counted as ignored, never bad: the exchange is answering, not misbehaving.
    """

    conn: int
    request_id: int | str | None
    result: object
    error: object
    t: int


class Ignored(NamedTuple):
    """A well-formed message for a stream or endpoint the pipeline does not fold."""

    stream: str
    t: int


class BadMessage(NamedTuple):
    """A message that breaks the layout: counted, logged, never folded."""

    reason: str
    """What was wrong, naming the offending field or value."""
    text: str
    """The offending text, truncated (see `operators.parse.MAX_BAD_TEXT`)."""
    t: int
    conn: int
    stream: str = ""
    """The stream it claimed to belong to, when that much could be read."""


class Connected(NamedTuple):
    """A socket opened (from a `RawMessage` of kind `open`)."""

    conn: int
    url: str
    t: int


class Disconnected(NamedTuple):
    """A socket closed or failed (from a `RawMessage` of kind `close`)."""

    conn: int
    code: int
    reason: str
    t: int

    @property
    def replaced(self) -> bool:
        """A planned switchover: a newer socket already carries these streams, no frame lost."""
        return self.reason == REPLACED_REASON


class Gap(NamedTuple):
    """Final klines `[start, end)` (open times, ms) are missing: a REST backfill is due."""

    symbol: str
    interval: str
    start: int
    end: int
    t: int
    """Receive time of the message that revealed the gap, ns."""


MarketEvent: TypeAlias = Kline | BookSnapshot | DepthDiff | Ticker
"""Events that carry market data and a symbol."""

Event: TypeAlias = (
    Kline
    | BookSnapshot
    | DepthDiff
    | Ticker
    | ControlReply
    | Ignored
    | BadMessage
    | Connected
    | Disconnected
    | Gap
)
"""Everything `operators.parse` (and the gap detector) can emit."""
