"""The `hbar-data` command line (also `python -m pipeline`).

    hbar-data [-v | --debug] replay [CAPTURE ...] [--speed FACTOR] [--dump DIR]
                                    [--buffer-size BUFFER=N ...]
    hbar-data fake-exchange [--port P] [--capture FILE] ...   (pipeline.fake_exchange)
    hbar-data run [--symbol S ...] [--venue V] [--rest-url URL] [--ws-url URL]
                  [--duration SECONDS] [--dump DIR] [--buffer-size BUFFER=N ...]
                  [--capture FILE [--capture-rotate-mb N]] [--store DIR [--store-books]]
                  [--book | --no-book] [--view | --no-view]
    hbar-data demo [--duration SECONDS] [--dump DIR] [--capture ...] [--store ...]
                   [--book | --no-book] [--view | --no-view]  (fake exchange + run)

`run` and `demo` show a live view on a terminal (`pipeline.view`), a status
line every 10 s elsewhere, nothing with `--no-view`.

Exit status: 0 when the run completed (bad messages included: they are counted
in the summary on standard error), 2 for what the user must fix (a capture that
cannot be opened or decompressed, a bad option), 130 when interrupted.
Each subcommand is one `Command` in `COMMANDS`; a module that implements one
replaces its entry.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pipeline.config import FeedConfig, parse_buffer_sizes
from pipeline.errors import PipelineError, UsageError
from sinks.schemas import DEFAULT_CAPACITY

if TYPE_CHECKING:
    import polars as pl

    from pipeline.feed import Feed
    from pipeline.live import LiveRun
    from pipeline.local_book import LocalBooks
    from sinks.capture_writer import CaptureWriter
    from sinks.store import ParquetStore

__all__ = ["COMMANDS", "Command", "build_parser", "frames_summary", "main", "sample_capture"]

log = logging.getLogger("pipeline.cli")

PROG: Final = "hbar-data"
SAMPLE: Final = "sample_hbarusdt.jsonl.gz"
EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


@dataclass(frozen=True)
class Command:
    """One subcommand: how to declare its options, and what it runs (returns the exit status)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    any_arguments: bool = False
    """Accept arguments it does not declare (for placeholders)."""
    lazy: bool = False
    """Declare its options only when the command line names it (costly imports)."""


def sample_capture() -> Path:
    """The bundled synthetic HBARUSDT capture (a few minutes of the live mix, with faults)."""
    return Path(str(resources.files("pipeline") / "data" / SAMPLE))


# ---------------------------------------------------------------------- replay
def _configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "captures",
        nargs="*",
        metavar="CAPTURE",
        type=Path,
        help="JSON Lines (.jsonl, .gz, .zst) or cryptofeed recordings, merged by receive "
        f"time; default: the bundled sample ({SAMPLE})",
    )
    parser.add_argument(
        "--speed",
        type=_speed,
        metavar="FACTOR",
        help="keep the recorded pace, FACTOR times as fast (default: as fast as possible)",
    )
    _add_dump(parser)
    _add_buffer_size(parser)


def _add_dump(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dump",
        type=Path,
        metavar="DIR",
        help="when the run ends, write each buffer's frame to DIR/<SYMBOL>/<buffer>.parquet",
    )


