"""The `parse` operator: raw frames and bodies in, typed events out.

This is the hot path of the whole pipeline (`orjson.loads` is most of the cost
of a run), so the layout checks follow one rule: a well-formed message pays only
for what proves it well-formed, and every explanation is left to a slow path
that runs once a check has failed.

* Fast path: one closure per stream name (symbol and interval bound in it)
  indexes the parsed dicts directly; a broken layout surfaces as `KeyError`,
  `TypeError` or `ValueError`, and the explicit checks are identity tests
  (`type(x) is int`, which a bool fails; `x is True`).
* Slow path (`_explain`): walks the same layout field by field and names the
  field and the value that broke it. If it finds nothing wrong although the
  fast path failed, the parser is at fault: logged as an error, and still a
  `BadMessage`, never an `on_error`.

Decimal fields read as floats (kline prices, ticker fields).  Binance sends them
as strings; a JSON number there means the layout changed, so it is rejected
(joining the strings raises `TypeError` on anything else).  The joined strings
are checked for digits and dots only, then converted by a single
`orjson.loads("[...]")`, which costs less than `float()` on each and holds them
to JSON's number grammar: `"nan"`, `"1e5"`, `" 1"`, `"-1"`, `"1_0"`, `"1."`,
`"01"`, non-ASCII digits, all of which `float()` would take, are rejected.

Book levels stay strings (see `operators.events.Level`) and are checked without
converting them.  The frame text is in hand: with its digits deleted it must
equal the skeleton of the stream's frame for that many levels, a string with
exactly one dot in every price and quantity; one `bytes.translate` and one
comparison.  A substring test then excludes a lone `"."`, which Polars cannot cast.
A frame in another layout (other key order, whitespace, decimals without a dot)
falls back to re-serialising just the levels (`_levels_ok`), and is accepted by
the same rule: digits with at most one dot, and at least one digit.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qs, urlsplit

import orjson
from reactivex import Observable, abc

from operators.events import (
    KIND_CLOSE,
    KIND_OPEN,
    KIND_REST,
    BadMessage,
    BookSnapshot,
    Connected,
    ControlReply,
    DepthDiff,
    Disconnected,
    Event,
    Ignored,
    Kline,
    RawMessage,
    Ticker,
)

__all__ = ["MAX_BAD_TEXT", "Parser", "parse_"]

MAX_BAD_TEXT: Final = 200
"""`BadMessage.text` keeps at most this many characters of the offending text."""

_log = logging.getLogger("operators.parse")

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError

_new = tuple.__new__
"""Builds a NamedTuple from a tuple at half the cost of its generated `__new__`."""

_DIGITS: Final = b"0123456789"
_NUMBER_CHARS: Final = b"0123456789.,"
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
"""A decimal field read as a float: a JSON number, unsigned, without exponent."""
_LEVEL_DECIMAL = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")
"""A book level's price or quantity: digits with at most one dot (what `float` reads)."""
_LONE_DOT: Final = b'"."'
"""A price or quantity that is just a dot, which Polars cannot cast (`in` scans a
frame for it in about 0.5 µs less than a regex search, measured on depth20)."""
_SPEED = re.compile(r"[0-9]+ms")
_MAX_CACHED_STREAMS: Final = 4096
"""Bound on remembered stream names: a hostile feed cannot grow a parser without limit."""
_MAX_SHOWN: Final = 60

# Stream kinds, by what the part after `@` says.
_KLINE: Final = "kline"
_PARTIAL: Final = "partial depth"
_DIFF: Final = "diff depth"
_TICKER: Final = "ticker"
_IGNORED: Final = "ignored"

_REST_KLINES: Final = "/api/v3/klines"
_REST_DEPTH: Final = "/api/v3/depth"
_REST_TICKER: Final = "/api/v3/ticker/24hr"

_Handler: TypeAlias = Callable[[Any, int, str], Event]
"""Turns a stream payload, its receive time and frame text into an event, or raises."""


class _Bad(Exception):
    """Raised by a fast path when a check fails; the slow path explains it."""


# --------------------------------------------------------------------------
# Decimal strings and book levels: the fast checks


