"""`hbar-data fake-exchange`: the options and the run, for `pipeline.cli` to mount."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from pipeline.errors import UsageError
from pipeline.fake_exchange._faults import Faults
from pipeline.fake_exchange._limits import Limits
from pipeline.fake_exchange._server import FakeExchange, serve
from pipeline.fake_exchange._stats import Stats

__all__ = ["add_fake_exchange_arguments", "fake_exchange_settings", "run_fake_exchange"]


def add_fake_exchange_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `fake-exchange` options to `parser` (a subcommand's parser)."""
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--capture",
        action="append",
        metavar="FILE",
        help="replay this capture (JSON Lines, .gz/.zst, or cryptofeed); repeatable",
    )
    parser.add_argument(
        "--symbol",
        action="append",
        metavar="S",
        help="synthetic symbol to list (repeatable; default HBARUSDT)",
    )
    parser.add_argument("--any-symbol", action="store_true", help="every well-formed symbol exists")
    parser.add_argument("--seed", type=int, default=0, help="random walk of the synthetic market")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="market time runs this many times faster"
    )
    parser.add_argument("--venue", choices=("binanceus", "binance"), default="binanceus")
    limits = parser.add_argument_group("limits (Binance.US defaults)")
    limits.add_argument("--weight-limit", type=int, metavar="W", help="REST weight per minute")
    limits.add_argument("--ping-interval", type=float, default=180.0, metavar="S")
    limits.add_argument("--pong-timeout", type=float, default=600.0, metavar="S")
    limits.add_argument("--ws-lifetime", type=float, default=86400.0, metavar="S")
    faults = parser.add_argument_group("faults (off by default)")
    faults.add_argument("--drop-after", type=int, metavar="N", help="drop sockets after N frames")
    faults.add_argument("--silent-after", type=int, metavar="N", help="go silent after N frames")
    faults.add_argument("--silent-for", type=float, metavar="S", help="silence lasts S seconds")
    faults.add_argument("--garbage-every", type=int, metavar="N", help="corrupt every Nth frame")
    faults.add_argument(
        "--duplicate-every", type=int, metavar="N", help="send every Nth frame twice"
    )
    faults.add_argument(
        "--duplicate-lag", type=int, default=0, metavar="K", help="resend the frame K frames back"
    )
    faults.add_argument(
        "--reconnect-overlap",
        type=int,
        default=0,
        metavar="K",
        help="resend K frames on resubscribe",
    )
    faults.add_argument(
        "--faulty-connections", type=int, metavar="N", help="only the first N sockets misbehave"
    )
    faults.add_argument(
        "--rest-429", type=int, default=0, metavar="K", help="429 the next K requests"
    )
    faults.add_argument(
        "--rest-418", type=int, default=0, metavar="K", help="418 the next K requests"
    )
    faults.add_argument("--retry-after", type=int, default=1, metavar="S")


def fake_exchange_settings(args: argparse.Namespace) -> tuple[Faults, Limits]:
    """The `Faults` and `Limits` the parsed options ask for (`UsageError` if invalid)."""
    try:
        faults = Faults(
            drop_after_frames=args.drop_after,
            silent_after_frames=args.silent_after,
            silent_for=args.silent_for,
            garbage_every=args.garbage_every,
            duplicate_every=args.duplicate_every,
            duplicate_lag=args.duplicate_lag,
            reconnect_overlap=args.reconnect_overlap,
            faulty_connections=args.faulty_connections,
            rest_throttle=args.rest_429,
            rest_ban=args.rest_418,
            retry_after=args.retry_after,
        )
        limits = Limits(
            venue=args.venue,
            weight_per_minute=args.weight_limit,
            ws_ping_interval_s=args.ping_interval,
            ws_pong_timeout_s=args.pong_timeout,
            ws_lifetime_s=args.ws_lifetime,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, not {args.port}")
    if not args.speed > 0:
        raise UsageError(f"--speed must be positive, not {args.speed}")
    return faults, limits


def run_fake_exchange(args: argparse.Namespace) -> int:
    """Run `hbar-data fake-exchange` until SIGTERM (exit 0) or Ctrl-C (exit 130).

    Prints the URLs when listening and what it served when it stops, on standard
    error. Raises `UsageError` / `CaptureError` (exit status 2 in the CLI) for bad
    options or an unreadable capture, before the server starts.
    """
    faults, limits = fake_exchange_settings(args)
    running: list[FakeExchange] = []

    def announce(exchange: FakeExchange) -> None:
        running.append(exchange)
        print(
            f"fake exchange: REST {exchange.rest_url}  WebSocket {exchange.ws_url}", file=sys.stderr
        )

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(
                args.port,
                capture=args.capture,
                symbols=args.symbol or ("HBARUSDT",),
                faults=faults,
                host=args.host,
                limits=limits,
                speed=args.speed,
                seed=args.seed,
                any_symbol=args.any_symbol,
                ready=announce,
            )

    status = 0
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        status = 130
    for exchange in running:
        print(f"fake exchange stopped: {summary(exchange.stats)}", file=sys.stderr)
    return status


def summary(stats: Stats) -> str:
    """One line of what a fake exchange served."""
    parts = [
        f"{stats.rest_requests} REST requests",
        f"{stats.ws_connections} sockets",
        f"{stats.frames_sent} frames",
    ]
    if stats.faults:
        parts.append("faults " + ", ".join(f"{k}={v}" for k, v in sorted(stats.faults.items())))
    if stats.rate_limited:
        parts.append(
            "refused " + ", ".join(f"{k}={v}" for k, v in sorted(stats.rate_limited.items()))
        )
    return "; ".join(parts)
