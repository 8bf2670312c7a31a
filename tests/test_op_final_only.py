"""Marble tests for `operators.final_only`: forming candles never reach a frame."""

from __future__ import annotations

from typing import Any

import reactivex
from reactivex.testing.marbles import marbles_testing

from operators import (
    BadMessage,
    BookSnapshot,
    Disconnected,
    Gap,
    Kline,
    Ticker,
    final_only,
)

T0 = 1_732_600_020_000
MINUTE = 60_000
SYMBOL = "HBARUSDT"


def kline(open_time: int, final: bool, t: int, close: float = 0.0712) -> Kline:
    return Kline(
        symbol=SYMBOL,
        interval="1m",
        open_time=open_time,
        close_time=open_time + MINUTE - 1,
        open=0.0710,
        high=0.0715,
        low=0.0708,
        close=close,
        volume=125_000.0,
        final=final,
        t=t,
        source="ws",
    )


FORMING_1 = kline(T0, False, t=(T0 + 20_000) * 1_000_000, close=0.0711)
FORMING_2 = kline(T0, False, t=(T0 + 40_000) * 1_000_000, close=0.0713)
FINAL = kline(T0, True, t=(T0 + MINUTE) * 1_000_000, close=0.0712)
NEXT_FORMING = kline(T0 + MINUTE, False, t=(T0 + 80_000) * 1_000_000)
BOOK = BookSnapshot(SYMBOL, 160_001, [["0.0712", "100"]], [["0.0713", "50"]], 1, "ws")
TICKER = Ticker(SYMBOL, T0 + 1, 0.0712, 100.0, 0.0713, 50.0, 0.0712, 10.0, 1e8, 7e6, 2, "ws")
OTHERS: dict[str | float, Any] = {
    "b": BOOK,
    "t": TICKER,
    "g": Gap(SYMBOL, "1m", T0 - 5 * MINUTE, T0, 3),
    "x": BadMessage("'x' is not a boolean: 1", '{"x":1}', 4, 1, "hbarusdt@kline_1m"),
    "D": Disconnected(1, 1006, "abnormal closure", 5),
}


def test_forming_klines_dropped_everything_else_passes() -> None:
    lookup: dict[str | float, Any] = {
        "n": FORMING_1,
        "m": FORMING_2,
        "f": FINAL,
        "o": NEXT_FORMING,
        **OTHERS,
    }
    drops: list[tuple[Kline, str]] = []
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-n-b-m-t-f-o-g-x-D-|", lookup, None)
        expected = exp("---b---t-f---g-x-D-|", lookup, None)
        results = start(source.pipe(final_only(on_drop=lambda k, r: drops.append((k, r)))))
    assert results == expected
    assert drops == [
        (FORMING_1, "non-final"),
        (FORMING_2, "non-final"),
        (NEXT_FORMING, "non-final"),
    ]


def test_without_on_drop() -> None:
    out: list[object] = []
    reactivex.of(FORMING_1, FINAL, BOOK).pipe(final_only()).subscribe(out.append)
    assert out == [FINAL, BOOK]


def test_rest_forming_candle_is_dropped_too() -> None:
    # A REST klines body ends with the forming candle; parse marks it non-final.
    closed = [kline(T0 + i * MINUTE, True, t=9)._replace(source="rest") for i in range(3)]
    forming = kline(T0 + 3 * MINUTE, False, t=9)._replace(source="rest")
    out: list[object] = []
    reactivex.from_iterable([*closed, forming]).pipe(final_only()).subscribe(out.append)
    assert out == closed


def test_error_and_completion_propagate() -> None:
    lookup: dict[str | float, Any] = {"n": FORMING_1, "f": FINAL}
    failure = RuntimeError("source failed")
    with marbles_testing() as (start, cold, _hot, exp):
        source = cold("-n-f-n-#", lookup, failure)
        expected = exp("---f---#", lookup, failure)
        results = start(source.pipe(final_only()))
    assert results == expected


def test_a_failing_on_drop_is_an_error() -> None:
    def on_drop(_k: Kline, _r: str) -> None:
        raise LookupError("no counter for this stream")

    errors: list[Exception] = []
    reactivex.of(FORMING_1).pipe(final_only(on_drop)).subscribe(on_error=errors.append)
    assert [type(e) for e in errors] == [LookupError]