def _numbers(joined: str, count: int) -> list[float]:
    """`count` decimal strings, joined with commas, as floats; raises if any is not one.

    One `orjson.loads` of `[joined]` converts them all for less than `float()`
    on each costs, and holds them to JSON's number grammar, which the character
    check narrows to unsigned numbers without exponent; a field that is not one
    number either fails the grammar or changes the count.
    """
    if not joined.isascii() or joined.encode().translate(None, _NUMBER_CHARS):
        raise _Bad
    values: list[float] = _loads("[" + joined + "]")
    if len(values) != count:
        raise _Bad
    if joined.count(".") != count:  # a number without a dot comes back as an int
        return [float(v) for v in values]
    return values


def _side(n: int) -> bytes:
    """The skeleton of `n` levels: what is left of them once their digits are deleted."""
    return b"[" + b",".join([b'[".","."]'] * n) + b"]"


_both_sides: dict[tuple[int, int], tuple[bytes, bytes]] = {}


def _levels_ok(bids: Any, asks: Any) -> bool:
    """Both sides are arrays of `[price, quantity]` decimal strings (`_LEVEL_DECIMAL`).

    Works on any layout of the frame: it re-serialises the parsed levels.
    Raises `TypeError` for a side without a length.
    """
    text = _dumps([bids, asks])
    shapes = _both_sides.get((len(bids), len(asks)))
    if shapes is None:
        dotted = b"[" + _side(len(bids)) + b"," + _side(len(asks)) + b"]"
        shapes = (dotted, dotted.replace(b".", b""))
        if len(_both_sides) < 4096:  # few level counts occur: 1000 x 1000 at most
            _both_sides[(len(bids), len(asks))] = shapes
    shape = text.translate(None, _DIGITS)
    if shape == shapes[0]:  # Binance's own form: exactly one dot in every decimal
        return _LONE_DOT not in text
    return (
        shape.translate(None, b".") == shapes[1]
        and b".." not in shape  # two dots in one string: dots of different ones are apart
        and b'""' not in text
        and _LONE_DOT not in text
    )


class _FrameShapes:
    """The digit-free skeleton of a stream's frames in Binance's exact layout.

    A frame whose text, digits deleted, equals the skeleton for its level counts
    has levels of digit strings with one dot each: one `translate` and one
    comparison over the text already in hand, cheaper than re-serialising the
    levels (`_levels_ok`, which any other layout falls back to).
    """

    __slots__ = ("_head", "_middle", "_tail", "by_counts")

    def __init__(self, head: bytes, middle: bytes, tail: bytes) -> None:
        self._head = head
        self._middle = middle
        self._tail = tail
        self.by_counts: dict[tuple[int, int], bytes] = {}
        """Skeletons by (bids, asks) level counts; a hot handler reads it directly."""

    def shape(self, counts: tuple[int, int]) -> bytes:
        """The skeleton for `counts` levels (remembered, for a bounded number of counts)."""
        shape = self.by_counts.get(counts)
        if shape is None:
            shape = self._head + _side(counts[0]) + self._middle + _side(counts[1]) + self._tail
            if len(self.by_counts) < 1024:
                self.by_counts[counts] = shape
        return shape

    def levels_ok(self, text: str, bids: Any, asks: Any) -> bool:
        raw = text.encode()
        shape = self.shape((len(bids), len(asks)))
        if raw.translate(None, _DIGITS) == shape and _LONE_DOT not in raw:
            return True
        return _levels_ok(bids, asks)


def _wrapped(stream: str) -> bytes:
    """The skeleton of a combined-stream wrapper up to its payload."""
    return b'{"stream":"' + stream.encode().translate(None, _DIGITS) + b'","data":'


# --------------------------------------------------------------------------
# WebSocket stream payloads: the fast handlers, one closure per stream name
#
# A handler takes the payload, the receive time and the frame's text (empty
# when the payload did not come straight from a combined frame), returns the
# event and raises on any layout it does not accept.


def _kline_handler(symbol: str, interval: str) -> _Handler:
    def kline(d: Any, t: int, text: str) -> Kline:
        k = d["k"]
        x = k["x"]
        open_time = k["t"]
        close_time = k["T"]
        if (
            d["e"] != "kline"
            or d["s"] != symbol
            or k["i"] != interval
            or type(open_time) is not int
            or type(close_time) is not int
            or (x is not True and x is not False)
        ):
            raise _Bad
        o, h, lo, c, v = _numbers(",".join((k["o"], k["h"], k["l"], k["c"], k["v"])), 5)
        return _new(Kline, (symbol, interval, open_time, close_time, o, h, lo, c, v, x, t, "ws"))

    return kline


