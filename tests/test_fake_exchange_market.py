"""The synthetic market on its own: determinism, candle arithmetic, book diffs, the clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.fake_exchange import Clock, SyntheticMarket, candle_open, parse_stream
from pipeline.fake_exchange._book import BookModel
from pipeline.fake_exchange._faults import Faults, corrupt
from pipeline.fake_exchange._symbols import decimal_text, profile_for
from pipeline.fake_exchange._tape import Tape, merge_aggs

MINUTE = 60_000
T0 = int(datetime(2024, 11, 26, 12, 0, tzinfo=UTC).timestamp() * 1000)
"""A fixed market time: tests are independent of the wall clock."""


def loose(payload: object) -> Any:
    """Payloads are JSON-shaped `object`s; the tests index into them freely."""
    return payload


def market_at(t_ms: int, seed: int = 0) -> SyntheticMarket:
    return SyntheticMarket(["HBARUSDT"], clock=Clock(start_ms=t_ms), seed=seed)


def test_same_seed_same_candles_other_seed_other_candles() -> None:
    a = loose(market_at(T0).klines("HBARUSDT", "1m", T0 - 10 * MINUTE, None, 5))
    b = loose(market_at(T0).klines("HBARUSDT", "1m", T0 - 10 * MINUTE, None, 5))
    c = loose(market_at(T0, seed=1).klines("HBARUSDT", "1m", T0 - 10 * MINUTE, None, 5))
    assert a == b
    assert a != c


def test_kline_rows_have_binance_layout() -> None:
    rows = loose(market_at(T0 + 30_000).klines("HBARUSDT", "1m", None, None, 3))
    assert [r[0] for r in rows] == [T0 - 2 * MINUTE, T0 - MINUTE, T0]
    for row in rows:
        assert len(row) == 12
        open_time, o, h, lo, c, v, close_time, q, n, tb, tq, ignore = row
        assert isinstance(open_time, int)
        assert isinstance(close_time, int)
        assert isinstance(n, int)
        assert close_time == open_time + MINUTE - 1
        for text in (o, h, lo, c, v, q, tb, tq):
            assert isinstance(text, str)
            assert len(text.split(".")[1]) == 8
        assert float(lo) <= min(float(o), float(c)) <= max(float(o), float(c)) <= float(h)
        assert ignore == "0"


def test_forming_candle_grows_into_the_final_one() -> None:
    market = market_at(T0 + 10_000)
    forming = loose(market.klines("HBARUSDT", "1m", T0, None, 1))[0]
    market.clock.advance(MINUTE)
    final = loose(market.klines("HBARUSDT", "1m", T0, None, 1))[0]
    assert forming[0] == final[0]
    assert forming[1] == final[1]
    assert float(forming[5]) < float(final[5])  # it kept trading


def test_longer_candles_aggregate_the_shorter_ones() -> None:
    market = market_at(T0 + 3 * 3600_000)
    hour = loose(market.klines("HBARUSDT", "1h", T0, None, 1))[0]
    minutes = loose(market.klines("HBARUSDT", "1m", T0, T0 + 3600_000 - 1, 1000))
    assert len(minutes) == 60
    assert hour[1] == minutes[0][1]
    assert hour[4] == minutes[-1][4]
    assert float(hour[2]) == max(float(m[2]) for m in minutes)
    assert float(hour[3]) == min(float(m[3]) for m in minutes)
    assert hour[8] == sum(int(m[8]) for m in minutes)


def test_tape_sums_do_not_depend_on_how_a_range_is_split() -> None:
    tape = Tape(profile_for("HBARUSDT"))
    s = T0 // 1000
    whole = tape.aggregate(s - 5000, s + 100_000)
    parts = [tape.aggregate(s - 5000, s + 7), tape.aggregate(s + 7, s + 100_000)]
    assert whole == merge_aggs(p for p in parts if p is not None)


def test_candles_before_the_listing_do_not_exist() -> None:
    market = market_at(T0)
    listed = profile_for("HBARUSDT").listed_ms
    rows = loose(market.klines("HBARUSDT", "1d", 0, None, 3))
    assert rows[0][0] == listed
    assert loose(market.klines("HBARUSDT", "1d", None, listed - 1, 3)) == []


def test_candle_open_follows_binance_alignment() -> None:
    t = int(datetime(2024, 11, 27, 15, 4, 5, tzinfo=UTC).timestamp() * 1000)  # a Wednesday
    assert candle_open("1w", t) == int(datetime(2024, 11, 25, tzinfo=UTC).timestamp() * 1000)
    assert candle_open("1M", t) == int(datetime(2024, 11, 1, tzinfo=UTC).timestamp() * 1000)
    assert candle_open("4h", t) == int(datetime(2024, 11, 27, 12, tzinfo=UTC).timestamp() * 1000)


def test_book_diffs_take_one_snapshot_to_the_next() -> None:
    book = BookModel(Tape(profile_for("HBARUSDT")))
    j0 = T0 // 100
    local_bids = dict(loose(book.snapshot(j0, 1000))["bids"])
    local_asks = dict(loose(book.snapshot(j0, 1000))["asks"])
    last = book.update_id(j0)
    for j in range(j0 + 1, j0 + 40):
        first_id, final_id, bids, asks = book.diff(j - 1, j)
        assert first_id == last + 1
        assert final_id > last
        last = final_id
        for side, changes in ((local_bids, bids), (local_asks, asks)):
            for price, qty in changes:
                if float(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
    snap = loose(book.snapshot(j0 + 39, 1000))
    assert snap["lastUpdateId"] == last
    assert sorted(local_bids.items(), key=lambda kv: -float(kv[0])) == [
        tuple(x) for x in snap["bids"]
    ]
    assert sorted(local_asks.items(), key=lambda kv: float(kv[0])) == [
        tuple(x) for x in snap["asks"]
    ]


def test_book_is_crossed_never_and_sorted_best_first() -> None:
    snap = loose(market_at(T0).depth("HBARUSDT", 50))
    bids = [float(p) for p, _ in snap["bids"]]
    asks = [float(p) for p, _ in snap["asks"]]
    assert len(bids) == len(asks) == 50
    assert bids == sorted(bids, reverse=True)
    assert asks == sorted(asks)
    assert bids[0] < asks[0]


def test_ticker_fields_are_consistent() -> None:
    t = loose(market_at(T0).ticker_24hr("HBARUSDT"))
    assert t["closeTime"] - t["openTime"] == 86_400_000
    assert float(t["lowPrice"]) <= float(t["lastPrice"]) <= float(t["highPrice"])
    assert float(t["bidPrice"]) < float(t["askPrice"])
    change = float(t["lastPrice"]) - float(t["openPrice"])
    assert float(t["priceChange"]) == pytest.approx(change)


def test_any_symbol_market_makes_up_profiles() -> None:
    market = SyntheticMarket(["HBARUSDT"], clock=Clock(start_ms=T0), any_symbol=True)
    assert market.has_symbol("FOOBARUSDT")
    assert not market.has_symbol("foo/bar")
    assert not SyntheticMarket(["HBARUSDT"]).has_symbol("FOOBARUSDT")
    entry = market.symbol_entry("FOOBARUSDT")
    assert entry["baseAsset"] == "FOOBAR"
    assert entry["quoteAsset"] == "USDT"


def test_stream_names_parse_like_binance() -> None:
    def spec(name: str) -> tuple[str, int, int]:
        parsed = parse_stream(name)
        assert parsed is not None
        return parsed.kind, parsed.levels, parsed.period_ms

    assert spec("hbarusdt@kline_1m") == ("kline", 0, 2000)
    assert spec("hbarusdt@kline_1s") == ("kline", 0, 1000)
    assert spec("hbarusdt@depth20@100ms") == ("depth", 20, 100)
    assert spec("hbarusdt@depth5") == ("depth", 5, 1000)
    assert spec("hbarusdt@depth") == ("diff", 0, 1000)
    assert spec("hbarusdt@depth@100ms") == ("diff", 0, 100)
    assert spec("hbarusdt@bookTicker")[0] == "bookTicker"
    assert spec("hbarusdt@trade")[0] == "silent"
    assert spec("!ticker@arr")[0] == "silent"
    for bad in ("hbarusdt", "hbarusdt@kline_7m", "hbarusdt@depth30", "not asdfads", "@ticker"):
        assert parse_stream(bad) is None


def test_decimal_text_is_exact() -> None:
    assert decimal_text(7123, 5) == "0.07123000"
    assert decimal_text(-15, 2) == "-0.15000000"
    assert decimal_text(123456789012, 10) == "12.34567890"


def test_garbage_comes_in_three_kinds() -> None:
    frame = orjson.dumps({"stream": "s", "data": {"e": "kline", "E": 1, "k": {"x": False}}})
    kinds = [corrupt(frame, n) for n in range(3)]
    assert [k for k, _ in kinds] == ["truncated", "not_json", "wrong_types"]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(kinds[0][1])
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(kinds[1][1])
    assert orjson.loads(kinds[2][1])["data"]["k"]["x"] == "false"


def test_faults_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="garbage_every"):
        Faults(garbage_every=0)
    with pytest.raises(ValueError, match="silent_for"):
        Faults(silent_for=-1)


@pytest.mark.asyncio
async def test_clock_starts_where_told_runs_at_speed_and_jumps() -> None:
    clock = Clock(start_ms=T0, speed=1000.0)
    assert T0 <= clock.now_ms() < T0 + 1000
    await clock.sleep_until(T0 + 2000)  # two market seconds: two wall milliseconds
    assert clock.now_ms() >= T0 + 2000
    clock.advance(MINUTE)
    assert clock.now_ms() >= T0 + MINUTE
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-1)
    assert clock.wall_seconds(1000) == pytest.approx(0.001)
    before = clock.now_ms()
    clock.speed = 1.0  # slowing down does not move the market time
    assert before <= clock.now_ms() < before + 1000
    assert clock.wall_seconds(1000) == pytest.approx(1.0)
    # A sleeper wakes when the clock jumps past its time.
    sleeper = asyncio.create_task(clock.sleep_until(clock.now_ms() + 3_600_000))
    await asyncio.sleep(0.01)
    clock.advance(3_600_000)
    await asyncio.wait_for(sleeper, 1.0)


@pytest.mark.asyncio
async def test_a_stream_behind_a_fast_clock_still_lets_the_loop_run() -> None:
    # Frames are due faster than they can be built: the producer must yield
    # anyway, or the server's writers (and its shutdown) would never run.
    market = SyntheticMarket(["HBARUSDT"], clock=Clock(speed=1_000_000.0))
    spec = parse_stream("hbarusdt@depth20@100ms")
    assert spec is not None
    stream = market.stream(spec)
    assert stream is not None
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    frames = 0
    async for _ in stream:
        frames += 1
        if frames == 20:
            break
    other.cancel()
    assert turns >= 10
