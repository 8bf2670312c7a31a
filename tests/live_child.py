"""A live run with a store, in a child process, on the parent's sped-up market clock.

    python tests/live_child.py REST_URL WS_URL STORE ORIGIN_MS T0 SPEED

The parent's fake-exchange `Clock` is `ORIGIN_MS + (monotonic() - T0) * 1000 * SPEED`;
the monotonic clock is shared by every process of the machine, so this child
stamps receive times on the same market clock. Prints `ready` once the preload is
in, then runs until killed (the test kills it with SIGKILL).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from pipeline.live import LiveRun
from sinks.store import ParquetStore


async def run(argv: list[str]) -> None:
    rest_url, ws_url, root, origin_ms, t0, speed = argv
    origin, start, factor = float(origin_ms), float(t0), float(speed)

    def clock_ns() -> int:
        return int((origin + (time.monotonic() - start) * 1000.0 * factor) * 1_000_000)

    live = LiveRun(
        ["HBARUSDT"],
        rest_url=rest_url,
        ws_url=ws_url,
        clock_ns=clock_ns,
        store=ParquetStore(Path(root)),
        flush_interval=0.2,
        ws_options={"backoff_base": 0.2},
    )
    running = asyncio.ensure_future(live.run())
    await live.ready.wait()
    print("ready", flush=True)
    await running


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1:]))