def _partial_handler(stream: str, symbol: str) -> _Handler:
    shapes = _FrameShapes(_wrapped(stream) + b'{"lastUpdateId":,"bids":', b',"asks":', b"}}")
    # The busiest handler: `_FrameShapes.levels_ok` inlined (one call less per frame).
    known = shapes.by_counts
    shape_for = shapes.shape

    def partial(d: Any, t: int, text: str) -> BookSnapshot:
        last_id = d["lastUpdateId"]
        bids = d["bids"]
        asks = d["asks"]
        if type(last_id) is not int:
            raise _Bad
        if text:
            counts = (len(bids), len(asks))
            raw = text.encode()
            if not (
                raw.translate(None, _DIGITS) == (known.get(counts) or shape_for(counts))
                and _LONE_DOT not in raw
            ) and not _levels_ok(bids, asks):
                raise _Bad
        elif not _levels_ok(bids, asks):
            raise _Bad
        return _new(BookSnapshot, (symbol, last_id, bids, asks, t, "ws"))

    return partial


def _diff_handler(stream: str, symbol: str) -> _Handler:
    head = b'{"e":"depthUpdate","E":,"s":"' + symbol.encode().translate(None, _DIGITS)
    shapes = _FrameShapes(_wrapped(stream) + head + b'","U":,"u":,"b":', b',"a":', b"}}")

    def diff(d: Any, t: int, text: str) -> DepthDiff:
        event_time = d["E"]
        first = d["U"]
        final = d["u"]
        bids = d["b"]
        asks = d["a"]
        if (
            d["e"] != "depthUpdate"
            or d["s"] != symbol
            or type(event_time) is not int
            or type(first) is not int
            or type(final) is not int
            or not (shapes.levels_ok(text, bids, asks) if text else _levels_ok(bids, asks))
        ):
            raise _Bad
        return _new(DepthDiff, (symbol, event_time, first, final, bids, asks, t))

    return diff


def _ticker_handler(symbol: str) -> _Handler:
    def ticker(d: Any, t: int, text: str) -> Ticker:
        event_time = d["E"]
        if d["e"] != "24hrTicker" or d["s"] != symbol or type(event_time) is not int:
            raise _Bad
        values = _numbers(
            ",".join((d["b"], d["B"], d["a"], d["A"], d["c"], d["Q"], d["v"], d["q"])), 8
        )
        return _new(Ticker, (symbol, event_time, *values, t, "ws"))

    return ticker


def _ignored_handler(stream: str) -> _Handler:
    def ignored(d: Any, t: int, text: str) -> Ignored:
        return _new(Ignored, (stream, t))

    return ignored


class _StreamSpec:
    """What a stream name says: its kind, symbol (upper case) and interval."""

    __slots__ = ("interval", "kind", "name", "symbol")

    def __init__(self, name: str, kind: str, symbol: str = "", interval: str = "") -> None:
        self.name = name
        self.kind = kind
        self.symbol = symbol
        self.interval = interval

    def handler(self) -> _Handler:
        if self.kind == _KLINE:
            return _kline_handler(self.symbol, self.interval)
        if self.kind == _PARTIAL:
            return _partial_handler(self.name, self.symbol)
        if self.kind == _DIFF:
            return _diff_handler(self.name, self.symbol)
        if self.kind == _TICKER:
            return _ticker_handler(self.symbol)
        return _ignored_handler(self.name)