def _positive(what: str, must: str) -> Callable[[str], float]:
    """An argparse type: a positive finite number, or an error naming `what` it should be."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be {must}")
        return value

    return parse


_speed = _positive("a number", "a positive factor (1 = recorded pace)")
_duration = _positive("a number of seconds", "a positive number of seconds")
_megabyte_count = _positive("a number of megabytes", "a positive number of megabytes")


def _run_replay(args: argparse.Namespace) -> int:
    from pipeline.capture import LineCounts
    from pipeline.clock import ReplayScheduler
    from pipeline.feed import Feed
    from pipeline.local_book import LocalBooks
    from pipeline.replay import replay
    from pipeline.stats import RunStats

    config = FeedConfig(capacities=parse_buffer_sizes(args.buffer_size))
    captures = args.captures or [sample_capture()]
    if not args.captures:
        print(f"{PROG}: no capture given, replaying the bundled sample {captures[0]}",
              file=sys.stderr)  # fmt: skip
    # The book is always kept: it costs nothing without diff-depth frames, and it
    # is dumped only for the symbols whose diffs the capture holds.
    books = LocalBooks()
    feed = Feed(config, ReplayScheduler(), RunStats(lines=LineCounts()), local_book=books)
    status = EXIT_OK
    try:
        replay(captures, speed=args.speed, feed=feed)
    except KeyboardInterrupt:
        # Ctrl-C during a paced replay: say what was folded so far, dump it too.
        print(f"{PROG}: interrupted after {feed.stats.messages} messages", file=sys.stderr)
        status = EXIT_INTERRUPTED
    print(feed.stats.render(), file=sys.stderr)
    print(frames_summary(feed, books), file=sys.stderr)
    if books.render():
        print(books.render(), file=sys.stderr)
    if args.dump is not None:
        _dump(books.drop_unused(feed.snapshot()), args.dump)
    return status


def frames_summary(feed: Feed, books: LocalBooks | None = None) -> str:
    """One line per symbol: rows kept / capacity of each buffer.

    With `books`, a symbol's `book` is shown only if its book saw diffs.
    """
    lines = []
    for symbol in feed.symbols:
        sizes = ", ".join(
            f"{buffer} {len(frame)}/{frame.capacity}"
            for buffer, frame in feed.frames(symbol).items()
            if books is None or buffer != "book" or books.used(symbol)
        )
        lines.append(f"frames {symbol}: {sizes}")
    return "\n".join(lines) or "frames: no symbol seen"


def _dump(frames: Mapping[str, Mapping[str, pl.DataFrame]], directory: Path) -> None:
    from sinks.dump import dump_frames

    try:
        paths = dump_frames(frames, directory)
    except OSError as exc:
        raise UsageError(f"cannot write the dump to {str(directory)!r}: {exc}") from exc
    print(f"dumped {len(paths)} frames to {directory}", file=sys.stderr)


# ---------------------------------------------------------------------- not yet
# ---------------------------------------------------------------------- run, demo
# `--duration` counts from the start of the process; this module loads at startup.
_PROCESS_START: Final = time.monotonic()
DEMO_SPEED: Final = 20.0
"""Market seconds per wall second in `demo`, so candles close while it runs."""


def _configure_run(parser: argparse.ArgumentParser) -> None:
    from pipeline.venues import VENUES

    parser.add_argument(
        "--symbol",
        action="append",
        default=[],
        metavar="S",
        help="a symbol to follow, e.g. HBARUSDT (repeat for more; default HBARUSDT)",
    )
    parser.add_argument(
        "--venue", default="binanceus", choices=list(VENUES), help="default binanceus"
    )
    parser.add_argument("--rest-url", metavar="URL", help="REST base URL (default: the venue's)")
    parser.add_argument("--ws-url", metavar="URL", help="WebSocket base URL (default: the venue's)")
    _add_duration(parser, None)
    _add_persistence(parser)
    _add_dump(parser)
    _add_buffer_size(parser)
    _add_book(parser, default=False)
    _add_view(parser)


def _add_book(parser: argparse.ArgumentParser, *, default: bool) -> None:
    parser.add_argument(
        "--book",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="keep the local L2 book of each symbol (the `book` buffer): subscribe "
        "<s>@depth@100ms, fetch REST depth snapshots as needed "
        f"(default: {'on' if default else 'off'})",
    )


def _add_persistence(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--capture",
        type=Path,
        metavar="FILE",
        help="record every REST response and WebSocket message as a capture "
        "(.jsonl, .jsonl.gz, .jsonl.zst) for `replay`",
    )
    parser.add_argument(
        "--capture-rotate-mb",
        type=_megabytes,
        metavar="N",
        help="start a new capture file every N MB of JSON Lines (default: 1 GiB)",
    )
    parser.add_argument(
        "--store",
        type=Path,
        metavar="DIR",
        help="keep closed klines as Parquet under DIR: load them at start, fetch only "
        "what is missing, append new ones",
    )
    parser.add_argument(
        "--store-books",
        action="store_true",
        help="with --store, also keep the order-book snapshots and tickers",
    )


def _megabytes(text: str) -> int:
    size = int(_megabyte_count(text) * 1_000_000)
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of megabytes")
    return size


def _open_sinks(args: argparse.Namespace) -> tuple[CaptureWriter | None, ParquetStore | None]:
    """The capture and store the options ask for (the run closes them when it ends)."""
    from sinks.capture_writer import DEFAULT_ROTATE_BYTES, CaptureWriter
    from sinks.store import ParquetStore

    if args.capture_rotate_mb is not None and args.capture is None:
        raise UsageError("--capture-rotate-mb needs --capture FILE")
    if args.store_books and args.store is None:
        raise UsageError("--store-books needs --store DIR")
    capture = None
    if args.capture is not None:
        rotate = args.capture_rotate_mb or DEFAULT_ROTATE_BYTES
        capture = CaptureWriter(args.capture, rotate_bytes=rotate)
    try:
        store = None if args.store is None else ParquetStore(args.store)
    except BaseException:
        if capture is not None:
            capture.close()
        raise
    return capture, store


def _add_duration(parser: argparse.ArgumentParser, default: float | None) -> None:
    parser.add_argument(
        "--duration",
        type=_duration,
        default=default,
        metavar="SECONDS",
        help="stop this many seconds after the process started"
        + (f" (default {default:g})" if default is not None else " (default: until Ctrl-C)"),
    )


def _add_buffer_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--buffer-size",
        action="append",
        default=[],
        metavar="BUFFER=N",
        help="rows a buffer keeps, e.g. klines_1m=120 (buffers: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_CAPACITY.items())
        + ")",
    )


def _run_run(args: argparse.Namespace) -> int:
    from pipeline.live import LiveRun
    from pipeline.venues import get_venue

    config = FeedConfig(capacities=parse_buffer_sizes(args.buffer_size))
    venue = get_venue(args.venue)

    @contextlib.asynccontextmanager
    async def setup() -> AsyncIterator[LiveRun]:
        yield LiveRun(
            args.symbol or ["HBARUSDT"],
            venue=venue,
            rest_url=args.rest_url,
            ws_url=args.ws_url,
            config=config,
            **_shared_run_options(args),
        )

    return _live(setup, args.dump, args.view)


def _shared_run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `LiveRun` options `run` and `demo` share; opens the capture and the store."""
    capture, store = _open_sinks(args)
    return {
        "deadline": _deadline(args.duration),
        "capture": capture,
        "store": store,
        "store_books": args.store_books,
        "book": args.book,
    }


