"""The fake exchange's protocol limits: Binance.US's by default, all adjustable for tests."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.fake_exchange._weights import Venue, default_weight_limit

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Rate limits, heartbeats and lifetimes. Durations are wall-clock seconds."""

    venue: Venue = "binanceus"
    """Whose REST weights to charge: `binanceus` or `binance` (spot)."""
    weight_per_minute: int | None = None
    """REQUEST_WEIGHT allowed per IP and window; None: the venue's (1200, Binance 6000)."""
    weight_window_s: float = 60.0
    """Length of a weight window (the header still says `1M`)."""
    ban_s: float = 120.0
    """First 418 ban; each further ban doubles, up to three days."""
    ws_messages_per_second: int = 5
    """Incoming messages (text, ping, pong) a socket may send in any second; more closes it."""
    ws_max_streams: int = 1024
    """Streams one socket may hold."""
    ws_ping_interval_s: float = 180.0
    """The server pings every this often."""
    ws_pong_timeout_s: float = 600.0
    """A socket that has not answered a ping for this long is closed."""
    ws_lifetime_s: float = 24 * 3600.0
    """Every socket is closed this long after it opened."""
    ws_queue_frames: int = 10_000
    """Frames waiting for a slow client before the server gives up on it."""

    def __post_init__(self) -> None:
        if self.ws_messages_per_second < 1 or self.ws_max_streams < 1:
            raise ValueError("WebSocket limits must be at least 1")
        for name in ("weight_window_s", "ban_s", "ws_ping_interval_s", "ws_pong_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, not {getattr(self, name)!r}")
        if not self.ws_lifetime_s > 0:
            raise ValueError(f"Limits.ws_lifetime_s must be positive, not {self.ws_lifetime_s!r}")

    @property
    def weight_limit(self) -> int:
        """The REQUEST_WEIGHT limit in force."""
        if self.weight_per_minute is not None:
            return self.weight_per_minute
        return default_weight_limit(self.venue)