def _stream_spec(name: str) -> _StreamSpec | None:
    """Read a stream name (`hbarusdt@kline_1m`); None if it is not one.

    Well-formed names for streams the pipeline does not fold are `_IGNORED`,
    so a new Binance stream type is counted, not rejected.
    """
    if name.startswith("!"):  # all-market streams: `!ticker@arr`, `!bookTicker`
        return _StreamSpec(name, _IGNORED)
    sym, at, rest = name.partition("@")
    if not at or not rest or not (sym.isascii() and sym.isalnum()):
        return None
    symbol = sym.upper()
    base, _, speed = rest.partition("@")
    if base.startswith("kline_"):
        interval = base[6:]
        # A time-zone suffix (`@+08:00`) shifts the candles: not the frames' klines.
        if not speed and interval.isascii() and interval.isalnum():
            return _StreamSpec(name, _KLINE, symbol, interval)
        return _StreamSpec(name, _IGNORED, symbol)
    if speed and not _SPEED.fullmatch(speed):
        return _StreamSpec(name, _IGNORED, symbol)
    if base == "depth":
        return _StreamSpec(name, _DIFF, symbol)
    if base in ("depth5", "depth10", "depth20"):
        return _StreamSpec(name, _PARTIAL, symbol)
    if base == "ticker" and not speed:
        return _StreamSpec(name, _TICKER, symbol)
    return _StreamSpec(name, _IGNORED, symbol)


# --------------------------------------------------------------------------
# The slow path: say exactly what is wrong

_Check: TypeAlias = Callable[[Any], "str | None"]
_Layout: TypeAlias = tuple[tuple[str, "_Check | _Layout"], ...]


def _show(value: object) -> str:
    """The value as JSON (so `true` and `"true"` differ), shortened."""
    try:
        text = _dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _is_int(value: Any) -> str | None:
    if type(value) is int:
        return None
    return f"must be an integer, got {_show(value)}"


def _is_bool(value: Any) -> str | None:
    if value is True or value is False:
        return None
    return f"must be a JSON boolean, got {_show(value)}"


def _is_decimal(value: Any) -> str | None:
    if type(value) is str and _DECIMAL.fullmatch(value) and math.isfinite(float(value)):
        return None
    return f"must be a decimal string, got {_show(value)}"


def _is_levels(value: Any) -> str | None:
    if type(value) is not list:
        return f"must be an array of [price, quantity] levels, got {_show(value)}"
    for i, level in enumerate(value):
        if type(level) is not list or len(level) != 2:
            return f"level {i} must be [price, quantity], got {_show(level)}"
        for part, what in zip(level, ("price", "quantity"), strict=True):
            if type(part) is not str or not _LEVEL_DECIMAL.fullmatch(part):
                return f"level {i} {what} must be a decimal string, got {_show(part)}"
    return None


def _equals(expected: str, why: str = "") -> _Check:
    def check(value: Any) -> str | None:
        if value == expected and type(value) is str:
            return None
        return f"must be {_show(expected)}{why}, got {_show(value)}"

    return check


def _is_symbol(value: Any) -> str | None:
    if type(value) is str and value.isascii() and value.isalnum() and value == value.upper():
        return None
    return f"must be an upper-case symbol, got {_show(value)}"


def _is_interval(value: Any) -> str | None:
    if type(value) is str and value.isascii() and value.isalnum():
        return None
    return f'must be an interval such as "1m", got {_show(value)}'


def _explain(value: Any, layout: _Layout, where: str = "") -> str | None:
    """The first way `value` breaks `layout`, or None if it fits."""
    if type(value) is not dict:
        return f"{where or 'message'} must be a JSON object, got {_json_type(value)}"
    for key, check in layout:
        path = f"{where}.{key}" if where else key
        if key not in value:
            return f"missing field {path!r}"
        if isinstance(check, tuple):
            problem = _explain(value[key], check, path)
            if problem is not None:
                return problem
        else:
            problem = check(value[key])
            if problem is not None:
                return f"field {path!r} {problem}"
    return None


def _ws_layout(spec: _StreamSpec) -> _Layout:
    same = _equals(spec.symbol, f" (the symbol of stream {spec.name!r})")
    if spec.kind == _KLINE:
        candle: _Layout = (
            ("t", _is_int),
            ("T", _is_int),
            ("i", _equals(spec.interval, f" (the interval of stream {spec.name!r})")),
            ("o", _is_decimal),
            ("h", _is_decimal),
            ("l", _is_decimal),
            ("c", _is_decimal),
            ("v", _is_decimal),
            ("x", _is_bool),
        )
        return (("e", _equals("kline")), ("s", same), ("k", candle))
    if spec.kind == _PARTIAL:
        return (("lastUpdateId", _is_int), ("bids", _is_levels), ("asks", _is_levels))
    if spec.kind == _DIFF:
        return (
            ("e", _equals("depthUpdate")),
            ("s", same),
            ("E", _is_int),
            ("U", _is_int),
            ("u", _is_int),
            ("b", _is_levels),
            ("a", _is_levels),
        )
    if spec.kind == _TICKER:
        prices = tuple((key, _is_decimal) for key in ("b", "B", "a", "A", "c", "Q", "v", "q"))
        return (("e", _equals("24hrTicker")), ("s", same), ("E", _is_int), *prices)
    return ()


