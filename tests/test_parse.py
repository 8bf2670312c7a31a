"""The `parse` operator and its plain core, `Parser`.

Plain unit tests pin the mapping of every stream kind and every way a frame can
break the layout; marble tests pin the operator's behaviour in a stream (bad
input never ends it, each subscription starts fresh); Hypothesis checks that no
input whatever makes the parser raise or emit a malformed event.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing.marbles import marbles_testing

import operators._parse as parse_module
from operators import (
    MAX_BAD_TEXT,
    BadMessage,
    BookSnapshot,
    Connected,
    ControlReply,
    DepthDiff,
    Disconnected,
    Event,
    Ignored,
    Kline,
    Parser,
    RawMessage,
    Ticker,
    parse,
)

T = 1_700_000_000_123_456_789
"""A receive time, ns."""
T_MS = T // 1_000_000


def ws(text: str, conn: int = 1, t: int = T) -> RawMessage:
    return RawMessage(t, "ws", conn, text)


def opened(url: str, conn: int = 1, t: int = T) -> RawMessage:
    return RawMessage(t, "open", conn, url=url)


def rest(url: str, body: object, status: int = 200, t: int = T) -> RawMessage:
    text = body if isinstance(body, str) else orjson.dumps(body).decode()
    return RawMessage(t, "rest", 0, text, url, status, "GET")


def combined(stream: str, data: object) -> str:
    return orjson.dumps({"stream": stream, "data": data}).decode()


def one(*raws: RawMessage) -> Event:
    """Parse `raws` with one parser; return the single event of the last."""
    parser = Parser()
    out: Event | list[Event] = []
    for raw in raws:
        out = parser.parse(raw)
    assert not isinstance(out, list), out
    return out


def bad(*raws: RawMessage) -> BadMessage:
    event = one(*raws)
    assert isinstance(event, BadMessage), event
    return event


# ------------------------------------------------------------------ payloads


def kline_data(**candle: Any) -> dict[str, Any]:
    k: dict[str, Any] = {
        "t": 1_700_000_040_000,
        "T": 1_700_000_099_999,
        "s": "HBARUSDT",
        "i": "1m",
        "f": 100,
        "L": 200,
        "o": "0.06010000",
        "c": "0.06020000",
        "h": "0.06050000",
        "l": "0.06000000",
        "v": "12345.00000000",
        "n": 101,
        "x": False,
        "q": "742.50000000",
        "V": "500.00000000",
        "Q": "30.10000000",
        "B": "0",
    }
    k.update(candle)
    return {"e": "kline", "E": 1_700_000_061_000, "s": "HBARUSDT", "k": k}


KLINE = Kline(
    "HBARUSDT",
    "1m",
    1_700_000_040_000,
    1_700_000_099_999,
    0.0601,
    0.0605,
    0.06,
    0.0602,
    12345.0,
    False,
    T,
    "ws",
)

BIDS = [["0.06010000", "1500.00000000"], ["0.06000000", "22000.50000000"]]
ASKS = [["0.06020000", "900.00000000"]]


def book_data(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"lastUpdateId": 4_000_000_123, "bids": BIDS, "asks": ASKS}
    data.update(fields)
    return data


def diff_data(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "e": "depthUpdate",
        "E": 1_700_000_061_100,
        "s": "HBARUSDT",
        "U": 4_000_000_124,
        "u": 4_000_000_130,
        "b": BIDS,
        "a": ASKS,
    }
    data.update(fields)
    return data


def ticker_data(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "e": "24hrTicker",
        "E": 1_700_000_061_234,
        "s": "HBARUSDT",
        "p": "-0.00050000",
        "P": "-0.823",
        "w": "0.06050000",
        "x": "0.06070000",
        "c": "0.06020000",
        "Q": "150.00000000",
        "b": "0.06010000",
        "B": "1500.00000000",
        "a": "0.06020000",
        "A": "900.00000000",
        "o": "0.06070000",
        "h": "0.06200000",
        "l": "0.05900000",
        "v": "98765432.10000000",
        "q": "5975308.64205000",
        "O": 1_699_913_661_234,
        "C": 1_700_000_061_234,
        "F": 1,
        "L": 2,
        "n": 2,
    }
    data.update(fields)
    return data


TICKER = Ticker(
    "HBARUSDT",
    1_700_000_061_234,
    0.0601,
    1500.0,
    0.0602,
    900.0,
    0.0602,
    150.0,
    98765432.1,
    5975308.64205,
    T,
    "ws",
)

# ------------------------------------------------------------------ WebSocket streams


def test_kline_frame_becomes_a_kline() -> None:
    assert one(ws(combined("hbarusdt@kline_1m", kline_data()))) == KLINE


def test_kline_final_is_the_frames_x() -> None:
    event = one(ws(combined("hbarusdt@kline_1m", kline_data(x=True))))
    assert event == KLINE._replace(final=True)


def test_kline_of_other_intervals() -> None:
    event = one(ws(combined("hbarusdt@kline_1h", kline_data(i="1h"))))
    assert isinstance(event, Kline)
    assert event.interval == "1h"


def test_kline_decimals_without_a_dot_are_floats() -> None:
    event = one(ws(combined("hbarusdt@kline_1m", kline_data(v="12345", o="0"))))
    assert isinstance(event, Kline)
    assert (event.volume, event.open) == (12345.0, 0.0)
    assert type(event.volume) is float
    assert type(event.open) is float


def test_floats_are_exactly_what_float_reads() -> None:
    prices = ["0.1", "0.30000000", "123456789.12345678", "0.00000001", "99999999.99999999"]
    for price in prices:
        event = one(ws(combined("hbarusdt@kline_1m", kline_data(c=price))))
        assert isinstance(event, Kline)
        assert event.close == float(price)


@pytest.mark.parametrize("stream", ["hbarusdt@depth20@100ms", "hbarusdt@depth20"])
def test_partial_depth_frame_becomes_a_ws_snapshot(stream: str) -> None:
    event = one(ws(combined(stream, book_data())))
    assert event == BookSnapshot("HBARUSDT", 4_000_000_123, BIDS, ASKS, T, "ws")


@pytest.mark.parametrize("levels", [5, 10])
def test_shallower_partial_depth(levels: int) -> None:
    bids = [[f"0.0{600 - i}0000", "1.00000000"] for i in range(levels)]
    event = one(ws(combined(f"hbarusdt@depth{levels}@100ms", book_data(bids=bids))))
    assert isinstance(event, BookSnapshot)
    assert event.bids == bids


def test_partial_depth_in_another_layout_is_accepted() -> None:
    # Whitespace and key order differ from Binance's: the slower check reads it.
    text = (
        '{ "data": {"asks": [["0.0602", "900"]], "bids": [], "lastUpdateId": 7},'
        ' "stream": "hbarusdt@depth20@100ms" }'
    )
    assert one(ws(text)) == BookSnapshot("HBARUSDT", 7, [], [["0.0602", "900"]], T, "ws")


def test_empty_book_sides() -> None:
    event = one(ws(combined("hbarusdt@depth20@100ms", book_data(bids=[], asks=[]))))
    assert event == BookSnapshot("HBARUSDT", 4_000_000_123, [], [], T, "ws")


@pytest.mark.parametrize("stream", ["hbarusdt@depth@100ms", "hbarusdt@depth"])
def test_diff_depth_frame_becomes_a_depth_diff(stream: str) -> None:
    event = one(ws(combined(stream, diff_data())))
    expected = DepthDiff("HBARUSDT", 1_700_000_061_100, 4_000_000_124, 4_000_000_130, BIDS, ASKS, T)
    assert event == expected


def test_ticker_frame_becomes_a_ticker() -> None:
    assert one(ws(combined("hbarusdt@ticker", ticker_data()))) == TICKER


def test_same_stream_again_uses_the_remembered_handler() -> None:
    parser = Parser()
    first = parser.parse(ws(combined("hbarusdt@kline_1m", kline_data())))
    second = parser.parse(ws(combined("hbarusdt@kline_1m", kline_data(x=True))))
    assert first == KLINE
    assert second == KLINE._replace(final=True)


@pytest.mark.parametrize(
    ("stream", "data"),
    [
        ("hbarusdt@aggTrade", {"e": "aggTrade", "s": "HBARUSDT", "p": "0.06"}),
        ("hbarusdt@trade", {"e": "trade", "s": "HBARUSDT"}),
        ("hbarusdt@bookTicker", {"u": 1, "s": "HBARUSDT", "b": "0.06", "B": "1"}),
        ("hbarusdt@miniTicker", {"e": "24hrMiniTicker"}),
        ("hbarusdt@ticker_1h", {"e": "1hTicker"}),
        ("hbarusdt@avgPrice", {"e": "avgPrice"}),
        ("hbarusdt@kline_1m@+08:00", kline_data()),
        ("!ticker@arr", [{"e": "24hrTicker"}]),
        ("!bookTicker", {}),
        ("hbarusdt@somethingNew", None),
    ],
)
def test_other_streams_are_ignored(stream: str, data: object) -> None:
    assert one(ws(combined(stream, data))) == Ignored(stream, T)


def test_symbols_are_upper_case_from_lower_case_stream_names() -> None:
    event = one(ws(combined("1inchusdt@depth20@100ms", book_data())))
    assert isinstance(event, BookSnapshot)
    assert event.symbol == "1INCHUSDT"


# ------------------------------------------------------------------ raw sockets


def test_raw_single_stream_socket_attributes_a_partial_depth_payload() -> None:
    url = "wss://stream.binance.us:9443/ws/hbarusdt@depth20@100ms"
    event = one(opened(url), ws(orjson.dumps(book_data()).decode()))
    assert event == BookSnapshot("HBARUSDT", 4_000_000_123, BIDS, ASKS, T, "ws")


def test_raw_single_stream_socket_checks_the_payload_against_the_url() -> None:
    url = "wss://stream.binance.us:9443/ws/hbarusdt@kline_1m"
    event = bad(opened(url), ws(orjson.dumps(kline_data(x="false")).decode()))
    assert event.reason == "field 'k.x' must be a JSON boolean, got \"false\""
    assert event.stream == "hbarusdt@kline_1m"
    mismatch = bad(opened(url), ws(orjson.dumps(kline_data(i="1h")).decode()))
    assert "k.i" in mismatch.reason


def test_raw_payloads_with_a_symbol_are_attributed_on_any_socket() -> None:
    url = "wss://stream.binance.us:9443/ws/hbarusdt@kline_1m/hbarusdt@depth@100ms"
    parser = Parser()
    parser.parse(opened(url))
    assert parser.parse(ws(orjson.dumps(kline_data()).decode())) == KLINE
    diff = parser.parse(ws(orjson.dumps(diff_data()).decode()))
    assert isinstance(diff, DepthDiff)
    assert parser.parse(ws(orjson.dumps(ticker_data()).decode())) == TICKER
    trade = {"e": "aggTrade", "E": 1, "s": "HBARUSDT", "p": "0.06"}
    assert parser.parse(ws(orjson.dumps(trade).decode())) == Ignored("hbarusdt@aggTrade", T)
    book_ticker = {"u": 1, "s": "HBARUSDT", "b": "0.06", "B": "1", "a": "0.07", "A": "2"}
    ignored = parser.parse(ws(orjson.dumps(book_ticker).decode()))
    assert ignored == Ignored("hbarusdt@bookTicker", T)


def test_raw_payload_of_an_unopened_socket_with_a_symbol() -> None:
    assert one(ws(orjson.dumps(kline_data()).decode(), conn=9)) == KLINE


def test_raw_partial_depth_on_a_socket_of_several_streams_cannot_be_attributed() -> None:
    url = "wss://stream.binance.us:9443/ws/hbarusdt@depth20@100ms/btcusdt@depth20@100ms"
    event = bad(opened(url), ws(orjson.dumps(book_data()).decode()))
    assert "cannot tell the symbol" in event.reason
    assert "hbarusdt@depth20@100ms, btcusdt@depth20@100ms" in event.reason


def test_raw_partial_depth_on_an_unknown_socket_cannot_be_attributed() -> None:
    event = bad(ws(orjson.dumps(book_data()).decode(), conn=7))
    assert "cannot tell the symbol" in event.reason
    assert "unknown streams" in event.reason
    no_streams = bad(
        opened("wss://stream.binance.us:9443/ws"), ws(orjson.dumps(book_data()).decode())
    )
    assert "cannot tell the symbol" in no_streams.reason


def test_raw_partial_depth_with_the_only_partial_stream_of_a_socket() -> None:
    url = "wss://stream.binance.us:9443/ws/hbarusdt@depth20@100ms/hbarusdt@kline_1m"
    event = one(opened(url), ws(orjson.dumps(book_data()).decode()))
    assert isinstance(event, BookSnapshot)
    assert event.symbol == "HBARUSDT"


def test_close_forgets_the_socket() -> None:
    url = "wss://stream.binance.us:9443/ws/hbarusdt@depth20@100ms"
    closed = RawMessage(T, "close", 1, "abnormal closure", status=1006)
    event = bad(opened(url), closed, ws(orjson.dumps(book_data()).decode()))
    assert "cannot tell the symbol" in event.reason


@pytest.mark.parametrize(
    "payload",
    [
        {"e": 5, "s": "HBARUSDT"},
        {"e": "kline", "s": "hbarusdt", "k": {"i": "1m"}},
        {"e": "kline", "k": {"i": "1m"}},
        {"e": "kline", "s": "HBARUSDT", "k": {"i": 1}},
        {"e": "kline", "s": "HBARUSDT"},
        {"x": 1},
    ],
)
def test_raw_payloads_that_name_no_stream_are_bad(payload: dict[str, Any]) -> None:
    assert bad(ws(orjson.dumps(payload).decode())).reason


# ------------------------------------------------------------------ sockets and control replies


def test_open_and_close() -> None:
    url = "wss://stream.binance.us:9443/stream?streams=hbarusdt@kline_1m/hbarusdt@depth20@100ms"
    assert one(opened(url, conn=3)) == Connected(3, url, T)
    closed = RawMessage(T, "close", 3, "abnormal closure", status=1006)
    assert one(closed) == Disconnected(3, 1006, "abnormal closure", T)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"result":null,"id":1}', ControlReply(1, 1, None, None, T)),
        (
            '{"result":["hbarusdt@kline_1m"],"id":"a7"}',
            ControlReply(1, "a7", ["hbarusdt@kline_1m"], None, T),
        ),
        ('{"result":true,"id":null}', ControlReply(1, None, True, None, T)),
        (
            '{"error":{"code":2,"msg":"Invalid request"},"id":3}',
            ControlReply(1, 3, None, {"code": 2, "msg": "Invalid request"}, T),
        ),
        (
            '{"code":0,"msg":"Unknown property","id":5}',
            ControlReply(1, 5, None, {"code": 0, "msg": "Unknown property"}, T),
        ),
        (
            '{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}',
            ControlReply(
                1,
                None,
                None,
                {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"},
                T,
            ),
        ),
    ],
)
def test_control_replies(text: str, expected: ControlReply) -> None:
    assert one(ws(text)) == expected


def test_control_reply_with_an_impossible_id_is_bad() -> None:
    event = bad(ws('{"result":null,"id":[1]}'))
    assert (
        event.reason == "field 'id' of a control reply must be an integer, string or null, got [1]"
    )


# ------------------------------------------------------------------ REST


def kline_row(open_time: int, close: str = "0.06020000") -> list[object]:
    return [
        open_time,
        "0.06010000",
        "0.06050000",
        "0.06000000",
        close,
        "12345.00000000",
        open_time + 3_599_999,
        "742.50000000",
        101,
        "500.00000000",
        "30.10000000",
        "0",
    ]


def rest_kline(open_time: int, final: bool, t: int = T) -> Kline:
    return Kline(
        "HBARUSDT",
        "1h",
        open_time,
        open_time + 3_599_999,
        0.0601,
        0.0605,
        0.06,
        0.0602,
        12345.0,
        final,
        t,
        "rest",
    )


def test_rest_klines_one_per_row_forming_candle_not_final() -> None:
    hour = 3_600_000
    forming = (T_MS // hour) * hour
    rows = [kline_row(forming - 2 * hour), kline_row(forming - hour), kline_row(forming)]
    url = "/api/v3/klines?symbol=HBARUSDT&interval=1h&limit=3"
    out = Parser().parse(rest(url, rows))
    assert out == [
        rest_kline(forming - 2 * hour, True),
        rest_kline(forming - hour, True),
        rest_kline(forming, False),
    ]


def test_rest_klines_one_second_rule_at_the_boundary() -> None:
    # Final iff close_time < receive_ms - 1000: closed more than a second before.
    cutoff = T_MS - 1000
    rows = [kline_row(cutoff - 1 - 3_599_999), kline_row(cutoff - 3_599_999)]
    out = Parser().parse(rest("/api/v3/klines?symbol=HBARUSDT&interval=1h", rows))
    assert isinstance(out, list)
    closes_and_finals = [(k.close_time, k.final) for k in out if isinstance(k, Kline)]
    assert closes_and_finals == [(cutoff - 1, True), (cutoff, False)]


def test_rest_klines_with_a_full_url_and_lower_case_symbol() -> None:
    url = "https://api.binance.us/api/v3/klines?symbol=hbarusdt&interval=1h&limit=1"
    out = Parser().parse(rest(url, [kline_row(0)]))
    assert out == [rest_kline(0, True)]


def test_rest_klines_empty_body() -> None:
    assert Parser().parse(rest("/api/v3/klines?symbol=HBARUSDT&interval=1h", [])) == []


def test_rest_depth_becomes_a_rest_snapshot() -> None:
    event = one(rest("/api/v3/depth?symbol=HBARUSDT&limit=1000", book_data()))
    assert event == BookSnapshot("HBARUSDT", 4_000_000_123, BIDS, ASKS, T, "rest")


REST_TICKER = {
    "symbol": "HBARUSDT",
    "priceChange": "-0.00050000",
    "priceChangePercent": "-0.823",
    "weightedAvgPrice": "0.06050000",
    "prevClosePrice": "0.06070000",
    "lastPrice": "0.06020000",
    "lastQty": "150.00000000",
    "bidPrice": "0.06010000",
    "bidQty": "1500.00000000",
    "askPrice": "0.06020000",
    "askQty": "900.00000000",
    "openPrice": "0.06070000",
    "highPrice": "0.06200000",
    "lowPrice": "0.05900000",
    "volume": "98765432.10000000",
    "quoteVolume": "5975308.64205000",
    "openTime": 1_699_913_661_234,
    "closeTime": 1_700_000_061_234,
    "firstId": 1,
    "lastId": 2,
    "count": 2,
}


def test_rest_ticker_becomes_a_rest_ticker() -> None:
    event = one(rest("/api/v3/ticker/24hr?symbol=HBARUSDT", REST_TICKER))
    assert event == TICKER._replace(source="rest")


def test_rest_ticker_of_every_symbol_is_a_list() -> None:
    other = dict(REST_TICKER, symbol="BTCUSDT")
    out = Parser().parse(rest("/api/v3/ticker/24hr", [REST_TICKER, other]))
    assert out == [TICKER._replace(source="rest"), TICKER._replace(symbol="BTCUSDT", source="rest")]


def test_rest_ticker_of_another_symbol_is_bad() -> None:
    event = bad(rest("/api/v3/ticker/24hr?symbol=HBARUSDT", dict(REST_TICKER, symbol="BTCUSDT")))
    assert event.reason == (
        'field \'symbol\' must be "HBARUSDT" (the symbol requested), got "BTCUSDT"'
    )


@pytest.mark.parametrize(
    ("url", "status", "stream"),
    [
        ("/api/v3/exchangeInfo", 200, "rest /api/v3/exchangeInfo"),
        ("https://api.binance.us/api/v3/time", 200, "rest /api/v3/time"),
        ("/api/v3/klines?symbol=NOPE&interval=1h", 400, "rest /api/v3/klines status 400"),
        ("/api/v3/depth?symbol=HBARUSDT", 429, "rest /api/v3/depth status 429"),
    ],
)
def test_other_endpoints_and_failed_requests_are_ignored(
    url: str, status: int, stream: str
) -> None:
    event = one(rest(url, {"code": -1121, "msg": "Invalid symbol."}, status=status))
    assert event == Ignored(stream, T)


@pytest.mark.parametrize(
    ("url", "body", "reason"),
    [
        ("/api/v3/klines?interval=1h", [], "cannot tell the symbol: no 'symbol' in the request"),
        (
            "/api/v3/klines?symbol=HBARUSDT",
            [],
            "cannot tell the interval: no 'interval' in the request",
        ),
        ("/api/v3/depth", book_data(), "cannot tell the symbol: no 'symbol' in the request"),
        (
            "/api/v3/klines?symbol=HBARUSDT&interval=1h",
            {"code": -1121, "msg": "Invalid symbol."},
            "body must be an array of kline rows, got an object",
        ),
        (
            "/api/v3/klines?symbol=HBARUSDT&interval=1h",
            [kline_row(0), kline_row(1)[:6]],
            "row 1 must be an array of at least 7 items, got",
        ),
        (
            "/api/v3/klines?symbol=HBARUSDT&interval=1h",
            [kline_row(0), [*kline_row(1)[:6], "1", *kline_row(1)[7:]]],
            'row 1 item 6 (close time) must be an integer, got "1"',
        ),
        (
            "/api/v3/klines?symbol=HBARUSDT&interval=1h",
            [kline_row(0, close=0.0602)],  # type: ignore[arg-type]
            "row 0 item 4 (close) must be a decimal string, got 0.0602",
        ),
        (
            "/api/v3/klines?symbol=HBARUSDT&interval=1h",
            [[True, *kline_row(0)[1:]]],
            "row 0 item 0 (open time) must be an integer, got true",
        ),
        (
            "/api/v3/depth?symbol=HBARUSDT",
            book_data(bids=[["1", 2]]),
            "field 'bids' level 0 quantity",
        ),
        ("/api/v3/depth?symbol=HBARUSDT", {"bids": [], "asks": []}, "missing field 'lastUpdateId'"),
        (
            "/api/v3/ticker/24hr?symbol=HBARUSDT",
            {"symbol": "HBARUSDT"},
            "missing field 'closeTime'",
        ),
        (
            "/api/v3/ticker/24hr",
            [REST_TICKER, dict(REST_TICKER, volume=5)],
            "item 1: field 'volume' must be a decimal string, got 5",
        ),
        ("/api/v3/depth?symbol=HBARUSDT", "{", "invalid JSON"),
    ],
)
def test_rest_bodies_that_break_the_layout(url: str, body: object, reason: str) -> None:
    event = bad(rest(url, body))
    assert event.reason.startswith(reason)
    assert event.stream == "rest " + url.split("?")[0]


# ------------------------------------------------------------------ malformed frames


GOOD_KLINE = combined("hbarusdt@kline_1m", kline_data())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "invalid JSON"),
        ("not json", "invalid JSON"),
        (GOOD_KLINE[:-7], "invalid JSON"),  # truncated
        ('{"stream":"hbarusdt@kline_1m","data":NaN}', "invalid JSON"),
        (b"\x89PNG\r\n\x1a\n\xff".decode("utf-8", "surrogateescape"), "invalid JSON"),
        (bytes(range(256)).decode("latin-1"), "invalid JSON"),
        ("[1,2,3]", "expected a JSON object, got an array"),
        ('"a string"', "expected a JSON object, got a string"),
        ("42", "expected a JSON object, got a number"),
        ("null", "expected a JSON object, got null"),
        ('{"stream":"hbarusdt@kline_1m"}', "missing field 'data'"),
        ('{"stream":5,"data":{}}', "field 'stream' must be a string, got 5"),
        (
            '{"stream":"nonsense","data":{}}',
            "field 'stream' is not <symbol>@<stream>, got \"nonsense\"",
        ),
        ('{"stream":"@kline_1m","data":{}}', "field 'stream' is not <symbol>@<stream>"),
        ('{"stream":"hbar-usdt@kline_1m","data":{}}', "field 'stream' is not <symbol>@<stream>"),
        (combined("hbarusdt@kline_1m", [1, 2]), "data must be a JSON object, got an array"),
        ('{"hello":"world"}', "a raw payload with no event type 'e' and no stream to tell"),
    ],
)
def test_frames_that_are_not_messages(text: str, reason: str) -> None:
    event = bad(ws(text))
    assert event.reason.startswith(reason)


KLINE_BREAKS: list[tuple[dict[str, Any], str]] = [
    ({"x": "true"}, "field 'data.k.x' must be a JSON boolean, got \"true\""),
    ({"x": 1}, "field 'data.k.x' must be a JSON boolean, got 1"),
    ({"x": None}, "field 'data.k.x' must be a JSON boolean, got null"),
    ({"t": True}, "field 'data.k.t' must be an integer, got true"),
    ({"t": "1700000040000"}, "field 'data.k.t' must be an integer, got \"1700000040000\""),
    ({"T": 1.7e12}, "field 'data.k.T' must be an integer, got 1700000000000.0"),
    ({"o": 0.0601}, "field 'data.k.o' must be a decimal string, got 0.0601"),
    ({"h": None}, "field 'data.k.h' must be a decimal string, got null"),
    ({"l": ["0.06"]}, "field 'data.k.l' must be a decimal string, got [\"0.06\"]"),
    ({"c": "nan"}, "field 'data.k.c' must be a decimal string, got \"nan\""),
    ({"c": "inf"}, "field 'data.k.c' must be a decimal string, got \"inf\""),
    ({"c": "1e5"}, "field 'data.k.c' must be a decimal string, got \"1e5\""),
    ({"c": "-1.5"}, "field 'data.k.c' must be a decimal string, got \"-1.5\""),
    ({"c": " 1.5"}, "field 'data.k.c' must be a decimal string, got \" 1.5\""),
    ({"c": "1_000.0"}, "field 'data.k.c' must be a decimal string, got \"1_000.0\""),
    ({"c": ""}, "field 'data.k.c' must be a decimal string, got \"\""),
    ({"c": "."}, "field 'data.k.c' must be a decimal string, got \".\""),
    ({"c": "1.2.3"}, "field 'data.k.c' must be a decimal string, got \"1.2.3\""),
    ({"c": "1,5"}, "field 'data.k.c' must be a decimal string, got \"1,5\""),
    ({"c": "١٢"}, "field 'data.k.c' must be a decimal string, got \"١٢\""),
    ({"v": "9" * 400}, "field 'data.k.v' must be a decimal string, got \"999"),
    (
        {"i": "1h"},
        "field 'data.k.i' must be \"1m\" (the interval of stream 'hbarusdt@kline_1m'), got \"1h\"",
    ),
]


@pytest.mark.parametrize(("change", "reason"), KLINE_BREAKS)
def test_kline_fields_that_break_the_layout(change: dict[str, Any], reason: str) -> None:
    event = bad(ws(combined("hbarusdt@kline_1m", kline_data(**change))))
    assert event.reason.startswith(reason)
    assert event.stream == "hbarusdt@kline_1m"


@pytest.mark.parametrize("field", ["t", "T", "i", "o", "h", "l", "c", "v", "x"])
def test_kline_missing_fields(field: str) -> None:
    data = kline_data()
    del data["k"][field]
    event = bad(ws(combined("hbarusdt@kline_1m", data)))
    assert event.reason == f"missing field 'data.k.{field}'"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"e": "kline", "s": "HBARUSDT"}, "missing field 'data.k'"),
        ({"e": "kline", "s": "HBARUSDT", "k": []}, "data.k must be a JSON object, got an array"),
        (
            dict(kline_data(), s="BTCUSDT"),
            "field 'data.s' must be \"HBARUSDT\" (the symbol of stream",
        ),
        (dict(kline_data(), s="hbarusdt"), "field 'data.s' must be \"HBARUSDT\""),
        (dict(kline_data(), e="24hrTicker"), 'field \'data.e\' must be "kline", got "24hrTicker"'),
    ],
)
def test_kline_frames_that_break_the_layout(data: dict[str, Any], reason: str) -> None:
    assert bad(ws(combined("hbarusdt@kline_1m", data))).reason.startswith(reason)


LEVEL_BREAKS: list[tuple[object, str]] = [
    ("12", 'must be an array of [price, quantity] levels, got "12"'),
    ({"0.06": "1"}, "must be an array of [price, quantity] levels"),
    (None, "must be an array of [price, quantity] levels, got null"),
    ([["0.06", "1.0", "2.0"]], 'level 0 must be [price, quantity], got ["0.06","1.0","2.0"]'),
    ([["0.06"]], 'level 0 must be [price, quantity], got ["0.06"]'),
    ([["0.06", "1.0"], "12"], 'level 1 must be [price, quantity], got "12"'),
    ([["0.06", "1.0"], {"1": "a", "2": "b"}], "level 1 must be [price, quantity]"),
    ([[0.06, "1.0"]], "level 0 price must be a decimal string, got 0.06"),
    ([["0.06", 1]], "level 0 quantity must be a decimal string, got 1"),
    ([["0.06", True]], "level 0 quantity must be a decimal string, got true"),
    ([["0.06", None]], "level 0 quantity must be a decimal string, got null"),
    ([[".", "1.0"]], 'level 0 price must be a decimal string, got "."'),
    ([["", "1.0"]], 'level 0 price must be a decimal string, got ""'),
    ([["0.0.6", "1.0"]], 'level 0 price must be a decimal string, got "0.0.6"'),
    ([["0..6", "1.0"]], 'level 0 price must be a decimal string, got "0..6"'),
    ([["nan", "1.0"]], 'level 0 price must be a decimal string, got "nan"'),
    ([["-0.06", "1.0"]], 'level 0 price must be a decimal string, got "-0.06"'),
    ([["6e-2", "1.0"]], 'level 0 price must be a decimal string, got "6e-2"'),
    ([["0.06,1.0", "1.0"]], 'level 0 price must be a decimal string, got "0.06,1.0"'),
    ([["0.06", "1.0 "]], 'level 0 quantity must be a decimal string, got "1.0 "'),
    ([["٠.٠٦", "1.0"]], 'level 0 price must be a decimal string, got "٠.٠٦"'),
    ([[["0.06"], "1.0"]], 'level 0 price must be a decimal string, got ["0.06"]'),
]


@pytest.mark.parametrize(("levels", "reason"), LEVEL_BREAKS)
def test_partial_depth_levels_that_break_the_layout(levels: object, reason: str) -> None:
    event = bad(ws(combined("hbarusdt@depth20@100ms", book_data(asks=levels))))
    assert event.reason.startswith("field 'data.asks' " + reason)


@pytest.mark.parametrize(("levels", "reason"), LEVEL_BREAKS)
def test_diff_levels_that_break_the_layout(levels: object, reason: str) -> None:
    event = bad(ws(combined("hbarusdt@depth@100ms", diff_data(b=levels))))
    assert event.reason.startswith("field 'data.b' " + reason)


@pytest.mark.parametrize(
    ("stream", "data", "reason"),
    [
        (
            "hbarusdt@depth20@100ms",
            book_data(lastUpdateId="5"),
            "field 'data.lastUpdateId' must be an integer",
        ),
        (
            "hbarusdt@depth20@100ms",
            book_data(lastUpdateId=False),
            "field 'data.lastUpdateId' must be an integer, got false",
        ),
        ("hbarusdt@depth20@100ms", {"bids": [], "asks": []}, "missing field 'data.lastUpdateId'"),
        ("hbarusdt@depth20@100ms", {"lastUpdateId": 1, "asks": []}, "missing field 'data.bids'"),
        ("hbarusdt@depth@100ms", diff_data(U=True), "field 'data.U' must be an integer, got true"),
        ("hbarusdt@depth@100ms", diff_data(u=1.5), "field 'data.u' must be an integer, got 1.5"),
        ("hbarusdt@depth@100ms", diff_data(E=None), "field 'data.E' must be an integer, got null"),
        ("hbarusdt@depth@100ms", diff_data(s="BTCUSDT"), "field 'data.s' must be \"HBARUSDT\""),
        ("hbarusdt@depth@100ms", diff_data(e="kline"), "field 'data.e' must be \"depthUpdate\""),
        ("hbarusdt@ticker", ticker_data(E=True), "field 'data.E' must be an integer, got true"),
        (
            "hbarusdt@ticker",
            ticker_data(b=0.06),
            "field 'data.b' must be a decimal string, got 0.06",
        ),
        (
            "hbarusdt@ticker",
            ticker_data(q="1e5"),
            "field 'data.q' must be a decimal string, got \"1e5\"",
        ),
        ("hbarusdt@ticker", ticker_data(s="BTCUSDT"), "field 'data.s' must be \"HBARUSDT\""),
        ("hbarusdt@ticker", {"e": "24hrTicker", "E": 1, "s": "HBARUSDT"}, "missing field 'data.b'"),
    ],
)
def test_book_and_ticker_frames_that_break_the_layout(
    stream: str, data: object, reason: str
) -> None:
    event = bad(ws(combined(stream, data)))
    assert event.reason.startswith(reason)
    assert event.stream == stream


def test_unknown_kind_is_bad() -> None:
    event = bad(RawMessage(T, "carrier-pigeon", 0, "coo"))
    assert event.reason == 'unknown message kind "carrier-pigeon"'


def test_bad_message_text_is_truncated_and_printable() -> None:
    long_garbage = "x" * (MAX_BAD_TEXT * 3)
    assert bad(ws(long_garbage)).text == "x" * MAX_BAD_TEXT
    undecodable = b"\xff\xfe{".decode("utf-8", "surrogateescape")
    text = bad(ws(undecodable)).text
    assert text == "\\udcff\\udcfe{"
    text.encode("utf-8")  # a lone surrogate would not encode


def test_bad_message_keeps_time_and_connection() -> None:
    event = bad(ws("nope", conn=4, t=123))
    assert (event.t, event.conn, event.stream) == (123, 4, "")


def test_each_bad_message_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    parser = Parser()
    with caplog.at_level(logging.DEBUG, logger="operators.parse"):
        parser.parse(ws("nope"))
        parser.parse(ws(combined("hbarusdt@kline_1m", kline_data(x="true"))))
        parser.parse(ws(combined("hbarusdt@kline_1m", kline_data())))
    records = [r for r in caplog.records if r.name == "operators.parse"]
    assert [r.levelno for r in records] == [logging.DEBUG, logging.DEBUG]
    assert "data.k.x" in records[1].getMessage()


def test_a_failure_of_the_parser_itself_becomes_a_bad_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(joined: str, count: int) -> list[float]:
        raise RuntimeError("bug")

    monkeypatch.setattr(parse_module, "_numbers", broken)
    parser = Parser()
    with caplog.at_level(logging.DEBUG, logger="operators.parse"):
        event = parser.parse(ws(GOOD_KLINE))
    assert isinstance(event, BadMessage)
    assert event.reason == "parser error RuntimeError: bug"
    assert event.stream == "hbarusdt@kline_1m"
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    # Not even something that is not a RawMessage raises.
    nothing = parser.parse(None)  # type: ignore[arg-type]
    assert isinstance(nothing, BadMessage)


# ------------------------------------------------------------------ the plain API


def test_parse_returns_one_event_bare_and_rest_rows_as_a_list() -> None:
    parser = Parser()
    assert parser.parse(ws(GOOD_KLINE)) == KLINE
    assert parser.parse_list(ws(GOOD_KLINE)) == [KLINE]
    rows = rest("/api/v3/klines?symbol=HBARUSDT&interval=1h", [kline_row(0), kline_row(3_600_000)])
    assert isinstance(parser.parse(rows), list)
    assert len(parser.parse_list(rows)) == 2
    events = list(parser.parse_all([ws(GOOD_KLINE), rows, ws("nope")]))
    assert [type(e).__name__ for e in events] == ["Kline", "Kline", "Kline", "BadMessage"]


# ------------------------------------------------------------------ the operator

RAWS: dict[str | float, Any] = {
    "o": opened("wss://stream.binance.us:9443/ws/hbarusdt@depth20@100ms"),
    "k": ws(GOOD_KLINE),
    "?": ws("\x00garbage"),
    "[": ws("[1,2]"),
    "x": ws(combined("hbarusdt@kline_1m", kline_data(x="true"))),
    "b": ws(orjson.dumps(book_data()).decode()),
    "r": rest("/api/v3/klines?symbol=HBARUSDT&interval=1h", [kline_row(0), kline_row(3_600_000)]),
    "e": rest("/api/v3/klines?symbol=HBARUSDT&interval=1h", []),
    "c": RawMessage(T, "close", 1, "bye", status=1000),
}


NAMES: dict[str | float, Any] = {
    "C": "Connected",
    "K": "Kline",
    "B": "BadMessage",
    "S": "BookSnapshot",
    "D": "Disconnected",
}


def names(events: reactivex.Observable[Event]) -> reactivex.Observable[str]:
    return events.pipe(ops.map(lambda e: type(e).__name__))


def test_operator_marbles_bad_input_never_ends_the_stream() -> None:
    with marbles_testing(timespan=1.0) as (start, cold, _hot, exp):
        source = cold("-o-k-?-[-x-b-r-e---c-|", RAWS, None)
        expected = exp("-C-K-B-B-B-S-(K,K)-D-|", NAMES, None)
        results = start(names(source.pipe(parse())))
    assert results == expected


def test_operator_marbles_values() -> None:
    with marbles_testing(timespan=1.0) as (start, cold, _hot, exp):
        source = cold("-k-r-----|", RAWS, None)
        rows: dict[str | float, Any] = {
            "k": KLINE,
            "a": rest_kline(0, True),
            "b": rest_kline(3_600_000, True),
        }
        expected = exp("-k-(a,b)-|", rows, None)
        results = start(source.pipe(parse()))
    assert results == expected


def test_operator_passes_source_errors_and_completion() -> None:
    with marbles_testing(timespan=1.0) as (start, cold, _hot, exp):
        source = cold("-k-?-#", RAWS, ValueError("socket reader died"))
        expected = exp("-K-B-#", NAMES, ValueError("socket reader died"))
        results = start(names(source.pipe(parse())))
    assert results == expected


def test_each_subscription_starts_fresh() -> None:
    subject: Subject[RawMessage] = Subject()
    events = subject.pipe(parse())
    first: list[Event] = []
    second: list[Event] = []
    events.subscribe(first.append)
    subject.on_next(RAWS["o"])  # only the first subscriber sees the socket open
    events.subscribe(second.append)
    subject.on_next(RAWS["b"])
    assert [type(e).__name__ for e in first] == ["Connected", "BookSnapshot"]
    assert [type(e).__name__ for e in second] == ["BadMessage"]


def test_an_error_of_a_subscriber_is_not_taken_for_bad_input() -> None:
    def explode(event: Event) -> None:
        raise KeyError("downstream bug")

    subject: Subject[RawMessage] = Subject()
    subject.pipe(parse()).subscribe(explode)
    with pytest.raises(KeyError, match="downstream bug"):
        subject.on_next(RAWS["k"])


def test_operator_over_an_iterable() -> None:
    out: list[Event] = []
    reactivex.from_iterable([RAWS["k"], RAWS["?"], RAWS["e"], RAWS["k"]]).pipe(parse()).subscribe(
        out.append
    )
    assert [type(e).__name__ for e in out] == ["Kline", "BadMessage", "Kline"]


# ------------------------------------------------------------------ properties

_LEVEL_DECIMAL = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")
_JSON_NUMBER = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")


def assert_well_formed(event: object) -> None:
    """An event as downstream code may rely on it."""
    assert type(event) in (
        Kline,
        BookSnapshot,
        DepthDiff,
        Ticker,
        ControlReply,
        Ignored,
        BadMessage,
        Connected,
        Disconnected,
    ), event
    if isinstance(event, Kline | BookSnapshot | DepthDiff | Ticker):
        symbol = event.symbol
        assert symbol.isascii()
        assert symbol.isalnum()
        assert symbol == symbol.upper()
    if isinstance(event, Kline):
        assert type(event.open_time) is int
        assert type(event.close_time) is int
        assert type(event.final) is bool
        for value in event[4:9]:
            assert type(value) is float
    if isinstance(event, Ticker):
        assert type(event.event_time) is int
        for value in event[2:10]:
            assert type(value) is float
    if isinstance(event, BookSnapshot | DepthDiff):
        for side in (event.bids, event.asks):
            assert type(side) is list
            for level in side:
                assert type(level) is list
                assert len(level) == 2
                for part in level:
                    assert type(part) is str
                    assert _LEVEL_DECIMAL.fullmatch(part), level
    if isinstance(event, BadMessage):
        assert event.reason
        assert not event.reason.startswith("parser error"), event
        assert len(event.text) <= MAX_BAD_TEXT * 10  # backslash escapes may lengthen it
        event.text.encode("utf-8")


TRICKY_DECIMALS = [
    *("0.06010000", "0", "10", "007", "1.", ".5", ".", "", "1.2.3", "0..6", "nan", "inf"),
    *("-1", "+1", "1e5", "1E5", " 1", "1 ", "1_0", "1,5", "١٢", "0x1", "9" * 400, "9" * 400 + ".0"),
]
decimalish = st.sampled_from(TRICKY_DECIMALS) | st.text(alphabet="0123456789.", max_size=6)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | decimalish,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    parser = Parser()
    for kind in ("ws", "rest", "open", "close", "other"):
        for url in ("/api/v3/depth?symbol=HBARUSDT", text):
            raw = RawMessage(T, kind, 1, text, url, 200)
            for event in parser.parse_list(raw):
                assert_well_formed(event)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    parser = Parser()
    for text in (data.decode("utf-8", "surrogateescape"), data.decode("latin-1")):
        for event in parser.parse_list(ws(text)):
            assert_well_formed(event)


STREAMS = [
    "hbarusdt@kline_1m",
    "hbarusdt@depth20@100ms",
    "hbarusdt@depth@100ms",
    "hbarusdt@ticker",
    "hbarusdt@aggTrade",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STREAMS), json_values)
def test_arbitrary_payloads_never_raise(stream: str, data: object) -> None:
    for text in (combined(stream, data), orjson.dumps(data).decode()):
        for event in Parser().parse_list(ws(text)):
            assert_well_formed(event)


VALID = {
    "hbarusdt@kline_1m": kline_data(),
    "hbarusdt@depth20@100ms": book_data(),
    "hbarusdt@depth@100ms": diff_data(),
    "hbarusdt@ticker": ticker_data(),
}


def paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every path to a value inside nested dicts and lists."""
    found: list[tuple[object, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += paths(child, (*prefix, i))
    return found


def replaced(value: Any, path: tuple[object, ...], new: object) -> Any:
    if not path:
        return new
    head, rest_of_path = path[0], path[1:]
    if isinstance(value, dict):
        return {k: replaced(v, rest_of_path, new) if k == head else v for k, v in value.items()}
    return [replaced(v, rest_of_path, new) if i == head else v for i, v in enumerate(value)]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.data())
def test_a_valid_frame_with_any_one_value_replaced(stream: str, data: st.DataObject) -> None:
    # Either the change is harmless (the event is well formed) or the slow path
    # can say what broke: the fast and the slow checks agree.
    payload = VALID[stream]
    path = data.draw(st.sampled_from(paths(payload)))
    new = data.draw(decimalish | json_values)
    changed = replaced(payload, path, new)
    event = Parser().parse(ws(combined(stream, changed)))
    assert_well_formed(event)
    if isinstance(event, Kline):
        k = changed["k"]
        assert list(event[4:9]) == [float(k[f]) for f in "ohlcv"]
        assert event.final is k["x"]
    elif isinstance(event, Ticker):
        assert list(event[2:10]) == [float(changed[f]) for f in "bBaAcQvq"]
    elif isinstance(event, BookSnapshot):
        assert (event.bids, event.asks) == (changed["bids"], changed["asks"])
    elif isinstance(event, DepthDiff):
        assert (event.bids, event.asks) == (changed["b"], changed["a"])


@pytest.mark.parametrize("stream", sorted(VALID))
@pytest.mark.parametrize("value", TRICKY_DECIMALS)
def test_every_string_field_with_a_tricky_decimal(stream: str, value: str) -> None:
    # The fast checks and the slow explanation agree on every field.
    payload = VALID[stream]
    for path in paths(payload):
        event = Parser().parse(ws(combined(stream, replaced(payload, path, value))))
        assert_well_formed(event)