def _deadline(duration: float | None) -> float | None:
    return None if duration is None else _PROCESS_START + duration


def _add_view(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--view",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a live view on standard error, redrawn every second: streams, repairs, "
        "klines, book, ticker (default: on a terminal; elsewhere a status line every "
        "10 s); --no-view: logs only",
    )


def _live(
    setup: Callable[[], contextlib.AbstractAsyncContextManager[LiveRun]],
    dump: Path | None,
    view: bool | None = None,
) -> int:
    """Run the job `setup` yields until its deadline or a signal; summary to stderr, then dump.

    `view`: see `pipeline.view.view_mode` (None: a live view on a terminal, status lines
    elsewhere). The view ends before the summary is printed.
    """
    import asyncio
    import signal

    from pipeline.view import LiveView, view_mode

    mode = view_mode(view)

    signals: list[int] = []
    holder: list[LiveRun] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()
        async with setup() as live:
            holder.append(live)

            def on_signal(signum: int) -> None:
                signals.append(signum)
                live.stop()

            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, on_signal, signum)
            shown = None if mode is None else LiveView(live, mode)
            try:
                if shown is not None:
                    shown.start()
                await live.run()
            finally:
                if shown is not None:
                    await shown.stop()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)

    try:
        asyncio.run(go())
    finally:
        # What was folded before a failure is still worth the summary; a run that
        # failed before its preload (an unknown symbol) has nothing to say but the error.
        if holder and holder[0].ready.is_set():
            live = holder[0]
            print(live.summary(), file=sys.stderr)
            if live.feed is not None:
                print(frames_summary(live.feed), file=sys.stderr)
    live = holder[0]
    if dump is not None and live.feed is not None:
        _dump(live.feed.snapshot(), dump)
    return EXIT_INTERRUPTED if signal.SIGINT in signals else EXIT_OK


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    _add_duration(parser, 20.0)
    _add_persistence(parser)
    _add_dump(parser)
    _add_book(parser, default=True)
    _add_view(parser)