_REST_DEPTH_LAYOUT: Final[_Layout] = (
    ("lastUpdateId", _is_int),
    ("bids", _is_levels),
    ("asks", _is_levels),
)


_REST_TICKER_FIELDS: Final = (
    *("bidPrice", "bidQty", "askPrice", "askQty"),
    *("lastPrice", "lastQty", "volume", "quoteVolume"),
)
"""In `Ticker` order: best_bid ... quote_volume_24h."""


def _rest_ticker_layout(symbol: str) -> _Layout:
    named = _equals(symbol, " (the symbol requested)") if symbol else _is_symbol
    prices = tuple((key, _is_decimal) for key in _REST_TICKER_FIELDS)
    return (("symbol", named), ("closeTime", _is_int), *prices)


def _explain_kline_rows(rows: Any) -> str | None:
    if type(rows) is not list:
        return f"body must be an array of kline rows, got {_json_type(rows)}"
    for i, row in enumerate(rows):
        if type(row) is not list or len(row) < 7:
            return f"row {i} must be an array of at least 7 items, got {_show(row)}"
        for col, (what, check) in enumerate(_KLINE_ROW):
            problem = check(row[col])
            if problem is not None:
                return f"row {i} item {col} ({what}) {problem}"
    return None


_KLINE_ROW: Final[tuple[tuple[str, _Check], ...]] = (
    ("open time", _is_int),
    ("open", _is_decimal),
    ("high", _is_decimal),
    ("low", _is_decimal),
    ("close", _is_decimal),
    ("volume", _is_decimal),
    ("close time", _is_int),
)


# --------------------------------------------------------------------------
# Per-connection knowledge, for raw (`/ws/...`) sockets


class _Conn:
    """The streams a socket's URL names; raw payloads are attributed with them."""

    __slots__ = ("only", "partial", "streams")

    def __init__(self, url: str) -> None:
        self.streams = _url_streams(url)
        self.only: _StreamSpec | None = None
        """The one stream of a single-stream socket."""
        self.partial: _StreamSpec | None = None
        """The one partial-depth stream, if exactly one: a depth20 payload names no symbol."""
        specs = [s for s in map(_stream_spec, self.streams) if s is not None]
        if len(self.streams) == 1 and specs:
            self.only = specs[0]
        partials = [s for s in specs if s.kind == _PARTIAL]
        if len(partials) == 1:
            self.partial = partials[0]


