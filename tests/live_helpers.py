"""Shared helpers of the live-job tests: a `LiveRun` against the fake exchange, and the truth.

The synthetic market is deterministic, so the frames a run ends with can be
checked row for row against what the market itself says about the same times.
Receive times are stamped on the market's clock (`market_clock_ns`), so the REST
final-kline rule holds however fast the market runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import polars as pl

from operators import interval_ms
from pipeline.fake_exchange import FakeExchange, SyntheticMarket
from pipeline.live import LiveRun

SYMBOL = "HBARUSDT"
MINUTE_MS = 60_000
DEFAULT_WS_OPTIONS: dict[str, object] = {"backoff_base": 0.2}
"""Reconnects within a fifth of a second: a test's sped-up minute is short."""


def market_truth(
    market: SyntheticMarket, frame: pl.DataFrame, symbol: str = SYMBOL, interval: str = "1m"
) -> pl.DataFrame:
    """The market's final rows for the open times `frame` spans, as a klines frame."""
    opens = frame["timestamp"].dt.epoch("ms")
    first, last = opens.min(), opens.max()
    assert isinstance(first, int)
    assert isinstance(last, int)
    rows = market.klines(symbol, interval, first, last, (last - first) // interval_ms(interval) + 1)
    return pl.DataFrame(
        {
            "timestamp": [r[0] for r in rows],
            **{
                name: [float(str(r[i])) for r in rows]
                for i, name in enumerate(["open", "high", "low", "close", "volume"], 1)
            },
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))


def contiguous(frame: pl.DataFrame, step_ms: int = MINUTE_MS) -> bool:
    """True when the frame's open times follow each other `step_ms` apart, no hole."""
    steps = frame["timestamp"].dt.epoch("ms").diff().drop_nulls()
    return bool((steps == step_ms).all())


def market_clock_ns(market: SyntheticMarket) -> Callable[[], int]:
    """The market's clock in nanoseconds: the receive-time clock of a run against it."""
    clock = market.clock
    return lambda: clock.now_ms() * 1_000_000


def live_run(
    urls: tuple[str, str], market: SyntheticMarket, seconds: float | None, **options: Any
) -> LiveRun:
    """A `LiveRun` of `SYMBOL` at `urls` (`(rest_url, ws_url)`), ending after `seconds`.

    `seconds=None`: until `stop()`. `options` go to `LiveRun` (`ws_options`
    defaults to `DEFAULT_WS_OPTIONS`).
    """
    rest_url, ws_url = urls
    options.setdefault("ws_options", DEFAULT_WS_OPTIONS)
    return LiveRun(
        [SYMBOL],
        rest_url=rest_url,
        ws_url=ws_url,
        deadline=None if seconds is None else time.monotonic() + seconds,
        clock_ns=market_clock_ns(market),
        **options,
    )


async def run_for(
    urls: tuple[str, str], market: SyntheticMarket, seconds: float, **options: Any
) -> LiveRun:
    """Run `live_run(...)` to its end against an exchange already listening at `urls`."""
    live = live_run(urls, market, seconds, **options)
    await live.run()
    return live


async def run_against(
    exchange: FakeExchange, market: SyntheticMarket, seconds: float, **options: Any
) -> LiveRun:
    """Start `exchange`, run `seconds` against it, stop it (whatever happens)."""
    urls = await exchange.start()
    try:
        return await run_for(urls, market, seconds, **options)
    finally:
        await exchange.stop()
