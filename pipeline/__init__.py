"""Sources and wiring: capture reader, replay, REST and WebSocket clients, the CLI.

The names below are loaded on first use: `sinks` imports `pipeline.errors`, so
importing the whole wiring here eagerly would make the two packages import
each other half-initialised.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.capture import read_capture
    from pipeline.config import FeedConfig
    from pipeline.datamanager import DataManager
    from pipeline.errors import CaptureError, PipelineError, UsageError
    from pipeline.feed import Feed
    from pipeline.replay import replay
    from pipeline.rest import RestClient
    from pipeline.venues import Venue, get_venue
    from pipeline.ws import WsSource

__all__ = [
    "CaptureError",
    "DataManager",
    "Feed",
    "FeedConfig",
    "PipelineError",
    "RestClient",
    "UsageError",
    "Venue",
    "WsSource",
    "get_venue",
    "read_capture",
    "replay",
]

_HOME = {
    "CaptureError": "pipeline.errors",
    "PipelineError": "pipeline.errors",
    "UsageError": "pipeline.errors",
    "DataManager": "pipeline.datamanager",
    "Feed": "pipeline.feed",
    "FeedConfig": "pipeline.config",
    "RestClient": "pipeline.rest",
    "Venue": "pipeline.venues",
    "get_venue": "pipeline.venues",
    "WsSource": "pipeline.ws",
    "read_capture": "pipeline.capture",
    "replay": "pipeline.replay",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
