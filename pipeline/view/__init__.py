"""The live terminal view of a `LiveRun`, and its one-line status for logs.

Three parts, so that what is shown is testable without a terminal:

- `collect(live, sampler, now)` reads a `LiveRun` (its feed's per-stream
  counters and frames, the REST and WebSocket counters) into a `ViewState`;
- `render(state)` and `status_line(state)` are pure: a state in, text out;
- `LiveView` runs beside the run on its event loop. It samples the counters
  every `sample` seconds and every `interval` seconds either redraws the view
  in place with ANSI escapes (`live` mode, for a terminal) or prints the status
  line (`lines` mode, for logs, pipes and CI).

Rates and ages cost the feed nothing: the feed already counts every stream's
messages, and the sampler notes when each count last moved. An age is so exact
to one sampling period (0.25 s); a rate is a count's change over the last
refresh window.

In `live` mode log records still reach the terminal: the view erases itself
before a record is written to its stream and redraws below it at the next
sample, so logs scroll above the view. The view never raises into the run: an
error while collecting, rendering or writing is logged once and switches the
view off.
"""

from pipeline.view._render import render, status_line
from pipeline.view._state import (
    Candle,
    Sampler,
    StreamRow,
    SymbolView,
    TickerView,
    Top,
    ViewMode,
    ViewState,
    collect,
)
from pipeline.view._terminal import LiveView, view_mode

__all__ = [
    "Candle",
    "LiveView",
    "Sampler",
    "StreamRow",
    "SymbolView",
    "TickerView",
    "Top",
    "ViewMode",
    "ViewState",
    "collect",
    "render",
    "status_line",
    "view_mode",
]