def _url_streams(url: str) -> tuple[str, ...]:
    """Stream names in `/stream?streams=a/b` or `/ws/a/b`; empty when unknown."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    path = parts.path.rstrip("/")
    if path.endswith("/stream"):
        joined = parse_qs(parts.query).get("streams", [""])[0]
    elif "/ws/" in path:
        joined = path.split("/ws/", 1)[1]
    else:
        return ()
    return tuple(s for s in joined.split("/") if s)


# --------------------------------------------------------------------------
# The parser


class Parser:
    """Turns `RawMessage`s into events, without ReactiveX.

    One instance per stream of messages (the `parse` operator makes one per
    subscription): it remembers which streams each open socket carries, so that
    raw `/ws/<stream>` payloads, which do not name their stream, can be
    attributed. Never raises: every problem with a message becomes a
    `BadMessage` (logged at DEBUG on the `operators.parse` logger).

    Example:
        >>> parser = Parser()
        >>> out = parser.parse(raw)
        >>> events = out if type(out) is list else [out]
    """

    __slots__ = ("_conns", "_handlers")

    def __init__(self) -> None:
        self._handlers: dict[str, _Handler] = {}
        self._conns: dict[int, _Conn] = {}

    def parse(self, raw: RawMessage) -> Event | list[Event]:
        """Parse one message: one event, or a list of them (maybe empty).

        A REST klines body (one event per row) and a 24h-ticker body for every
        symbol (an array) give a list; everything else gives one event, returned
        bare so the hot path builds no list per frame. Events are tuples, never
        lists, so `type(out) is list` tells the two apart. Never raises.
        """
        try:
            kind = raw.kind
            if kind == "ws":  # literals, not the KIND_ names: no global look-up per frame
                try:
                    msg = _loads(raw.data)
                except _JSONDecodeError as exc:
                    return self._bad(raw, f"invalid JSON: {exc}")
                try:
                    return self._handlers[msg["stream"]](msg["data"], raw.t, raw.data)
                except Exception:  # a cache miss, a raw payload, or a broken layout
                    return self._ws_slow(raw, msg)
            if kind == KIND_REST:
                return self._rest(raw)
            if kind == KIND_OPEN:
                self._conns[raw.conn] = _Conn(raw.url)
                return Connected(raw.conn, raw.url, raw.t)
            if kind == KIND_CLOSE:
                self._conns.pop(raw.conn, None)
                return Disconnected(raw.conn, raw.status, raw.data, raw.t)
            return self._bad(raw, f"unknown message kind {_show(kind)}")
        except Exception as exc:  # a parser bug: one message lost, not the stream
            return self._internal_error(raw, exc)

    def handler(self, stream: str) -> Callable[[Any, int, str], Event] | None:
        """The cached fast handler of combined-stream `stream`, once a frame of it was parsed.

        `handler(msg["data"], raw.t, raw.data)` is exactly what `parse` tries first
        for a frame `msg` of that stream: one event, always of the same type and
        symbol, or an exception, after which `parse_loaded(raw, msg)` gives the
        answer `parse` would. Lets a caller route by stream name instead of by
        event (the feed does).
        """
        return self._handlers.get(stream)

    def parse_loaded(self, raw: RawMessage, msg: Any) -> Event:
        """`parse` of a WebSocket `raw` whose text `msg` was already loaded, past the fast path."""
        try:
            return self._ws_slow(raw, msg)
        except Exception as exc:
            return self._internal_error(raw, exc)

    def parse_list(self, raw: RawMessage) -> list[Event]:
        """Like `parse`, always as a list."""
        out = self.parse(raw)
        return out if type(out) is list else [out]  # type: ignore[list-item]

    def parse_all(self, raws: Iterable[RawMessage]) -> Iterator[Event]:
        """Parse messages in order, yielding every event."""
        parse = self.parse
        for raw in raws:
            out = parse(raw)
            if type(out) is list:
                yield from out
            else:
                yield out  # type: ignore[misc]

    # ---- WebSocket, slow path

    def _ws_slow(self, raw: RawMessage, msg: Any) -> Event:
        if type(msg) is not dict:
            return self._bad(raw, f"expected a JSON object, got {_json_type(msg)}")
        if "stream" not in msg:
            return self._unwrapped(raw, msg)
        name = msg["stream"]
        if type(name) is not str:
            return self._bad(raw, f"field 'stream' must be a string, got {_show(name)}")
        spec = _stream_spec(name)
        if spec is None:
            return self._bad(
                raw, f"field 'stream' is not <symbol>@<stream>, got {_show(name)}", name
            )
        if "data" not in msg:
            return self._bad(raw, "missing field 'data'", name)
        return self._dispatch(raw, spec, msg["data"], "data")

    def _dispatch(self, raw: RawMessage, spec: _StreamSpec, payload: Any, where: str) -> Event:
        """Run a stream's handler (remembering it), explaining any failure."""
        handler = self._handlers.get(spec.name)
        if handler is None:
            handler = spec.handler()
            if len(self._handlers) < _MAX_CACHED_STREAMS:
                self._handlers[spec.name] = handler
        try:
            return handler(payload, raw.t, raw.data if where == "data" else "")
        except Exception as exc:
            reason = _explain(payload, _ws_layout(spec), where)
            if reason is None:
                return self._internal_error(raw, exc, spec.name)
            return self._bad(raw, reason, spec.name)

    def _unwrapped(self, raw: RawMessage, msg: dict[str, Any]) -> Event:
        """A message with no `stream` wrapper: a control reply or a raw payload."""
        if ("result" in msg and "id" in msg) or "error" in msg or ("code" in msg and "msg" in msg):
            return self._control(raw, msg)
        conn = self._conns.get(raw.conn)
        if conn is not None and conn.only is not None:
            return self._dispatch(raw, conn.only, msg, "")
        event_type = msg.get("e")
        symbol: Any = msg.get("s")
        if event_type is None:
            if "lastUpdateId" in msg:
                if conn is not None and conn.partial is not None:
                    return self._dispatch(raw, conn.partial, msg, "")
                streams = "unknown streams" if conn is None or not conn.streams else "streams "
                if conn is not None and conn.streams:
                    streams += ", ".join(conn.streams)
                return self._bad(
                    raw,
                    "cannot tell the symbol of a partial-depth payload (it names none) "
                    f"on raw socket {raw.conn} with {streams}",
                )
            if {"u", "s", "b", "a"} <= msg.keys() and type(symbol) is str:
                return Ignored(f"{symbol.lower()}@bookTicker", raw.t)
            return self._bad(raw, "a raw payload with no event type 'e' and no stream to tell")
        if type(event_type) is not str:
            return self._bad(raw, f"field 'e' must be a string, got {_show(event_type)}")
        problem = _is_symbol(symbol)
        if problem is not None:
            if "s" not in msg:
                return self._bad(raw, f"missing field 's' in a raw {event_type!r} payload")
            return self._bad(raw, f"field 's' {problem}")
        if event_type == "kline":
            problem = _explain(msg, (("k", (("i", _is_interval),)),))
            if problem is not None:
                return self._bad(raw, problem)
            name = f"{symbol.lower()}@kline_{msg['k']['i']}"
        elif event_type == "depthUpdate":
            name = f"{symbol.lower()}@depth"
        elif event_type == "24hrTicker":
            name = f"{symbol.lower()}@ticker"
        else:
            return Ignored(f"{symbol.lower()}@{event_type}", raw.t)
        spec = _stream_spec(name)
        if spec is None:  # e.g. an interval with odd characters
            return self._bad(raw, f"cannot tell the stream of a raw {event_type!r} payload")
        return self._dispatch(raw, spec, msg, "")

    def _control(self, raw: RawMessage, msg: dict[str, Any]) -> Event:
        request_id = msg.get("id")
        if request_id is not None and type(request_id) is not int and type(request_id) is not str:
            return self._bad(
                raw,
                f"field 'id' of a control reply must be an integer, string or null, "
                f"got {_show(request_id)}",
            )
        if "error" in msg:
            return ControlReply(raw.conn, request_id, None, msg["error"], raw.t)
        if "result" in msg:
            return ControlReply(raw.conn, request_id, msg["result"], None, raw.t)
        return ControlReply(
            raw.conn, request_id, None, {"code": msg["code"], "msg": msg["msg"]}, raw.t
        )

    # ---- REST

    def _rest(self, raw: RawMessage) -> Event | list[Event]:
        try:
            parts = urlsplit(raw.url)
        except ValueError as exc:
            return self._bad(raw, f"unreadable request URL {_show(raw.url)}: {exc}")
        path = parts.path
        stream = f"rest {path}"
        if raw.status != 200:
            return Ignored(f"{stream} status {raw.status}", raw.t)
        if path not in (_REST_KLINES, _REST_DEPTH, _REST_TICKER):
            return Ignored(stream, raw.t)
        query = parse_qs(parts.query)
        symbol = query.get("symbol", [""])[0].upper()
        if symbol and _is_symbol(symbol) is not None:
            return self._bad(raw, f"cannot tell the symbol: 'symbol' is {_show(symbol)}", stream)
        try:
            body = _loads(raw.data)
        except _JSONDecodeError as exc:
            return self._bad(raw, f"invalid JSON: {exc}", stream)
        if path == _REST_TICKER:
            return self._rest_ticker(raw, body, symbol, stream)
        if not symbol:
            return self._bad(raw, "cannot tell the symbol: no 'symbol' in the request", stream)
        if path == _REST_DEPTH:
            try:
                last_id = body["lastUpdateId"]
                bids = body["bids"]
                asks = body["asks"]
                if type(last_id) is not int or not _levels_ok(bids, asks):
                    raise _Bad
                return BookSnapshot(symbol, last_id, bids, asks, raw.t, KIND_REST)
            except Exception as exc:
                return self._bad_or_bug(raw, exc, _explain(body, _REST_DEPTH_LAYOUT, ""), stream)
        interval = query.get("interval", [""])[0]
        if not interval:
            return self._bad(raw, "cannot tell the interval: no 'interval' in the request", stream)
        try:
            return _kline_rows(body, symbol, interval, raw.t)
        except Exception as exc:
            return self._bad_or_bug(raw, exc, _explain_kline_rows(body), stream)

    def _rest_ticker(
        self, raw: RawMessage, body: Any, symbol: str, stream: str
    ) -> Event | list[Event]:
        # Without `symbol` the endpoint answers with an array of every ticker.
        items = body if type(body) is list else [body]
        out: list[Event] = []
        for i, item in enumerate(items):
            try:
                if symbol and item["symbol"] != symbol:
                    raise _Bad
                out.append(_rest_ticker(item, raw.t))
            except Exception as exc:
                reason = _explain(item, _rest_ticker_layout(symbol), "")
                if reason is not None and type(body) is list:
                    reason = f"item {i}: {reason}"
                return self._bad_or_bug(raw, exc, reason, stream)
        return out if type(body) is list else out[0]

    # ---- failures

    def _bad_or_bug(
        self, raw: RawMessage, exc: Exception, reason: str | None, stream: str
    ) -> BadMessage:
        if reason is None:
            return self._internal_error(raw, exc, stream)
        return self._bad(raw, reason, stream)

    def _bad(self, raw: RawMessage, reason: str, stream: str = "") -> BadMessage:
        # getattr: even something that is not a RawMessage must not end the stream.
        data: object = getattr(raw, "data", raw)
        if isinstance(data, bytes | bytearray):  # a source that passed bytes on
            text = bytes(data[:MAX_BAD_TEXT]).decode("utf-8", "replace")
        else:
            text = str(data)[:MAX_BAD_TEXT]
        if not text.isascii():  # lone surrogates from undecodable bytes cannot be printed
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        t = getattr(raw, "t", 0)
        conn = getattr(raw, "conn", 0)
        _log.debug("bad message (conn %s, %s): %s", conn, stream or "no stream", reason)
        return BadMessage(reason, text, t, conn, stream)

    def _internal_error(self, raw: RawMessage, exc: Exception, stream: str = "") -> BadMessage:
        _log.error("parser failed on %s", type(raw).__name__, exc_info=exc)
        return self._bad(raw, f"parser error {type(exc).__name__}: {exc}", stream)


