"""Pacing for the live sources: retry backoff and an outgoing-message limiter."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["SlidingWindowLimiter", "backoff_delay"]

Sleep = Callable[[float], Awaitable[None]]

# 2**62 seconds is beyond any cap; stops the float from overflowing on long outages.
_MAX_EXPONENT = 62


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with full jitter: uniform in `[0, min(cap, base * 2**attempt)]`.

    Full jitter spreads the reconnects of many clients dropped at once (the
    exchange restarting) instead of bunching them at each power of two.
    `rand` returns a float in `[0, 1)`; tests pass a constant.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return rand() * ceiling


class SlidingWindowLimiter:
    """At most `max_events` acquisitions in any `window` seconds.

    A sliding log rather than a token bucket: a bucket of capacity C at rate r
    lets C + r events through in one window, while the exchange counts every
    message in any one second. Acquisitions are served in arrival order.
    """

    def __init__(
        self,
        max_events: int,
        window: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events!r}")
        self.max_events = max_events
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.waited = 0.0
        """Total seconds callers spent waiting for a slot."""

    async def acquire(self) -> None:
        """Wait until one more event fits in the window, and count it."""
        async with self._lock:
            times = self._times
            while True:
                now = self._clock()
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) < self.max_events:
                    times.append(now)
                    return
                # A millisecond more than needed: the oldest must have left the window.
                delay = times[0] + self.window - now + 0.001
                self.waited += delay
                await self._sleep(delay)
