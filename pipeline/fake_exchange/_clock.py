"""The fake exchange's market clock: real time by default, shifted or sped up on demand.

Tests cannot wait a minute for a 1m candle to close, so the market's time is
`start + (elapsed wall time) * speed`, and `advance()` jumps it forward. Every
market-time value the server shows (`serverTime`, event times, candle times)
comes from one `Clock`, so REST and WebSocket agree. Protocol timers (pings,
connection lifetime, rate-limit windows) stay in wall seconds: a real client
waits wall seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

__all__ = ["Clock"]


class Clock:
    """Market time in milliseconds since the epoch.

    `Clock()` follows the wall clock. `Clock(start_ms=t)` starts at `t` (e.g. a
    second before a candle closes); `speed=60` runs an hour of market time in a
    minute of wall time.
    """

    def __init__(
        self,
        start_ms: int | None = None,
        speed: float = 1.0,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be positive, not {speed!r}")
        self._speed = float(speed)
        self._monotonic = monotonic
        self._t0 = monotonic()
        self._origin_ms = float(start_ms) if start_ms is not None else wall() * 1000.0
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        """Wake every sleeper: the time it waits for may now be nearer."""
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def speed(self) -> float:
        """Market milliseconds per wall millisecond; setting it keeps the market time continuous."""
        return self._speed

    @speed.setter
    def speed(self, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be positive, not {speed!r}")
        now = self._monotonic()
        self._origin_ms += (now - self._t0) * 1000.0 * self._speed
        self._t0 = now
        self._speed = float(speed)
        self._notify()

    def now_ms(self) -> int:
        """The market time now, integer milliseconds since the epoch."""
        return int(self._origin_ms + (self._monotonic() - self._t0) * 1000.0 * self._speed)

    def advance(self, ms: int) -> None:
        """Jump the market time forward by `ms` (streams catch up at their next tick)."""
        if ms < 0:
            raise ValueError(f"the market clock never goes back: advance({ms})")
        self._origin_ms += ms
        self._notify()

    def wall_seconds(self, market_ms: float) -> float:
        """How many wall seconds `market_ms` of market time take at this speed."""
        return market_ms / 1000.0 / self._speed

    async def sleep_until(self, market_ms: int) -> None:
        """Sleep until the market time reaches `market_ms` (one turn of the loop if it has).

        A jump (`advance`) or a new `speed` wakes the sleeper early to re-measure.
        It always yields to the event loop at least once: a producer that has
        fallen behind a sped-up clock must still let the socket writers (and
        the server's shutdown) run, not loop on frames already due forever.
        """
        if self.wall_seconds(market_ms - self.now_ms()) <= 0:
            await asyncio.sleep(0)
            return
        while (delay := self.wall_seconds(market_ms - self.now_ms())) > 0:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await changed.wait()

    def __repr__(self) -> str:
        return f"Clock(now_ms={self.now_ms()}, speed={self.speed})"