def _kline_rows(rows: Any, symbol: str, interval: str, t: int) -> list[Event]:
    """REST klines: final only if closed over a second before receipt (DESIGN.md)."""
    cutoff = t // 1_000_000 - 1000
    out: list[Event] = []
    append = out.append
    if type(rows) is not list:
        raise _Bad
    for row in rows:
        if type(row) is not list:
            raise _Bad
        open_time = row[0]
        close_time = row[6]
        if type(open_time) is not int or type(close_time) is not int:
            raise _Bad
        o, h, lo, c, v = _numbers(",".join(row[1:6]), 5)
        final = close_time < cutoff
        append(
            _new(Kline, (symbol, interval, open_time, close_time, o, h, lo, c, v, final, t, "rest"))
        )
    return out


def _rest_ticker(item: Any, t: int) -> Ticker:
    symbol = item["symbol"]
    close_time = item["closeTime"]
    if _is_symbol(symbol) is not None or type(close_time) is not int:
        raise _Bad
    fields = (item[key] for key in _REST_TICKER_FIELDS)
    values = _numbers(",".join(fields), len(_REST_TICKER_FIELDS))
    return _new(Ticker, (symbol, close_time, *values, t, "rest"))


# --------------------------------------------------------------------------
# The operator


def parse_() -> Callable[[Observable[RawMessage]], Observable[Event]]:
    """Implementation of `operators.parse`; see its documentation there."""

    def _parse(source: Observable[RawMessage]) -> Observable[Event]:
        # Hand-written rather than composed: one message may give zero, one or
        # many events, and flat_map would build an observable per message.
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            parse = Parser().parse  # fresh per subscription: replays start clean
            on_next = observer.on_next

            def on_raw(raw: RawMessage) -> None:
                out = parse(raw)
                if type(out) is list:
                    for event in out:
                        on_next(event)
                else:
                    on_next(out)  # type: ignore[arg-type]

            return source.subscribe(
                on_raw, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return _parse
