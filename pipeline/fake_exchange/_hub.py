"""Fan-out of streams to sockets: one producer per stream, however many subscribers.

A stream's payloads are made once (the first subscription starts its producer,
the last unsubscription stops it) and handed to every subscribed connection,
which queues them for its own writer: a slow client never slows the others.
The last frames each stream delivered to a client are kept, so a reconnecting
client can be made to receive them again (`Faults.reconnect_overlap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Final, Protocol

from pipeline.fake_exchange._market import Market
from pipeline.fake_exchange._stats import Stats
from pipeline.fake_exchange._streams import StreamSpec

__all__ = ["MAX_OVERLAP", "StreamHub", "Subscriber"]

log = logging.getLogger(__name__)

MAX_OVERLAP: Final = 64
"""Frames remembered per stream for `Faults.reconnect_overlap`."""


class Subscriber(Protocol):
    """A connection, as the hub sees it."""

    def deliver(self, stream: str, data: bytes) -> None:
        """Take one payload of `stream` (must not block)."""
        ...


class StreamHub:
    """Runs the producers of all subscribed streams and fans their payloads out."""

    def __init__(self, market: Market, stats: Stats) -> None:
        self._market = market
        self._stats = stats
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._producers: dict[str, asyncio.Task[None]] = {}
        self._recent: dict[str, deque[bytes]] = {}

    def remember(self, stream: str, data: bytes) -> None:
        """Note a payload a connection has just written (each payload once)."""
        recent = self._recent.get(stream)
        if recent is None:
            recent = self._recent[stream] = deque(maxlen=MAX_OVERLAP)
        elif recent and recent[-1] is data:
            return  # the same payload, written to another subscriber
        recent.append(data)

    def recent(self, stream: str, count: int) -> list[bytes]:
        """The last `count` payloads of `stream` written to any client."""
        frames = self._recent.get(stream)
        if not frames or count <= 0:
            return []
        return list(frames)[-count:]

    def subscribe(self, spec: StreamSpec, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.setdefault(spec.name, set())
        subscribers.add(subscriber)
        if spec.name in self._producers:
            return
        source = self._market.stream(spec)
        if source is None:
            self._stats.silent_subscriptions[spec.name] += 1
            return
        self._producers[spec.name] = asyncio.get_running_loop().create_task(
            self._produce(spec.name, source), name=f"fake-exchange {spec.name}"
        )

    def unsubscribe(self, stream: str, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(stream)
        if subscribers is None:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self._subscribers[stream]
            task = self._producers.pop(stream, None)
            if task is not None:
                task.cancel()

    async def close(self) -> None:
        """Stop every producer."""
        tasks = list(self._producers.values())
        self._producers.clear()
        self._subscribers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _produce(self, stream: str, source: AsyncIterator[bytes]) -> None:
        try:
            async for data in source:
                for subscriber in tuple(self._subscribers.get(stream, ())):
                    subscriber.deliver(stream, data)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A broken producer must not take the server down; its subscribers go quiet.
            log.exception("fake exchange: the producer of %s failed", stream)
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
