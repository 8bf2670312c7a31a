"""Replay throughput: this pipeline against an orjson-only floor and the original pandas design.

    python benchmarks/replay_throughput.py [--messages 300000] [--rounds 3] [--json PATH]

About two to three minutes on two idle cores (`--help` for every knob). It
generates a capture in the live HBAR/USDT mix with `make_capture` (per second:
10 depth20 snapshots, 1 ticker, about 2 kline_1m updates, plus its REST polls
and one instance of each fault) and then measures, in interleaved rounds
(A, B, C, A, B, C, ...; medians reported, since the machines are shared and
noisy):

- (a) the floor: an orjson-only loop over the same capture file (`FLOOR` says
  exactly what it does);
- (b) this pipeline end to end: `pipeline.replay.replay(path)` (capture reader,
  parse, dedupe / final-only / monotonic, rolling frames);
- (c) a port of the original DataManager's pandas design
  (`original_datamanager.py`) over a prefix of the capture, since it costs
  1.5 to 2 ms a message.

The pipeline also replays that prefix alone before the rounds (the warm-up),
and its frames are compared row for row with the original's buffers after the
first round: a check that both designs did the same work. After the rounds:
the time to materialise a full 1000-row frame (`get()` right after a write, so
never from the cache), and, in a fresh interpreter (`memory_check.py`), the
pipeline's resident memory after 100k and after 1M messages. Nothing asserts on
speed: figures are printed next to their targets (and written with `--json`).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
import pandas as pd
import polars as pl
from _bench import ROOT, environment, positive_int, project_importable
from make_capture import FAULTS, make_capture
from original_datamanager import SIZES, OriginalDataManager

if TYPE_CHECKING:
    from operators.events import BookSnapshot, Ticker
    from pipeline.feed import Feed

__all__ = ["FLOOR", "Options", "main", "run"]

_HERE: Final = Path(__file__).resolve().parent

FLOOR: Final = (
    "for each line of the capture file (opened in binary mode with the pipeline reader's "
    "64 KiB buffer, iterated line by line): "
    "orjson.loads(line), then orjson.loads(record['data']) when the record has a non-empty "
    "'data' (a JSONDecodeError there is caught and counted); both results are discarded: "
    "no field access beyond 'data', no type checks, no events, no frames"
)
"""Exactly what the floor does; printed with the results."""

MESSAGES_PER_SECOND: Final = 13.0
"""make_capture's rate for one symbol (depth20, ticker, kline_1m, REST), a little generous."""

TARGET_VS_FLOOR: Final = 0.5
TARGET_VS_ORIGINAL: Final = 150.0
MEMORY_LIMIT_MB: Final = 10.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class Options:
    """What to measure; the command line's flags."""

    messages: int = 300_000
    rounds: int = 3
    original_messages: int = 3_000
    mem_messages: int = 1_000_000
    mem_sample_at: int = 100_000
    repeats: int = 200
    seed: int = 0
    capture: Path | None = None
    """Measure this capture instead of generating one (the prefix check still runs)."""
    workdir: Path | None = None


@dataclass
class Timing:
    """One contender's rounds: messages per pass, wall-clock and CPU seconds of each pass.

    Wall-clock time is the headline. CPU time is kept too: it leaves out time
    spent waiting for a core, though not the slowdown of sharing one (on these
    machines the two stay close, and both swing with the neighbours' load).
    """

    name: str
    messages: int = 0
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.seconds.append(wall)
        self.cpu_seconds.append(cpu)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_rate(self) -> float:
        return self.messages / self.median_seconds

    @property
    def median_cpu_rate(self) -> float:
        return self.messages / statistics.median(self.cpu_seconds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "seconds": self.seconds,
            "median_seconds": self.median_seconds,
            "msgs_per_s": self.median_rate,
            "us_per_msg": 1e6 * self.median_seconds / self.messages,
            "rounds_msgs_per_s": [self.messages / s for s in self.seconds],
            "cpu_seconds": self.cpu_seconds,
            "cpu_msgs_per_s": self.median_cpu_rate,
            "cpu_us_per_msg": 1e6 / self.median_cpu_rate,
        }


