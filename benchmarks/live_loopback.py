"""Live loopback: frames received per second and receipt-to-frame latency, over a real socket.

    python benchmarks/live_loopback.py [--rounds 2] [--seconds 4] [--hbar-seconds 10]
                                       [--symbols 100] [--quick] [--json PATH]

About two minutes by default, about fifteen seconds with `--quick` (20 symbols). The fake
exchange (`hbar-data fake-exchange`, a synthetic market) runs in its own
process on 127.0.0.1; this process connects to it with the real client,
`pipeline.ws.WsSource` (aiohttp), subscribed to the live job's streams
(`<s>@kline_1m`, `<s>@depth20@100ms`, `<s>@ticker` per symbol), in four
scenarios:

- HBAR/USDT alone and `--symbols` symbols (HBARUSDT plus synthetic ones), each
- at the market's natural pace (per symbol and second: 10 depth20, 1 ticker,
  one kline_1m update every 2 s as Binance's documented update speed), and
- flat out: the market clock sped up so far that the fake exchange is always
  behind and sends frames as fast as it can build them (its synthetic market,
  not the socket, is then the limit: see the server CPU column).

Two contenders take turns in each scenario (A, B, B, A, ...; a fresh socket
each time), since the machines are shared and noisy:

- (a) the floor: a subscriber of `WsSource.messages` that only runs
  `orjson.loads(raw.data)`;
- (b) the pipeline: a `pipeline.feed.Feed` built as the live job builds it
  (`AsyncIOScheduler`, `RunStats`, symbols added up front) whose `push` is the
  subscriber.

Latency, per WebSocket frame: `time.time_ns()` right after the subscriber's
work returned, minus `RawMessage.t` (the `time.time_ns()` WsSource takes when
the frame is read off the socket). For the pipeline that is the event folded
into its frame, the frame not materialised. The subscriber's own share is also
timed with a `perf_counter_ns` pair (`in-sub`). Frames a garbage collection ran
during are counted (`gc`), and the percentiles without them are kept in the
JSON. Nothing asserts on speed: figures are printed next to the target
(p99 <= 100 µs).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson
from _bench import ROOT, environment, positive_float, positive_int, project_importable

if TYPE_CHECKING:
    from operators.events import RawMessage

__all__ = ["FLOOR", "Options", "main", "run"]


FLOOR: Final = (
    "a subscriber of WsSource.messages that runs orjson.loads(raw.data) on each text frame "
    "and discards the result: no field access, no events, no frames"
)
"""Exactly what the floor does; printed with the results."""

PIPELINE: Final = (
    "a subscriber of WsSource.messages that is Feed.push (parse, dedupe / final-only / "
    "monotonic, fold into the rolling frames; nothing materialised)"
)

TARGET_P99_US: Final = 100.0
NATURAL_FRAMES_PER_SYMBOL: Final = 10.5
"""Frames a second per symbol the synthetic market sends at its natural pace."""
CONTENDERS: Final = ("floor", "pipeline")
KINDS: Final = ("depth20", "ticker", "kline", "other")
_READY: Final = re.compile(r"WebSocket (ws://\S+)")


@dataclass(frozen=True)
class Options:
    """What to measure; the command line's flags."""

    rounds: int = 2
    seconds: float = 4.0
    """Measured seconds per contender and round (the busy scenarios)."""
    hbar_seconds: float = 10.0
    """Measured seconds per contender and round for HBAR at its natural pace (~10 frames/s)."""
    warmup: float = 1.0
    """Seconds after the first frame before measuring (connect, first writes)."""
    symbols: int = 100
    fast_speed: float = 2000.0
    """Market clock speed of the flat-out scenarios, divided by the number of symbols."""
    seed: int = 0


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    symbols: tuple[str, ...]
    speed: float
    seconds: float


