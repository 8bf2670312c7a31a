"""Memory check: the pipeline's resident memory after 100k and after 1M messages.

    python benchmarks/memory_check.py [--messages 1000000] [--sample-at 100000] [--seed 0]

`replay_throughput.py` runs this in a fresh interpreter, so nothing it did before
pollutes the figures. A million messages of capture would be a 1.3 GB file, so
the capture is streamed instead: `make_capture.py` runs as a child process
writing JSON Lines to a pipe, and this process reads the pipe with the capture
reader's own line parser and drives the feed exactly as `pipeline.replay` does
(advance the replay clock to the message's receive time, push the message).
`VmRSS` from /proc/self/status is sampled (after a `gc.collect()`) at
`--sample-at` messages, every further 100k and at the end. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = ["main", "vm_status"]

_HERE: Final = Path(__file__).resolve().parent
_ROOT: Final = _HERE.parent
_EVERY: Final = 100_000
MESSAGES_PER_SECOND: Final = 13.0
"""make_capture's rate for one symbol (depth20, ticker, kline_1m, REST), a little generous."""


def vm_status() -> dict[str, float]:
    """`VmRSS` and `VmHWM` (peak) of this process, in MB (1024 * 1024 bytes)."""
    values: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # reported in kB
    return values


def check(messages: int, sample_at: int, seed: int) -> dict[str, Any]:
    if str(_ROOT) not in sys.path:
        sys.path.insert(1, str(_ROOT))
    import logging

    from pipeline.capture import LineCounts, jsonl_message
    from pipeline.clock import ReplayScheduler
    from pipeline.feed import Feed
    from pipeline.stats import RunStats

    logging.getLogger("pipeline").setLevel(logging.ERROR)
    marks = sorted({sample_at, *range(_EVERY, messages, _EVERY), messages})
    seconds = math.ceil(messages / MESSAGES_PER_SECOND * 1.01) + 5
    command = [
        sys.executable,
        str(_HERE / "make_capture.py"),
        "/dev/stdout",
        "--seconds",
        str(seconds),
        "--seed",
        str(seed),
    ]
    generator = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert generator.stdout is not None
    rss: dict[str, float] = {}
    feed = Feed(None, ReplayScheduler(), RunStats(lines=LineCounts()))
    scheduler = feed.scheduler
    assert isinstance(scheduler, ReplayScheduler)
    advance = scheduler.advance_to_ns
    push = feed.push
    lines = feed.stats.lines
    assert lines is not None
    n = 0
    start = time.perf_counter()
    try:
        pending = iter(marks)
        mark = next(pending)
        for line in generator.stdout:
            msg = jsonl_message(line, lines, "make_capture")
            if msg is None:
                continue
            advance(msg.t)
            push(msg)
            n += 1
            if n == mark:
                gc.collect()
                rss[str(n)] = vm_status()["VmRSS"]
                mark = next(pending, 0)
                if not mark:
                    break
    finally:
        generator.stdout.close()
        generator.terminate()
        generator.wait()
    elapsed = time.perf_counter() - start
    feed.complete()
    if n < messages:
        raise RuntimeError(f"make_capture delivered only {n} of {messages} messages")
    status = vm_status()
    return {
        "messages": n,
        "sample_at": sample_at,
        "rss_mb": rss,
        "growth_mb": rss[str(messages)] - rss[str(sample_at)],
        "peak_rss_mb": status["VmHWM"],
        "seconds": elapsed,
        "bad": feed.stats.bad,
        "frames": {s: {b: len(f) for b, f in feed.frames(s).items()} for s in feed.symbols},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The pipeline's RSS after N messages.")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--sample-at", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.sample_at < args.messages:
        parser.error("need 0 < --sample-at < --messages")
    result = check(args.messages, args.sample_at, args.seed)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