# ---------------------------------------------------------------- the contenders
def floor_pass(path: Path) -> tuple[int, int]:
    """The floor (see `FLOOR`): the lines read, and how many `data` failed to parse."""
    from pipeline.capture import PLAIN_READ_BUFFER

    loads = orjson.loads
    error = orjson.JSONDecodeError
    n = bad = 0
    # The reader's own buffer size: reading with a smaller one costs ~0.9 µs a line.
    with open(path, "rb", buffering=PLAIN_READ_BUFFER) as f:
        for line in f:
            data = loads(line).get("data")
            if data:
                try:
                    loads(data)
                except error:
                    bad += 1
            n += 1
    return n, bad


def pipeline_pass(path: Path) -> Feed:
    """This pipeline end to end, as `hbar-data replay` runs it (without the dump)."""
    from pipeline.replay import replay

    return replay(path)


def original_pass(lines: Sequence[bytes]) -> OriginalDataManager:
    """The original design over `lines`, held in memory (reading one costs ~1 µs of ~1.5 ms)."""
    manager = OriginalDataManager()
    manager.run(lines)
    return manager


def _timed(fn: Callable[[], _T]) -> tuple[float, float, _T]:
    """Wall-clock and CPU seconds of `fn()`, and its result."""
    # Collect first, so one contender's garbage is not collected on the next one's clock.
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, time.process_time() - cpu, result


# ---------------------------------------------------------------- the capture
def generate(path: Path, messages: int, seed: int) -> dict[str, Any]:
    """A capture of at least `messages` lines in the live HBAR/USDT mix, with every fault."""
    seconds = math.ceil(messages / MESSAGES_PER_SECOND * 1.01) + 5
    elapsed, _, info = _timed(lambda: make_capture(path, seconds, faults=FAULTS, seed=seed))
    return {
        "path": str(path),
        "seconds_of_traffic": seconds,
        "lines": info.lines,
        "per_kind": info.per_kind,
        "faults": sorted(FAULTS),
        "bytes": path.stat().st_size,
        "generated_in_s": elapsed,
    }


def stream_mix(path: Path) -> dict[str, int]:
    """Lines per stream, by a cheap substring scan (untimed)."""
    mix = dict.fromkeys(("depth20", "ticker", "kline_1m", "other"), 0)
    with open(path, "rb") as f:
        for line in f:
            if b"@depth20" in line:
                mix["depth20"] += 1
            elif b"@ticker" in line:
                mix["ticker"] += 1
            elif b"@kline_1m" in line:
                mix["kline_1m"] += 1
            else:
                mix["other"] += 1
    return mix


def read_prefix(path: Path, n: int) -> list[bytes]:
    with open(path, "rb") as f:
        return list(itertools.islice(f, n))


# ---------------------------------------------------------------- prefix cross-check
def _ms(values: pl.Series | pd.Series) -> list[int]:
    if isinstance(values, pl.Series):
        return values.dt.epoch("ms").to_list()
    return [int(x) for x in values.dt.as_unit("ms").astype("int64")]