def scenarios(options: Options) -> list[Scenario]:
    many = ("HBARUSDT", *(f"SYN{i:03d}USDT" for i in range(options.symbols - 1)))
    n = len(many)
    return [
        Scenario("hbar", "HBAR, natural pace", ("HBARUSDT",), 1.0, options.hbar_seconds),
        Scenario("hbar_fast", "HBAR, flat out", ("HBARUSDT",), options.fast_speed, options.seconds),
        Scenario("many", f"{n} symbols, natural pace", many, 1.0, options.seconds),
        Scenario(
            "many_fast", f"{n} symbols, flat out", many, options.fast_speed / n, options.seconds
        ),
    ]


# ---------------------------------------------------------------- the fake exchange
class Server:
    """`hbar-data fake-exchange` in a child process, on a free port of 127.0.0.1."""

    def __init__(self, symbols: Sequence[str], speed: float, seed: int) -> None:
        args = [sys.executable, "-m", "pipeline", "fake-exchange", "--port", "0"]
        args += ["--speed", repr(speed), "--seed", str(seed)]
        for symbol in symbols:
            args += ["--symbol", symbol]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.ws_url = ""
        self._last_words: str | None = None

    def wait_ready(self) -> None:
        """Wait for the server's announcement (it imports and binds meanwhile)."""
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        match = _READY.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the fake exchange did not start: {line.strip()!r}")
        self.ws_url = match.group(1)

    def cpu_seconds(self) -> float | None:
        """User plus system CPU seconds of the server process so far (Linux), else None."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> str:
        """Stop the server (once); its last words (what it served)."""
        if self._last_words is not None:
            return self._last_words
        process = self.process
        if process.poll() is None:
            process.terminate()
        try:
            _, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        self._last_words = (err or "").strip()
        return self._last_words


# ---------------------------------------------------------------- one measured connection
@dataclass
class Samples:
    """What one contender saw during one measured window."""

    latency_ns: list[int] = field(default_factory=list)
    in_sub_ns: list[int] = field(default_factory=list)
    in_sub_cpu_ns: list[int] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    gc: list[bool] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    server_cpu_seconds: float | None = None
    gc_pauses_ns: list[int] = field(default_factory=list)


class _GcWatch:
    """Counts collections and their pauses (a sample is flagged if one ran during it)."""

    def __init__(self) -> None:
        self.collections = 0
        self.pauses: list[int] = []
        self._start = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.collections += 1
            self._start = time.perf_counter_ns()
        else:
            self.pauses.append(time.perf_counter_ns() - self._start)


def _kind(data: str) -> int:
    head = data[:48]
    if "@depth20" in head:
        return 0
    if "@ticker" in head:
        return 1
    if "@kline" in head:
        return 2
    return 3


async def measure(
    server: Server, scenario: Scenario, contender: str, warmup: float, watch: _GcWatch
) -> Samples:
    """Connect, warm up, then record every text frame for `scenario.seconds`."""
    from reactivex.scheduler.eventloop import AsyncIOScheduler

    from pipeline.feed import Feed
    from pipeline.live import streams_for
    from pipeline.stats import RunStats
    from pipeline.ws import WsSource

    loop = asyncio.get_running_loop()
    samples = Samples()
    recording = False
    # Measuring starts once every symbol's depth20 stream has delivered (the fake
    # exchange builds a symbol's market on its first subscription) plus `warmup`.
    waiting_for = {f'{s.lower()}@depth20@100ms"' for s in scenario.symbols}
    first = asyncio.Event()
    lat, in_sub, kinds, gcd = samples.latency_ns, samples.in_sub_ns, samples.kind, samples.gc
    in_sub_cpu = samples.in_sub_cpu_ns
    perf_ns, wall_ns, cpu_ns = time.perf_counter_ns, time.time_ns, time.thread_time_ns
    work: Callable[[Any], Any]
    if contender == "pipeline":
        feed = Feed(None, AsyncIOScheduler(loop), RunStats())
        for symbol in scenario.symbols:
            feed.add_symbol(symbol)
        work = feed.push
    else:
        loads = orjson.loads

        def work(raw: RawMessage) -> None:
            loads(raw.data)

    def on_message(raw: RawMessage) -> None:
        if raw.kind != "ws":
            if contender == "pipeline":
                work(raw)
            return
        before = watch.collections
        cpu_start = cpu_ns()
        start = perf_ns()
        work(raw)
        end = perf_ns()
        done = wall_ns()
        cpu_end = cpu_ns()
        if recording:
            lat.append(done - raw.t)
            in_sub.append(end - start)
            in_sub_cpu.append(cpu_end - cpu_start)
            gcd.append(watch.collections != before)
            kinds.append(_kind(raw.data))
        elif waiting_for:
            waiting_for.discard(raw.data[11:48].partition(",")[0])
            if not waiting_for:
                first.set()

    source = WsSource(server.ws_url, streams_for(scenario.symbols))
    source.messages.subscribe(on_message)
    try:
        await source.start()
        await asyncio.wait_for(first.wait(), 30)
        await asyncio.sleep(warmup)
        # Collect now, so the warm-up's garbage is not collected on the measured clock.
        gc.collect()
        pauses_before = len(watch.pauses)
        server_cpu = server.cpu_seconds()
        cpu = time.process_time()
        started = time.perf_counter()
        recording = True
        await asyncio.sleep(scenario.seconds)
        recording = False
        samples.seconds = time.perf_counter() - started
        samples.cpu_seconds = time.process_time() - cpu
        server_after = server.cpu_seconds()
        if server_cpu is not None and server_after is not None:
            samples.server_cpu_seconds = server_after - server_cpu
        samples.gc_pauses_ns = watch.pauses[pauses_before:]
    finally:
        await source.close()
        if contender == "pipeline":
            # Its 1m gap detectors' deadlines would otherwise fire during later
            # measurements (and log gaps of a feed nobody reads).
            feed.complete()
    return samples


# ---------------------------------------------------------------- statistics
def _percentiles(values_ns: Sequence[int]) -> dict[str, float]:
    """p50, p90, p99 and max in µs (nearest rank), and the count."""
    if not values_ns:
        return {"n": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values_ns)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))] / 1000

    return {
        "n": n,
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": ordered[-1] / 1000,
    }


def summarise(rounds: list[Samples], scenario: Scenario) -> dict[str, Any]:
    """Pooled percentiles over the rounds, rates per round, mix, GC and CPU."""
    lat = [x for s in rounds for x in s.latency_ns]
    in_sub = [x for s in rounds for x in s.in_sub_ns]
    kinds = [k for s in rounds for k in s.kind]
    gcd = [g for s in rounds for g in s.gc]
    frames = len(lat)
    seconds = sum(s.seconds for s in rounds)
    cpu = sum(s.cpu_seconds for s in rounds)
    server = [s.server_cpu_seconds for s in rounds]
    by_kind = {
        name: _percentiles([x for x, k in zip(lat, kinds, strict=True) if k == i])
        for i, name in enumerate(KINDS)
    }
    pauses = [p for s in rounds for p in s.gc_pauses_ns]
    return {
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds if seconds else 0.0,
        "rounds_frames_per_s": [len(s.latency_ns) / s.seconds for s in rounds if s.seconds],
        "due_frames_per_s": NATURAL_FRAMES_PER_SYMBOL * len(scenario.symbols) * scenario.speed,
        "mix": {name: kinds.count(i) for i, name in enumerate(KINDS)},
        "latency_us": _percentiles(lat),
        "rounds_p99_us": [_percentiles(s.latency_ns)["p99"] for s in rounds],
        "latency_no_gc_us": _percentiles([x for x, g in zip(lat, gcd, strict=True) if not g]),
        "latency_by_kind_us": by_kind,
        "in_subscriber_us": _percentiles(in_sub),
        "in_subscriber_cpu_us": _percentiles([x for s in rounds for x in s.in_sub_cpu_ns]),
        "gc_frames": sum(gcd),
        "gc_collections": len(pauses),
        "gc_pause_max_us": max(pauses) / 1000 if pauses else 0.0,
        "client_cpu_us_per_frame": 1e6 * cpu / frames if frames else 0.0,
        "client_cpu_share": cpu / seconds if seconds else 0.0,
        "server_cpu_share": (
            sum(x for x in server if x is not None) / seconds
            if seconds and all(x is not None for x in server)
            else None
        ),
    }


# ---------------------------------------------------------------- the run
def _environment() -> dict[str, Any]:
    import aiohttp

    return environment(aiohttp=aiohttp.__version__, orjson=orjson.__version__)


async def _run(options: Options, progress: Callable[[str], None]) -> dict[str, Any]:
    watch = _GcWatch()
    gc.callbacks.append(watch)
    results: dict[str, Any] = {"scenarios": {}}
    plan = scenarios(options)
    # Started together (an idle server costs nothing: no subscriber, no producer),
    # so each one's start-up is not waited for in turn.
    servers = [Server(sc.symbols, sc.speed, options.seed) for sc in plan]
    try:
        for scenario, server in zip(plan, servers, strict=True):
            progress(
                f"{scenario.label}: {len(scenario.symbols)} symbols, market clock "
                f"x{scenario.speed:g}, {options.rounds} rounds of {scenario.seconds:g} s "
                "a contender"
            )
            server.wait_ready()
            rounds: dict[str, list[Samples]] = {c: [] for c in CONTENDERS}
            try:
                for r in range(options.rounds):
                    order = CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]
                    for contender in order:
                        samples = await measure(server, scenario, contender, options.warmup, watch)
                        rounds[contender].append(samples)
                        progress(
                            f"  round {r + 1} {contender}: {len(samples.latency_ns):,} frames, "
                            f"p99 {_percentiles(samples.latency_ns)['p99']:.0f} µs"
                        )
            finally:
                served = server.stop()
            summary = {c: summarise(rounds[c], scenario) for c in CONTENDERS}
            pipe, floor = summary["pipeline"]["latency_us"], summary["floor"]["latency_us"]
            results["scenarios"][scenario.key] = {
                "label": scenario.label,
                "symbols": len(scenario.symbols),
                "speed": scenario.speed,
                "seconds_per_round": scenario.seconds,
                "contenders": summary,
                "ratios": {
                    q: pipe[q] / floor[q] if floor[q] else None for q in ("p50", "p90", "p99")
                },
                "server": served.splitlines()[-1] if served else "",
            }
    finally:
        gc.callbacks.remove(watch)
        for server in servers:
            server.stop()
    return results


def run(options: Options, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Measure every scenario; the results as plain data (see `render`)."""
    project_importable()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "options": {k: getattr(options, k) for k in Options.__dataclass_fields__},
        "environment": _environment(),
        "floor": FLOOR,
        "pipeline": PIPELINE,
        "target_p99_us": TARGET_P99_US,
    }
    results |= asyncio.run(_run(options, progress))
    results["environment"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_seconds"] = time.perf_counter() - started
    return results


# ---------------------------------------------------------------- the report
def render(results: dict[str, Any]) -> str:
    """The results as a readable report."""
    env = results["environment"]
    out = [
        "hbar-data live loopback: fake exchange -> WsSource (aiohttp) -> subscriber, 127.0.0.1",
        f"  Python {env['python']} ({env['machine']}, {env['cpus']} CPUs), aiohttp "
        f"{env['aiohttp']}, orjson {env['orjson']}; load average before {env['load_average']}, "
        f"after {env.get('load_average_after')}",
        "  latency = time_ns() when the subscriber returned - RawMessage.t (stamped when the "
        "frame was read off the socket); µs, pooled over the rounds",
        f"  (a) floor    = {results['floor']}",
        f"  (b) pipeline = {results['pipeline']}",
        "",
        f"  {'scenario':<26} {'contender':<9} {'frames/s':>9} {'due/s':>7} "
        f"{'p50':>6} {'p90':>6} {'p99':>6} {'max':>7} {'in-sub p50/p99':>15} "
        f"{'gc':>4} {'CPU µs/fr':>9} {'srv CPU':>7}  p99 per round",
    ]
    target = results["target_p99_us"]
    verdicts = []
    for sc in results["scenarios"].values():
        for i, contender in enumerate(CONTENDERS):
            c = sc["contenders"][contender]
            lat, sub = c["latency_us"], c["in_subscriber_us"]
            server = c["server_cpu_share"]
            out.append(
                f"  {sc['label'] if i == 0 else '':<26} {contender:<9} {c['frames_per_s']:>9,.0f} "
                f"{c['due_frames_per_s']:>7,.0f} {lat['p50']:>6.0f} {lat['p90']:>6.0f} "
                f"{lat['p99']:>6.0f} {lat['max']:>7.0f} "
                f"{sub['p50']:>7.0f}/{sub['p99']:<7.0f} {c['gc_frames']:>4} "
                f"{c['client_cpu_us_per_frame']:>9.0f} "
                + (f"{server:>7.0%}" if server is not None else f"{'?':>7}")
                + "  "
                + ", ".join(f"{x:.0f}" for x in c["rounds_p99_us"])
            )
        pipe = sc["contenders"]["pipeline"]
        ratios = sc["ratios"]
        depth = pipe["latency_by_kind_us"]["depth20"]
        cpu = pipe["in_subscriber_cpu_us"]
        mix = ", ".join(f"{k} {v:,}" for k, v in pipe["mix"].items() if v)
        out.append(
            f"  {'':<26} pipeline/floor p50 {_ratio(ratios['p50'])}, p99 "
            f"{_ratio(ratios['p99'])}; depth20 alone p50 {depth['p50']:.0f} p99 "
            f"{depth['p99']:.0f}; without GC'd frames p99 {pipe['latency_no_gc_us']['p99']:.0f}; "
            f"in-sub CPU time p50/p99 {cpu['p50']:.0f}/{cpu['p99']:.0f}; "
            f"{pipe['gc_collections']} collections, longest {pipe['gc_pause_max_us']:,.0f}"
        )
        out.append(f"  {'':<26} frames {mix}")
        ok = pipe["latency_us"]["p99"] <= target
        verdicts.append(
            f"  {sc['label']:<26} pipeline p99 {pipe['latency_us']['p99']:.0f} µs over "
            f"{pipe['latency_us']['n']:,} frames: "
            + ("meets the target" if ok else "MISSES the target")
            + f" (p99 <= {target:.0f} µs)"
        )
    out += ["", *verdicts]
    out.append(
        "  columns: due/s = what the market clock schedules (flat out: far more than is sent); "
        "in-sub = the subscriber alone (perf_counter_ns pair; 'CPU time': thread_time_ns, "
        "which leaves out time the process was not running); gc = frames a collection ran "
        "during; CPU µs/fr = this process's CPU time per frame (socket, client, subscriber); "
        "srv CPU = the fake exchange's share of a core"
    )
    out.append(f"  wall time {results['wall_seconds']:.0f} s")
    return "\n".join(out)


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "?"


QUICK: Final = Options(rounds=1, seconds=0.75, hbar_seconds=1.5, warmup=0.25, symbols=20)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Frames per second and receipt-to-frame latency of the live client "
        "against the fake exchange over loopback, next to an orjson-only floor."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a ~15 s smoke run (one short round each, 20 symbols)"
    )
    parser.add_argument("--rounds", type=positive_int, help="rounds per contender (default 2)")
    parser.add_argument(
        "--seconds", type=positive_float, help="measured seconds per round (default 4)"
    )
    parser.add_argument(
        "--hbar-seconds",
        type=positive_float,
        help="measured seconds per round, HBAR at natural pace (default 10)",
    )
    parser.add_argument(
        "--warmup", type=float, help="seconds after the first frame before measuring (default 1)"
    )
    parser.add_argument(
        "--symbols", type=positive_int, help="symbols of the many-symbol scenarios (default 100)"
    )
    parser.add_argument(
        "--fast-speed",
        type=positive_float,
        help="market clock speed x symbols of the flat-out scenarios (default 2000)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else Options()
    overrides = {
        name: getattr(args, name)
        for name in ("rounds", "seconds", "hbar_seconds", "warmup", "symbols", "fast_speed")
        if getattr(args, name) is not None
    }
    if overrides.get("warmup", 0) < 0:
        parser.error("--warmup must not be negative")
    options = Options(**{**base.__dict__, **overrides, "seed": args.seed})
    results = run(options, progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(render(results))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
