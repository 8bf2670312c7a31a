"""Replay captures through the same pipeline a live run uses.

The loop is plain Python: for each message (captures merged by receive time) the
`ReplayScheduler` is advanced to its receive time, running any timer due by
then, and the message is pushed into the `Feed`. Time-based operators therefore
run on the capture's clock, and a replay yields the same frames every time,
whatever the machine or the `speed`.

`speed=None` replays as fast as possible. `speed=2.0` keeps the recorded pace
twice as fast: before each message the loop sleeps until
`(t - t_first) / speed` seconds have passed since the start (so delays do not
accumulate); a slow consumer simply falls behind, messages are never skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

from operators.events import RawMessage
from pipeline.capture import LineCounts, StrPath, merge_messages, open_capture, push_merged
from pipeline.clock import ReplayScheduler
from pipeline.config import FeedConfig
from pipeline.errors import CaptureError, UsageError
from pipeline.feed import Feed, LocalBookFactory
from pipeline.stats import RunStats

__all__ = ["replay"]


def replay(
    paths: StrPath | Sequence[StrPath],
    *,
    speed: float | None = None,
    config: FeedConfig | None = None,
    local_book: LocalBookFactory | None = None,
    feed: Feed | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> Feed:
    """Replay `paths` (one capture or several, merged by receive time); return the feed.

    The returned feed holds the final frames (`feed.frames(symbol)`,
    `feed.snapshot()`) and the run summary (`feed.stats`). Pass `feed` to replay
    into a feed built elsewhere (it should run on a `ReplayScheduler`, and its
    stats should carry `LineCounts`); `config` and `local_book` configure the
    feed built otherwise. `sleep` and `clock` (default `time.sleep` and
    `time.monotonic`) are injectable for tests of the paced mode.

    Raises:
        CaptureError: a capture cannot be opened, decompressed or recognised
            (checked for every file before the first message is replayed).
        UsageError: `speed` is not a positive finite number.
    """
    if speed is not None and not (isinstance(speed, int | float) and 0 < speed < math.inf):
        raise UsageError(f"speed must be a positive number (1 = recorded pace), not {speed!r}")
    if isinstance(paths, str) or not isinstance(paths, Sequence):
        paths = [paths]
    if not paths:
        raise CaptureError("no capture given")
    captures = [open_capture(p) for p in paths]
    if feed is None:
        feed = Feed(config, ReplayScheduler(), RunStats(lines=LineCounts()), local_book)
    lines = feed.stats.lines
    scheduler = feed.scheduler
    advance = scheduler.advance_to_ns if isinstance(scheduler, ReplayScheduler) else None
    push = feed.push
    try:
        if speed is None:
            # The reader calls advance and push itself: no generator, no loop here.
            push_merged(captures, push, lines, advance)
        else:
            messages = merge_messages(captures, lines)
            try:
                _paced(messages, push, advance, speed, sleep or time.sleep, clock or time.monotonic)
            finally:
                # Closing the reader settles its line counts even when interrupted.
                close = getattr(messages, "close", None)
                if close is not None:
                    close()
    finally:
        feed.complete()
    return feed


def _paced(
    messages: Iterator[RawMessage],
    push: Callable[[RawMessage], None],
    advance: Callable[[int], None] | None,
    speed: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> None:
    first: int | None = None
    start = clock()
    for msg in messages:
        if first is None:
            first = msg.t
        if speed != math.inf:
            delay = start + (msg.t - first) / 1e9 / speed - clock()
            if delay > 0:
                sleep(delay)
        if advance is not None:
            advance(msg.t)
        push(msg)
