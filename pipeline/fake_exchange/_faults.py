"""Misbehaviour on demand: the failures a feed must survive, switched on per run.

`Faults` says what to do; the server counts what it did in `Stats.faults`, so a
test can assert that a fault really happened before asserting that the client
survived it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

__all__ = ["GARBAGE_KINDS", "Faults", "corrupt"]


@dataclass(frozen=True)
class Faults:
    """What the fake exchange does wrong. Frame counts are data frames per connection.

    WebSocket faults apply to every connection, or only to the first
    `faulty_connections` ones (so a client that reconnects finds a healthy server).
    """

    drop_after_frames: int | None = None
    """Drop the socket (TCP closed, no close frame) after this many data frames."""
    silent_after_frames: int | None = None
    """Go silent after this many data frames: no data, no pings, no pongs, socket open."""
    silent_for: float | None = None
    """How long a silence lasts, wall seconds (frames meanwhile are lost); None: for good."""
    garbage_every: int | None = None
    """Replace every Nth data frame by a corrupted copy (truncated, not JSON, wrong types)."""
    duplicate_every: int | None = None
    """After every Nth data frame, send a frame again: that one, or an earlier one (see lag)."""
    duplicate_lag: int = 0
    """Which frame is sent again: 0 the one just sent, 1 the one before it, ... (at most 63)."""
    reconnect_overlap: int = 0
    """Start each subscription by resending the last K frames the stream sent before."""
    faulty_connections: int | None = None
    """Only the first N connections misbehave; None: all of them."""
    rest_throttle: int = 0
    """Answer the next K REST requests 429 Too Many Requests (with Retry-After)."""
    rest_ban: int = 0
    """Answer the next K REST requests (after any throttled ones) 418, IP banned."""
    retry_after: int = 1
    """Retry-After seconds on the injected 429 and 418 answers."""

    def __post_init__(self) -> None:
        for name in (
            "drop_after_frames",
            "silent_after_frames",
            "garbage_every",
            "duplicate_every",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Faults.{name} must be at least 1 (or None), not {value!r}")
        for name in (
            "duplicate_lag",
            "reconnect_overlap",
            "rest_throttle",
            "rest_ban",
            "retry_after",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"Faults.{name} must not be negative, not {getattr(self, name)!r}")
        if self.silent_for is not None and self.silent_for <= 0:
            raise ValueError(
                f"Faults.silent_for must be positive (or None), not {self.silent_for!r}"
            )


GARBAGE_KINDS: Final = ("truncated", "not_json", "wrong_types")


def corrupt(frame: bytes, n: int) -> tuple[str, bytes]:
    """The `n`th garbage frame made from `frame`: `(kind, bytes)`, kinds taken in turn."""
    kind = GARBAGE_KINDS[n % len(GARBAGE_KINDS)]
    if kind == "truncated":
        return kind, frame[: max(1, len(frame) // 2)]
    if kind == "not_json":
        return kind, b"<html><body>502 Bad Gateway</body></html>"
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        # A recorded frame that was garbage already: send it cut short.
        return "truncated", frame[: max(1, len(frame) // 2)]
    target = obj.get("data", obj) if isinstance(obj, dict) else obj
    if isinstance(target, dict):
        _retype(target)
    return kind, orjson.dumps(obj)


def _retype(payload: dict[str, object]) -> None:
    """Give one field the wrong JSON type, the way a broken producer would."""
    k = payload.get("k")
    if isinstance(k, dict) and isinstance(k.get("x"), bool):
        k["x"] = "true" if k["x"] else "false"
        return
    for key, value in payload.items():
        if isinstance(value, int) and not isinstance(value, bool):
            payload[key] = str(value)
            return
    for key, value in payload.items():
        if isinstance(value, str):
            try:
                payload[key] = float(value)
            except ValueError:
                continue
            return
    for key, value in payload.items():
        if isinstance(value, list):
            payload[key] = {"levels": value}
            return
