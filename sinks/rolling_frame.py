"""Fixed-size frames fed by events, read as Polars frames: one class per buffer kind.

`new_frame(buffer)` makes the right frame for a buffer name of `sinks.schemas`.
Buffers whose frame lives elsewhere (the local L2 book, `book`) plug in with
`register_frame` from their own module, so this one never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from sinks._klines import KlineFrame
from sinks._order_book import OrderBookFrame
from sinks._rolling import RollingFrame
from sinks._ticker import TickerFrame
from sinks.schemas import DEFAULT_CAPACITY, SCHEMAS

__all__ = [
    "FrameFactory",
    "KlineFrame",
    "OrderBookFrame",
    "RollingFrame",
    "TickerFrame",
    "new_frame",
    "register_frame",
]

FrameFactory = Callable[[int | None], RollingFrame[Any]]
"""Makes a buffer's frame; `None` asks for its default capacity."""


def _klines(buffer: str) -> FrameFactory:
    def make(capacity: int | None) -> RollingFrame[Any]:
        return KlineFrame(DEFAULT_CAPACITY[buffer] if capacity is None else capacity, buffer)

    return make


def _order_book(capacity: int | None) -> RollingFrame[Any]:
    return OrderBookFrame(DEFAULT_CAPACITY["order_book"] if capacity is None else capacity)


def _ticker(capacity: int | None) -> RollingFrame[Any]:
    return TickerFrame(DEFAULT_CAPACITY["ticker"] if capacity is None else capacity)


_FACTORIES: Final[dict[str, FrameFactory]] = {
    "klines_1m": _klines("klines_1m"),
    "klines_1h": _klines("klines_1h"),
    "klines_1d": _klines("klines_1d"),
    "order_book": _order_book,
    "ticker": _ticker,
}


def register_frame(buffer: str, factory: FrameFactory) -> None:
    """Make `new_frame(buffer)` use `factory` (the extension point for `book`).

    The buffer must have a schema in `sinks.schemas.SCHEMAS` and the factory's
    frames must carry it; registering the same buffer twice is an error unless
    it is the same factory (so a module imported twice is harmless).
    """
    if buffer not in SCHEMAS:
        raise ValueError(f"buffer {buffer!r} has no schema in sinks.schemas.SCHEMAS")
    existing = _FACTORIES.get(buffer)
    if existing is not None and existing is not factory:
        raise ValueError(f"buffer {buffer!r} already has a frame factory: {existing!r}")
    _FACTORIES[buffer] = factory


def new_frame(buffer: str, capacity: int | None = None) -> RollingFrame[Any]:
    """A fresh, empty frame for `buffer`, keeping `capacity` rows (default: `DEFAULT_CAPACITY`).

    Raises:
        ValueError: `buffer` is not a known buffer name, or its frame (e.g. `book`,
            the local L2 book) has not been registered with `register_frame`.
    """
    factory = _FACTORIES.get(buffer)
    if factory is None:
        if buffer in SCHEMAS:
            raise ValueError(
                f"buffer {buffer!r} has a schema but no frame yet: its module must call "
                "sinks.rolling_frame.register_frame"
            )
        known = ", ".join(sorted(set(SCHEMAS) | set(_FACTORIES)))
        raise ValueError(f"unknown buffer {buffer!r}; known buffers: {known}")
    frame = factory(capacity)
    if frame.schema != SCHEMAS[buffer]:
        raise TypeError(f"the frame made for {buffer!r} does not carry its schema")
    return frame
