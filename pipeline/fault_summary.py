"""The `faults:` line of a live run's summary: what went wrong, in words, and was survived.

Derived from counters the sources and the feed keep anyway, so it costs nothing
while the run goes on:

- reconnects (`WsStats.reconnects`), with their causes: silence timeouts, sockets
  dropped without a close frame, sockets the server closed, failed connects;
- switchovers: planned handovers to a new socket before the venue's 24 h limit;
- REST retries, with their causes: 429, 418, 5xx, timeouts, connection errors;
- garbage: messages the feed rejected as bad;
- duplicates: order-book and ticker frames whose id was not newer than the last
  one kept (`stale` when older). Kline repeats are not counted: a quiet market
  repeats an unchanged forming candle, which is no fault;
- gaps repaired, backfills after reconnects, and requests or store writes that
  failed for good.

A run that saw none of these says `faults: none`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from pipeline.stats import RunStats, stream_label

if TYPE_CHECKING:
    from pipeline.live import LiveCounters
    from pipeline.rest import RestStats
    from pipeline.ws import WsStats

__all__ = ["DUPLICATE_CHECKED", "faults_line"]

DUPLICATE_CHECKED: Final = ("@depth20@100ms", "@ticker")
"""Streams whose ids only grow on a healthy connection: a repeat there is a fault's trace."""


def faults_line(
    symbols: Sequence[str],
    counters: LiveCounters,
    feed: RunStats | None = None,
    rest: RestStats | None = None,
    ws: WsStats | None = None,
) -> str:
    """`faults: ...` naming every fault the counters show, or `faults: none`."""
    parts: list[str] = []
    if ws is not None:
        causes = _counts(
            (ws.silence_timeouts, "silence timeout", None),
            (ws.dropped, "dropped socket", None),
            (ws.server_closes, "closed by the server", "closed by the server"),
            (ws.connect_failures, "failed connect", None),
        )
        if ws.reconnects or causes:
            parts.append(_with_causes(_count(ws.reconnects, "reconnect"), causes))
        if ws.renewals:
            parts.append(_count(ws.renewals, "switchover"))
    if rest is not None:
        causes = _counts(
            (rest.rate_limited, "rate limited 429", "rate limited 429"),
            (rest.banned, "banned 418", "banned 418"),
            (rest.server_errors, "server error 5xx", "server errors 5xx"),
            (rest.timeouts, "timeout", None),
            (rest.connection_errors, "connection error", None),
        )
        if rest.retries or causes:
            parts.append(_with_causes(_count(rest.retries, "retry", "retries"), causes))
    if feed is not None:
        if feed.bad:
            parts.append(f"{_count(feed.bad, 'garbage frame')} rejected")
        duplicate = stale = 0
        for symbol in symbols:
            for suffix in DUPLICATE_CHECKED:
                counts = feed.streams.get(stream_label(f"{symbol.lower()}{suffix}"))
                if counts is not None:
                    duplicate += counts.duplicate
                    stale += counts.stale
        if duplicate or stale:
            dropped = f"{_count(duplicate + stale, 'duplicate')} dropped"
            parts.append(f"{dropped} ({stale} stale)" if stale else dropped)
    c = counters
    parts.extend(
        _counts(
            (c.gaps_repaired, "gap repaired", "gaps repaired"),
            (c.reconnect_backfills, "backfill after a reconnect", "backfills after reconnects"),
            (c.failed_requests, "failed request", None),
            (c.store_failures, "failed store write", None),
        )
    )
    return "faults: " + (", ".join(parts) if parts else "none")


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _counts(*items: tuple[int, str, str | None]) -> list[str]:
    """`_count` of each nonzero item."""
    return [_count(n, singular, plural) for n, singular, plural in items if n]


def _with_causes(total: str, causes: list[str]) -> str:
    return f"{total} ({', '.join(causes)})" if causes else total
