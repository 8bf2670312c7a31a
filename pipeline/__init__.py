"""Sources and wiring: capture reader, replay, REST and WebSocket clients, the CLI."""

from __future__ import annotations

__all__: list[str] = []
