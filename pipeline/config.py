"""Pipeline configuration: how many rows each buffer keeps.

Only what the wiring needs lives here; the CLI turns `--buffer-size BUFFER=N`
options into a `FeedConfig`, and a library user builds one directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from pipeline.errors import UsageError
from sinks.schemas import DEFAULT_CAPACITY

__all__ = ["FOLDED_BUFFERS", "FeedConfig", "parse_buffer_sizes"]

FOLDED_BUFFERS: Final = tuple(DEFAULT_CAPACITY)
"""Buffers the feed folds for every symbol: klines_1m/1h/1d, order_book, ticker."""

_MAX_CAPACITY: Final = 10_000_000


def _default_capacities() -> Mapping[str, int]:
    return MappingProxyType(dict(DEFAULT_CAPACITY))


@dataclass(frozen=True)
class FeedConfig:
    """Settings of one feed (the same for a replay and a live run)."""

    capacities: Mapping[str, int] = field(default_factory=_default_capacities)
    """Rows kept per buffer; buffers not named keep `sinks.schemas.DEFAULT_CAPACITY`."""
    dedupe_window: int = 1024
    """Distinct kline keys remembered per buffer to drop exact repeats."""

    def __post_init__(self) -> None:
        merged = dict(DEFAULT_CAPACITY)
        for name, rows in self.capacities.items():
            merged[name] = _check_capacity(name, rows)
        object.__setattr__(self, "capacities", MappingProxyType(merged))
        if isinstance(self.dedupe_window, bool) or self.dedupe_window < 1:
            raise UsageError(
                f"dedupe window must be a positive integer, not {self.dedupe_window!r}"
            )

    def capacity(self, buffer: str) -> int:
        """Rows kept by `buffer`."""
        return self.capacities[buffer]


def _check_capacity(name: str, rows: object) -> int:
    if name not in DEFAULT_CAPACITY:
        raise UsageError(f"unknown buffer {name!r}: expected one of {', '.join(DEFAULT_CAPACITY)}")
    if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= _MAX_CAPACITY:
        raise UsageError(
            f"buffer size for {name} must be an integer from 1 to {_MAX_CAPACITY}, not {rows!r}"
        )
    return rows


def parse_buffer_sizes(options: Iterable[str]) -> dict[str, int]:
    """Parse `BUFFER=N` options (`klines_1m=120`) into a capacity mapping.

    Raises `UsageError` naming the offending option.
    """
    sizes: dict[str, int] = {}
    for option in options:
        name, sep, value = option.partition("=")
        name = name.strip()
        if not sep:
            raise UsageError(f"buffer size {option!r} must look like BUFFER=N, e.g. klines_1m=120")
        try:
            rows = int(value.strip())
        except ValueError:
            raise UsageError(
                f"buffer size {option!r}: {value.strip()!r} is not an integer"
            ) from None
        sizes[name] = _check_capacity(name, rows)
    return sizes
