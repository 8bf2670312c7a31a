"""A strategy that subscribes to frames instead of polling them.

It follows the 1-minute klines of HBARUSDT and prints a signal whenever the
close crosses its 20-candle simple moving average.  Run it on the bundled
sample capture (or any capture given as argument):

    python examples/sma_strategy.py [CAPTURE ...]

The same subscription works on a live feed: only the source differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from pipeline.capture import LineCounts
from pipeline.clock import ReplayScheduler
from pipeline.feed import Feed
from pipeline.replay import replay
from pipeline.stats import RunStats

SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample_hbarusdt.jsonl.gz"


class SmaCross:
    """Remembers which side of its moving average the close was on."""

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self.above: bool | None = None
        self.signals: list[tuple[str, str, float]] = []

    def on_frame(self, klines: pl.DataFrame) -> None:
        if klines.height < self.window:
            return
        last = klines.tail(self.window)
        closes = last["close"].to_list()
        sma = sum(closes) / len(closes)
        close = closes[-1]
        above = close > sma
        when = str(last["timestamp"][-1])
        signal = ""
        if self.above is not None and above != self.above:
            signal = "BUY" if above else "SELL"
            self.signals.append((when, signal, close))
        self.above = above
        print(f"{when}  close {close:.5f}  sma{self.window} {sma:.5f}  {signal}")


def main(argv: list[str]) -> int:
    captures = argv or [str(SAMPLE)]
    scheduler = ReplayScheduler()
    feed = Feed(scheduler=scheduler, stats=RunStats(lines=LineCounts()))
    feed.add_symbol("HBARUSDT")
    strategy = SmaCross()
    # Frames arrive conflated on the feed's scheduler: a slow strategy sees the
    # latest frame and never holds the feed up.
    feed.frames("HBARUSDT")["klines_1m"].frames(scheduler).subscribe(strategy.on_frame)
    replay(captures, feed=feed)
    print(f"{len(strategy.signals)} crossings", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