def compare_frames(feed: Feed, original: OriginalDataManager) -> dict[str, Any]:
    """Do the pipeline's frames hold what the original's buffers hold, row for row?

    order_book: the original's `tail(1000)` may cut its oldest snapshot short,
    the pipeline keeps whole snapshots only, so the pipeline's rows must equal
    the original's last rows. ticker: equal. klines_1m: the pipeline also folds
    the REST preload and backfills, which the port does not replay, so every row
    of the original must be a row of the pipeline (same open time and OHLCV).
    """
    symbols = feed.symbols
    if not symbols:
        return {"agree": False, "why": "the pipeline saw no symbol"}
    frames = {name: frame.get() for name, frame in feed.frames(symbols[0]).items()}
    result: dict[str, Any] = {"symbol": symbols[0]}
    book = frames["order_book"]
    ob = original.get_buffer("order_book").tail(book.height)
    result["order_book"] = {
        "rows": [book.height, len(original.order_book)],
        "equal": book.height > 0
        and _ms(book["timestamp"]) == _ms(ob["timestamp"])
        and book["update_id"].to_list() == ob["update_id"].tolist()
        and book["side"].cast(pl.String).to_list() == ob["side"].tolist()
        and book["level"].to_list() == ob["level"].tolist()
        and book["price"].to_list() == ob["price"].tolist()
        and book["quantity"].to_list() == ob["quantity"].tolist(),
    }
    ticker, ot = frames["ticker"], original.get_buffer("ticker")
    value_columns = [c for c in ticker.columns if c not in ("timestamp", "event_id")]
    result["ticker"] = {
        "rows": [ticker.height, len(ot)],
        "equal": _ms(ticker["timestamp"]) == _ms(ot["timestamp"])
        and ticker["event_id"].to_list() == ot["event_id"].tolist()
        and all(ticker[c].to_list() == ot[c].tolist() for c in value_columns),
    }
    klines, ok = frames["klines_1m"], original.get_buffer("klines_1m")
    ours = dict(zip(_ms(klines["timestamp"]), klines.drop("timestamp").rows(), strict=True))
    theirs = dict(
        zip(_ms(ok["timestamp"]), ok.drop(columns="timestamp").itertuples(index=False), strict=True)
    )
    result["klines_1m"] = {
        "rows": [klines.height, len(ok)],
        "equal": all(ours.get(t) == tuple(row) for t, row in theirs.items()),
    }
    result["agree"] = all(result[b]["equal"] for b in ("order_book", "ticker", "klines_1m"))
    return result


# ---------------------------------------------------------------- materialisation
def _events_for_frames(path: Path, books: int, tickers: int) -> tuple[list[Any], list[Any]]:
    """BookSnapshot and Ticker events from the capture's first depth20 and ticker frames."""
    from operators.events import BookSnapshot, Ticker

    snapshots: list[BookSnapshot] = []
    ticks: list[Ticker] = []
    with open(path, "rb") as f:
        for line in f:
            if len(snapshots) >= books and len(ticks) >= tickers:
                break
            record = orjson.loads(line)
            if record.get("kind") != "ws":
                continue
            try:
                message = orjson.loads(record["data"])
            except orjson.JSONDecodeError:
                continue
            stream: str = message.get("stream", "")
            data = message.get("data")
            symbol = stream.partition("@")[0].upper()
            if stream.endswith("@depth20@100ms") and len(snapshots) < books:
                snapshots.append(
                    BookSnapshot(
                        symbol, data["lastUpdateId"], data["bids"], data["asks"], record["t"], "ws"
                    )
                )
            elif stream.endswith("@ticker") and len(ticks) < tickers:
                b, bq, a, aq, c, cq, v, qv = (
                    float(data[k]) for k in ("b", "B", "a", "A", "c", "Q", "v", "q")
                )
                t = record["t"]
                ticks.append(Ticker(symbol, data["E"], b, bq, a, aq, c, cq, v, qv, t, "ws"))
    return snapshots, ticks


def materialisation(path: Path, repeats: int) -> dict[str, dict[str, Any]]:
    """Median time of `get()` on a full frame right after a write (so never the cached frame).

    The frames are the sinks the pipeline uses (`sinks.rolling_frame.new_frame`),
    at their default capacity of 1000 rows, filled with events built from the
    capture; the sinks append whatever they are given (ordering is checked
    upstream), so the events are simply cycled.
    """
    from sinks.rolling_frame import new_frame

    snapshots, ticks = _events_for_frames(path, books=60, tickers=1_100)
    results: dict[str, dict[str, Any]] = {}
    for buffer, events in (("order_book", snapshots), ("ticker", ticks)):
        if not events:
            results[buffer] = {"rows": 0, "why": "no such events in the capture"}
            continue
        frame = new_frame(buffer)
        for event in events:
            frame.write(event)
        cycle = itertools.cycle(events)
        write_us: list[float] = []
        get_us: list[float] = []
        rows = 0
        gc.collect()
        for _ in range(repeats):
            event = next(cycle)
            start = time.perf_counter()
            frame.write(event)
            mid = time.perf_counter()
            rows = frame.get().height
            end = time.perf_counter()
            write_us.append(1e6 * (mid - start))
            get_us.append(1e6 * (end - mid))
        results[buffer] = {
            "rows": rows,
            "repeats": repeats,
            "get_us_median": statistics.median(get_us),
            "get_us_min": min(get_us),
            "write_us_median": statistics.median(write_us),
        }
    return results