def _run_demo(args: argparse.Namespace) -> int:
    from pipeline.fake_exchange import Clock, FakeExchange, SyntheticMarket
    from pipeline.live import LiveRun

    @contextlib.asynccontextmanager
    async def setup() -> AsyncIterator[LiveRun]:
        market = SyntheticMarket(["HBARUSDT"], clock=Clock(speed=DEMO_SPEED))
        exchange = FakeExchange(market)
        rest_url, ws_url = await exchange.start()
        print(f"{PROG} demo: fake exchange at {rest_url} (market clock x{DEMO_SPEED:g}), "
              f"running for {args.duration:g} s", file=sys.stderr)  # fmt: skip
        try:
            yield LiveRun(
                ["HBARUSDT"],
                rest_url=rest_url,
                ws_url=ws_url,
                # Receive times on the market's clock, so REST finality holds at any speed.
                clock_ns=lambda: market.clock.now_ms() * 1_000_000,
                **_shared_run_options(args),
            )
        finally:
            await exchange.stop()

    return _live(setup, args.dump, args.view)


# ---------------------------------------------------------------------- fake-exchange
def _configure_fake_exchange(parser: argparse.ArgumentParser) -> None:
    from pipeline.fake_exchange import add_fake_exchange_arguments

    add_fake_exchange_arguments(parser)


def _run_fake_exchange(args: argparse.Namespace) -> int:
    from pipeline.fake_exchange import run_fake_exchange

    return run_fake_exchange(args)


COMMANDS: dict[str, Command] = {
    "run": Command(
        "the main job: preload, subscribe, poll, keep the frames live until stopped",
        _configure_run,
        _run_run,
    ),
    "replay": Command(
        "replay captures through the pipeline and print a summary", _configure_replay, _run_replay
    ),
    "fake-exchange": Command(
        "a local server speaking the Binance.US REST and WebSocket protocol",
        _configure_fake_exchange,
        _run_fake_exchange,
        lazy=True,
    ),
    "demo": Command(
        "the main job offline: a fake exchange in-process and run against it",
        _configure_demo,
        _run_demo,
    ),
}


# ---------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option raises `UsageError` instead of exiting (so `main` returns 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{command}: {message}" if command else message)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of `hbar-data` and its subcommands.

    A `lazy` command's options are declared only if `argv` names it (or `argv` is
    None), so `hbar-data replay` does not import the fake exchange's server.
    """
    parser = _Parser(prog=PROG, description="Binance market data in fixed-size Polars frames.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v for information, -vv for debug (every buffer update)",
    )
    parser.add_argument("--debug", action="store_true", help="same as -vv")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, command in COMMANDS.items():
        subparser = sub.add_parser(name, help=command.help, description=command.help)
        if not command.lazy or argv is None or name in argv:
            command.configure(subparser)
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (tests swap it)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and not (args.command and COMMANDS[args.command].any_arguments):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        _configure_logging(2 if args.debug else args.verbose)
        return COMMANDS[args.command].run(args)
    except PipelineError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
