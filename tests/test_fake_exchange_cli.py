"""The fake exchange as a program: `serve()` and the `hbar-data fake-exchange` options."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType

from pipeline.errors import UsageError
from pipeline.fake_exchange import (
    FakeExchange,
    add_fake_exchange_arguments,
    fake_exchange_settings,
    serve,
)


@pytest.mark.asyncio
async def test_serve_runs_until_cancelled() -> None:
    started: asyncio.Future[FakeExchange] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(0, ready=started.set_result))
    exchange = await asyncio.wait_for(started, 10)
    async with aiohttp.ClientSession() as session:
        async with session.get(exchange.rest_url + "/api/v3/ping") as r:
            assert r.status == 200
        async with session.ws_connect(exchange.ws_url + "/ws/hbarusdt@ticker") as ws:
            task.cancel()
            msg = await ws.receive(timeout=5.0)
            while msg.type == WSMsgType.TEXT:
                msg = await ws.receive(timeout=5.0)
            assert msg.type == WSMsgType.CLOSE
            assert ws.close_code == 1001
    with pytest.raises(asyncio.CancelledError):
        await task


def test_cli_options_become_faults_and_limits() -> None:
    parser = argparse.ArgumentParser()
    add_fake_exchange_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--garbage-every",
            "10",
            "--rest-429",
            "2",
            "--ws-lifetime",
            "5",
            "--symbol",
            "BTCUSDT",
        ]
    )
    faults, limits = fake_exchange_settings(args)
    assert faults.garbage_every == 10
    assert faults.rest_throttle == 2
    assert limits.ws_lifetime_s == 5
    assert limits.weight_limit == 1200
    assert args.symbol == ["BTCUSDT"]
    with pytest.raises(UsageError, match="garbage_every"):
        fake_exchange_settings(parser.parse_args(["--garbage-every", "0"]))
    with pytest.raises(UsageError, match="--port"):
        fake_exchange_settings(parser.parse_args(["--port", "70000"]))


PROGRAM = textwrap.dedent(
    """
    import argparse, sys
    from pipeline.fake_exchange import add_fake_exchange_arguments, run_fake_exchange
    parser = argparse.ArgumentParser()
    add_fake_exchange_arguments(parser)
    sys.exit(run_fake_exchange(parser.parse_args(sys.argv[1:])))
    """
)


@pytest.mark.asyncio
async def test_the_program_serves_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROGRAM, "--port", "0", "--rest-429", "1",
        stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line.startswith("fake exchange: REST http://127.0.0.1:"), line
        rest_url = line.split()[3]
        async with aiohttp.ClientSession() as session:
            for expected in (429, 200):
                async with session.get(rest_url + "/api/v3/ping") as r:
                    assert r.status == expected
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        rest = (await proc.stderr.read()).decode()
        assert "fake exchange stopped: 2 REST requests" in rest
        assert "rest_throttle=1" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