# ---------------------------------------------------------------- memory
def memory_check(messages: int, sample_at: int, seed: int) -> dict[str, Any]:
    """Run `memory_check.py` in a fresh interpreter (earlier rounds must not pollute its RSS)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        str(_HERE / "memory_check.py"),
        "--messages",
        str(messages),
        "--sample-at",
        str(sample_at),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(command, capture_output=True, env=env, check=False, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(
            f"memory_check.py exited with {done.returncode}: {done.stderr.decode()[-2000:]}"
        )
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the run


def run(options: Options, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement of the module doc; returns the results (the `--json` document)."""
    project_importable()
    # A capture with faults logs a few bad-message warnings; they are counted in the stats.
    logging.getLogger("pipeline").setLevel(logging.ERROR)
    started = time.perf_counter()
    phases: dict[str, float] = {}
    versions = {"polars": pl.__version__, "pandas": pd.__version__, "orjson": orjson.__version__}
    results: dict[str, Any] = {"environment": environment(**versions), "floor": FLOOR}
    results["phases_s"] = phases

    def phase(name: str, text: str) -> None:
        phases[name] = time.perf_counter() - started
        progress(f"[{phases[name]:6.1f} s] {text}")

    with tempfile.TemporaryDirectory(prefix="hbar-bench-", dir=options.workdir) as tmp:
        if options.capture is None:
            path = Path(tmp) / "capture.jsonl"
            phase("generate", f"generating a capture of at least {options.messages:,} messages")
            results["capture"] = generate(path, options.messages, options.seed)
        else:
            path = options.capture
            results["capture"] = {"path": str(path), "bytes": path.stat().st_size}
        results["capture"]["mix"] = stream_mix(path)
        results["capture"].setdefault("lines", sum(results["capture"]["mix"].values()))

        prefix = read_prefix(path, options.original_messages)
        prefix_path = Path(tmp) / "prefix.jsonl"
        prefix_path.write_bytes(b"".join(prefix))
        # Also the warm-up: every module the pipeline needs is imported by now.
        prefix_feed = pipeline_pass(prefix_path)

        floor = Timing("floor")
        pipe = Timing("pipeline")
        orig = Timing("original", messages=len(prefix))
        feed: Feed | None = None
        floor_bad = 0
        for r in range(options.rounds):
            phase(f"round {r + 1}", f"round {r + 1}/{options.rounds}: floor, pipeline, original")
            wall, cpu, (floor.messages, floor_bad) = _timed(lambda: floor_pass(path))
            floor.add(wall, cpu)
            wall, cpu, last = _timed(lambda: pipeline_pass(path))
            pipe.add(wall, cpu)
            pipe.messages = last.stats.messages
            feed = last
            wall, cpu, manager = _timed(lambda: original_pass(prefix))
            orig.add(wall, cpu)
            if r == 0:
                results["prefix_check"] = compare_frames(prefix_feed, manager)
                results["original_buffers"] = {
                    name: len(manager.get_buffer(name)) for name in SIZES
                } | {"errors": manager.errors}
        assert feed is not None
        results["floor_bad_data"] = floor_bad
        results["timings"] = {t.name: t.as_dict() for t in (floor, pipe, orig)}
        results["pipeline_run"] = _pipeline_summary(feed)
        paired = [
            (pipe.messages / b) / (floor.messages / a)
            for a, b in zip(floor.seconds, pipe.seconds, strict=True)
        ]
        results["ratios"] = {
            "pipeline_vs_floor": pipe.median_rate / floor.median_rate,
            "pipeline_vs_floor_paired_median": statistics.median(paired),
            "pipeline_vs_original": pipe.median_rate / orig.median_rate,
            "cpu_pipeline_vs_floor": pipe.median_cpu_rate / floor.median_cpu_rate,
            "cpu_pipeline_vs_original": pipe.median_cpu_rate / orig.median_cpu_rate,
            "targets": {"vs_floor": TARGET_VS_FLOOR, "vs_original": TARGET_VS_ORIGINAL},
        }

        phase("materialise", f"materialising 1000-row frames ({options.repeats} repeats)")
        results["materialisation"] = materialisation(path, options.repeats)
    results["peak_rss_mb"] = {"benchmark_process": peak_rss_mb()}
    if options.mem_messages > 0:
        phase("memory", f"memory check over {options.mem_messages:,} messages (a fresh process)")
        memory = memory_check(options.mem_messages, options.mem_sample_at, options.seed)
        memory["limit_mb"] = MEMORY_LIMIT_MB
        results["memory"] = memory
        results["peak_rss_mb"]["pipeline_process"] = memory["peak_rss_mb"]
    results["environment"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_seconds"] = time.perf_counter() - started
    phase("done", "done")
    return results


def _pipeline_summary(feed: Feed) -> dict[str, Any]:
    stats = feed.stats
    return {
        "messages": stats.messages,
        "bad": stats.bad,
        "accounting_problems": stats.problems(),
        "streams": {
            label: dict(
                zip(
                    (
                        "msgs",
                        "read",
                        "kept",
                        "duplicate",
                        "stale",
                        "non_final",
                        "unchanged",
                        "ignored",
                        "bad",
                    ),
                    counts.row(),
                    strict=True,
                )
            )
            for label, counts in sorted(stats.streams.items())
        },
        "frames": {
            symbol: {name: len(frame) for name, frame in feed.frames(symbol).items()}
            for symbol in feed.symbols
        },
    }


# ---------------------------------------------------------------- the report
def _verdict(ok: bool) -> str:
    return "meets the target" if ok else "BELOW the target"


def render(results: dict[str, Any]) -> str:
    """The results as a readable report."""
    env = results["environment"]
    capture = results["capture"]
    timings = results["timings"]
    ratios = results["ratios"]
    out = [
        "hbar-data replay throughput",
        f"  Python {env['python']} ({env['machine']}, {env['cpus']} CPUs), polars "
        f"{env['polars']}, pandas {env['pandas']}, orjson {env['orjson']}",
        f"  load average (1/5/15 min) before {env['load_average']}, "
        f"after {env.get('load_average_after')}",
        f"  capture: {capture.get('lines', sum(capture['mix'].values())):,} messages, "
        f"{capture['bytes'] / 1e6:.0f} MB, mix {capture['mix']}"
        + (
            f", generated in {capture['generated_in_s']:.1f} s"
            if "generated_in_s" in capture
            else ""
        ),
        "",
        f"  {'contender':<44} {'messages':>9} {'median s':>9} {'msgs/s':>9} {'µs/msg':>8}"
        f" {'CPU µs/msg':>10}   msgs/s per round",
    ]
    labels = {
        "floor": "(a) floor: orjson.loads(line) + loads(data)",
        "pipeline": "(b) pipeline: pipeline.replay.replay(path)",
        "original": "(c) original pandas design (prefix)",
    }
    for name, label in labels.items():
        t = timings[name]
        rounds = ", ".join(f"{r:,.0f}" for r in t["rounds_msgs_per_s"])
        out.append(
            f"  {label:<44} {t['messages']:>9,} {t['median_seconds']:>9.2f} "
            f"{t['msgs_per_s']:>9,.0f} {t['us_per_msg']:>8.1f} {t['cpu_us_per_msg']:>10.1f}"
            f"   {rounds}"
        )
    vs_floor, vs_original = ratios["pipeline_vs_floor"], ratios["pipeline_vs_original"]
    out += [
        "",
        f"  pipeline / floor    = {vs_floor:.2f} (paired per round: "
        f"{ratios['pipeline_vs_floor_paired_median']:.2f}; on CPU time: "
        f"{ratios['cpu_pipeline_vs_floor']:.2f}); target >= {TARGET_VS_FLOOR}: "
        f"{_verdict(vs_floor >= TARGET_VS_FLOOR)}",
        f"  pipeline / original = {vs_original:,.0f}x (on CPU time: "
        f"{ratios['cpu_pipeline_vs_original']:,.0f}x); target >= {TARGET_VS_ORIGINAL:.0f}x: "
        f"{_verdict(vs_original >= TARGET_VS_ORIGINAL)}",
        f"  floor = {results['floor']}",
    ]
    check = results["prefix_check"]
    out.append(
        f"  prefix check ({timings['original']['messages']:,} messages): pipeline frames "
        + ("agree with" if check["agree"] else "DIFFER from")
        + " the original's buffers: "
        + "; ".join(
            f"{b} {check[b]['rows'][0]} vs {check[b]['rows'][1]} rows, "
            + ("match" if check[b]["equal"] else "MISMATCH")
            for b in ("order_book", "ticker", "klines_1m")
            if b in check
        )
    )
    run_summary = results["pipeline_run"]
    problems = run_summary["accounting_problems"]
    out.append(
        f"  pipeline run: {run_summary['messages']:,} messages, {run_summary['bad']} bad, "
        + ("all accounted for" if not problems else f"ACCOUNTING PROBLEMS: {problems}")
    )
    out.append("")
    for buffer, m in results["materialisation"].items():
        if "get_us_median" in m:
            out.append(
                f"  materialise {buffer:<10} ({m['rows']} rows): get() after a write "
                f"{m['get_us_median']:.0f} µs median (min {m['get_us_min']:.0f}, "
                f"{m['repeats']} repeats); the write itself {m['write_us_median']:.1f} µs"
            )
    memory = results.get("memory")
    if memory:
        growth = memory["growth_mb"]
        samples = ", ".join(f"{int(n):,}: {mb:.1f}" for n, mb in memory["rss_mb"].items())
        out.append(
            f"  memory (fresh process, {memory['messages']:,} messages): RSS MB at {samples}; "
            f"growth {memory['sample_at']:,} -> {memory['messages']:,} = {growth:+.1f} MB, "
            f"limit {MEMORY_LIMIT_MB:.0f} MB: "
            + ("within the limit" if growth <= MEMORY_LIMIT_MB else "OVER the limit")
        )
    peaks = results["peak_rss_mb"]
    out.append(
        "  peak RSS: "
        + ", ".join(f"{name.replace('_', ' ')} {mb:.0f} MB" for name, mb in peaks.items())
    )
    out.append(f"  wall time {results['wall_seconds']:.0f} s")
    return "\n".join(out)


def _not_plain_jsonl(path: Path) -> str:
    """Why `path` cannot be measured (the floor reads plain JSON Lines), or ''."""
    try:
        with open(path, "rb") as f:
            first = f.readline()
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    try:
        record = orjson.loads(first)
    except orjson.JSONDecodeError:
        return "is not an uncompressed JSON Lines capture (the floor reads lines as JSON)"
    if not isinstance(record, dict) or "kind" not in record:
        return "is not a JSON Lines capture: its first line has no 'kind'"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Replay throughput: the pipeline against an orjson-only floor and the "
        "original pandas design, plus frame materialisation and memory."
    )
    parser.add_argument(
        "--messages",
        type=positive_int,
        default=Options.messages,
        help="messages in the generated capture (default %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=Options.rounds,
        help="interleaved rounds; medians are reported (default %(default)s)",
    )
    parser.add_argument(
        "--original-messages",
        type=positive_int,
        default=Options.original_messages,
        help="prefix the original design runs over (default %(default)s)",
    )
    parser.add_argument(
        "--mem-messages",
        type=int,
        default=Options.mem_messages,
        help="messages of the memory check, 0 to skip it (default %(default)s)",
    )
    parser.add_argument(
        "--mem-sample-at",
        type=positive_int,
        default=Options.mem_sample_at,
        help="the memory check's first RSS sample (default %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=Options.repeats,
        help="materialisations timed per frame (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument(
        "--capture", type=Path, help="measure this JSON Lines capture instead of generating one"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where the temporary capture goes (default: the system temp dir)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if 0 < args.mem_messages <= args.mem_sample_at:
        parser.error("--mem-messages must be above --mem-sample-at (or 0 to skip)")
    if args.capture is not None:
        problem = _not_plain_jsonl(args.capture)
        if problem:
            parser.error(f"--capture {str(args.capture)!r}: {problem}")
    options = Options(
        messages=args.messages,
        rounds=args.rounds,
        original_messages=args.original_messages,
        mem_messages=args.mem_messages,
        mem_sample_at=args.mem_sample_at,
        repeats=args.repeats,
        seed=args.seed,
        capture=args.capture,
        workdir=args.workdir,
    )
    results = run(options, progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(render(results))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
