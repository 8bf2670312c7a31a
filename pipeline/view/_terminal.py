"""`LiveView`: samples a run beside it and redraws the view in place or prints status lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final, TextIO

from pipeline.view._render import render, status_line
from pipeline.view._state import Sampler, ViewMode, collect, stream_counts

if TYPE_CHECKING:
    from pipeline.live import LiveRun

log = logging.getLogger("pipeline.view")

SAMPLE_PERIOD: Final = 0.25
"""Seconds between looks at the counters: the resolution of a stream's age."""
REFRESH: Final = 1.0
"""Seconds between redraws of the live view (and its rate window)."""
STATUS_INTERVAL: Final = 10.0
"""Seconds between status lines when the view cannot redraw in place."""
_FALLBACK_SIZE: Final = (100, 40)
"""Columns and lines when the terminal does not say."""


# ---------------------------------------------------------------------- the driver
def view_mode(option: bool | None, stream: TextIO | None = None) -> ViewMode | None:
    """The mode for `--view` (True), `--no-view` (False) or neither (None, by `stream`)."""
    if option is False:
        return None
    if option is True:
        return "live"
    if os.environ.get("TERM") == "dumb":  # no cursor movement there
        return "lines"
    stream = stream if stream is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        tty = False
    return "live" if tty else "lines"


class LiveView:
    """Shows a `LiveRun` on `stream` (default: `sys.stderr` at the time) while it runs.

    `async with LiveView(live, "live"):` around `live.run()`, or `start()` and
    `await stop()`. `stop()` leaves the last view on screen once the run got
    ready (erases it otherwise) and restores the cursor; nothing is written
    after it, so the run's summary follows cleanly.
    """

    def __init__(
        self,
        live: LiveRun,
        mode: ViewMode,
        *,
        stream: TextIO | None = None,
        interval: float | None = None,
        sample: float = SAMPLE_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live = live
        self.mode: ViewMode = mode
        self._out = stream
        self.interval = interval if interval is not None else (
            REFRESH if mode == "live" else STATUS_INTERVAL
        )  # fmt: skip
        self._sample = sample
        self._clock = clock
        self._started = clock()
        self.sampler = Sampler(self._started)
        self.enabled = True
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._lines: list[str] = []
        self._drawn = 0
        self._filter = _EraseBeforeLog(self)
        self._filtered: list[logging.Handler] = []
        self._final = False

    @property
    def stream(self) -> TextIO:
        return self._out if self._out is not None else sys.stderr

    async def __aenter__(self) -> LiveView:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start refreshing (needs a running event loop)."""
        if self.mode == "live":
            self._guard(self._begin_live)
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop refreshing and leave the terminal clean; never raises."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.mode == "live":
            if self.enabled and self.live.ready.is_set():
                self._final = True
                self._guard(self._refresh, self._clock())
            else:
                self._guard(self._erase)
            self._guard(self._end_live)

    # ------------------------------------------------------------ internals
    async def _loop(self) -> None:
        next_draw = self._started if self.mode == "live" else self._started + self.interval
        while self.enabled:
            now = self._clock()
            if now >= next_draw:
                next_draw = now + self.interval
                self._guard(self._refresh, now)
            else:
                self._guard(self._sample_only, now)
            await asyncio.sleep(self._sample)

    def _sample_only(self, now: float) -> None:
        feed = self.live.feed
        if feed is not None:
            counts = stream_counts(feed, self.live.symbols)
            self.sampler.sample({k: v[0] for k, v in counts.items()}, now)
        if self.mode == "live" and not self._drawn and self._lines:
            self._draw(self._lines)  # erased by a log record: back below it

    def _refresh(self, now: float) -> None:
        state = collect(self.live, self.sampler, now, self._started)
        if self._final:
            state = replace(state, phase="stopped", remaining=None)
        if self.mode == "live":
            self._lines = render(state)
            self._draw(self._lines)
        else:
            self._write(f"hbar-data: {status_line(state)}\n")

    def _guard(self, action: Callable[..., None], *args: float) -> None:
        if not self.enabled:
            return
        try:
            action(*args)
        except Exception as exc:
            self.enabled = False
            self.error = exc
            log.warning(
                "live view switched off after an error: %r",
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            if self.mode == "live":
                with contextlib.suppress(Exception):
                    self._end_live()

    def _write(self, text: str) -> None:
        stream = self.stream
        stream.write(text)
        stream.flush()

    def _begin_live(self) -> None:
        self._write("\x1b[?25l")  # the cursor would flicker across the view
        stream = self.stream
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is stream:
                handler.addFilter(self._filter)
                self._filtered.append(handler)

    def _end_live(self) -> None:
        for handler in self._filtered:
            handler.removeFilter(self._filter)
        self._filtered.clear()
        self._write("\x1b[?25h")

    def _draw(self, lines: list[str]) -> None:
        columns, rows = _terminal_size(self.stream)
        # A wrapped or scrolled-off line would break the next cursor-up count.
        shown = [_fit(line, columns - 1) for line in lines[: max(1, rows - 1)]]
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self._write(up + "".join(line + "\x1b[K\n" for line in shown) + "\x1b[J")
        self._drawn = len(shown)

    def _erase(self) -> None:
        if self._drawn:
            self._write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0


class _EraseBeforeLog(logging.Filter):
    """On the view's stream's log handlers: clear the view before a record is written."""

    def __init__(self, view: LiveView) -> None:
        super().__init__()
        self._view = view

    def filter(self, record: logging.LogRecord) -> bool:
        view = self._view
        if view.enabled and view._drawn:
            try:
                view._erase()
            except Exception:  # the record matters more than the view
                view.enabled = False
        return True


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_SIZE
    return size.columns or _FALLBACK_SIZE[0], size.lines or _FALLBACK_SIZE[1]


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(0, width - 3)] + "..."
