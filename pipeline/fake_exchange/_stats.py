"""What the fake exchange did, counted so tests and benchmarks can assert on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Stats"]


@dataclass
class Stats:
    """Counters of one `FakeExchange`, updated as it runs (read them any time)."""

    rest_requests: int = 0
    rest_statuses: Counter[int] = field(default_factory=Counter)
    rest_paths: Counter[str] = field(default_factory=Counter)
    ws_connections: int = 0
    """Sockets accepted so far."""
    ws_open: int = 0
    """Sockets open now."""
    frames_sent: int = 0
    """Data frames written, garbage and duplicates included (not control replies or pings)."""
    frames_by_stream: Counter[str] = field(default_factory=Counter)
    control_replies: int = 0
    """Answers to SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, ... and error replies."""
    pings_sent: int = 0
    pongs_received: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    """Why sockets ended: `client`, `rate_limit`, `lifetime`, `pong_timeout`, `drop`,
    `slow_client`, `shutdown`."""
    faults: Counter[str] = field(default_factory=Counter)
    """Faults injected: `drop`, `silence`, `garbage:<kind>`, `duplicate`, `overlap`,
    `rest_throttle`, `rest_ban`."""
    rate_limited: Counter[int] = field(default_factory=Counter)
    """REST answers refused by weight accounting, by status (429, 418)."""
    silent_subscriptions: Counter[str] = field(default_factory=Counter)
    """Accepted streams nothing feeds (unknown symbol, unsupported kind)."""
