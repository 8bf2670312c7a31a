"""Smoke test of the replay benchmark: end to end on a tiny capture, with sane figures.

The benchmark runs as users run it (`python benchmarks/replay_throughput.py`),
in a subprocess, on a few thousand generated messages with every phase enabled
(interleaved rounds, the prefix check against the original design,
materialisation, the memory check in its own interpreter). Only the structure
and the internal consistency of the results are checked, never a speed.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = ROOT / "benchmarks" / "replay_throughput.py"

MESSAGES = 3_000
ROUNDS = 2
ORIGINAL = 400
MEM_MESSAGES = 4_000
MEM_SAMPLE_AT = 1_000


def run_benchmark(script: Path, args: list[str], out: Path, timeout: float) -> tuple[str, Any]:
    """Run `script args --json out` as a user would; its printed report and its results."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(script), *args, "--json", str(out)],
        capture_output=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode(), orjson.loads(out.read_bytes())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The benchmark's printed report and its `--json` results."""
    tmp = tmp_path_factory.mktemp("bench")
    args = ["--messages", str(MESSAGES), "--rounds", str(ROUNDS)]
    args += ["--original-messages", str(ORIGINAL), "--mem-messages", str(MEM_MESSAGES)]
    args += ["--mem-sample-at", str(MEM_SAMPLE_AT), "--repeats", "5", "--workdir", str(tmp)]
    return run_benchmark(BENCHMARK, args, tmp / "results.json", timeout=55)


def test_report_names_every_measurement(run: tuple[str, dict[str, Any]]) -> None:
    report, results = run
    for label in (
        "(a) floor",
        "(b) pipeline",
        "(c) original",
        "pipeline / floor",
        "pipeline / original",
        "materialise order_book",
        "materialise ticker",
        "memory (fresh process",
        "peak RSS",
        "load average",
    ):
        assert label in report
    # The floor is stated exactly, since every ratio depends on it.
    assert results["floor"] in report
    assert "orjson.loads(line)" in results["floor"]


def test_the_capture_has_the_live_mix(run: tuple[str, dict[str, Any]]) -> None:
    _, results = run
    capture = results["capture"]
    assert capture["lines"] >= MESSAGES
    mix = capture["mix"]
    assert sum(mix.values()) == capture["lines"]
    # Per second: 10 depth20, 1 ticker, about 2 kline_1m updates.
    assert mix["depth20"] == pytest.approx(10 * mix["ticker"], rel=0.05)
    assert mix["kline_1m"] == pytest.approx(2 * mix["ticker"], rel=0.1)


def test_every_contender_ran_every_round(run: tuple[str, dict[str, Any]]) -> None:
    _, results = run
    timings = results["timings"]
    lines = results["capture"]["lines"]
    assert timings["floor"]["messages"] == lines
    assert timings["pipeline"]["messages"] == lines
    assert timings["original"]["messages"] == ORIGINAL
    for t in timings.values():
        assert len(t["seconds"]) == ROUNDS
        assert all(s > 0 for s in t["seconds"])
        assert min(t["seconds"]) <= t["median_seconds"] <= max(t["seconds"])
        assert t["msgs_per_s"] == pytest.approx(t["messages"] / t["median_seconds"])
        assert t["us_per_msg"] == pytest.approx(1e6 / t["msgs_per_s"])
        assert len(t["rounds_msgs_per_s"]) == ROUNDS


def test_ratios_follow_from_the_timings(run: tuple[str, dict[str, Any]]) -> None:
    _, results = run
    rate = {name: t["msgs_per_s"] for name, t in results["timings"].items()}
    ratios = results["ratios"]
    assert ratios["pipeline_vs_floor"] == pytest.approx(rate["pipeline"] / rate["floor"])
    assert ratios["pipeline_vs_original"] == pytest.approx(rate["pipeline"] / rate["original"])
    assert ratios["pipeline_vs_floor_paired_median"] > 0
    assert ratios["targets"] == {"vs_floor": 0.5, "vs_original": 150.0}


def test_the_pipeline_and_the_original_agree_on_the_prefix(
    run: tuple[str, dict[str, Any]],
) -> None:
    _, results = run
    check = results["prefix_check"]
    assert check["agree"], check
    pipeline_rows, original_rows = check["order_book"]["rows"]
    # Whole 40-row snapshots in the pipeline; tail(1000) in the original.
    assert 1000 - 40 < pipeline_rows <= original_rows == 1000
    assert check["ticker"]["rows"][0] == check["ticker"]["rows"][1] > 0
    assert results["original_buffers"]["order_book"] == 1000
    assert 0 < results["original_buffers"]["klines_1m"] <= 60


def test_the_pipeline_run_is_accounted_for(run: tuple[str, dict[str, Any]]) -> None:
    _, results = run
    summary = results["pipeline_run"]
    assert summary["accounting_problems"] == []
    assert summary["messages"] == results["capture"]["lines"]
    # make_capture's faults include one frame cut short: the floor and the
    # pipeline both meet it.
    assert summary["bad"] >= 1
    assert results["floor_bad_data"] >= 1
    frames = summary["frames"]["HBARUSDT"]
    assert frames["klines_1m"] == 60
    assert 1000 - 40 < frames["order_book"] <= 1000


def test_materialisation_and_memory_are_measured(run: tuple[str, dict[str, Any]]) -> None:
    _, results = run
    for buffer in ("order_book", "ticker"):
        m = results["materialisation"][buffer]
        assert m["rows"] > 0
        assert m["repeats"] == 5
        assert 0 < m["get_us_min"] <= m["get_us_median"]
    memory = results["memory"]
    assert memory["messages"] == MEM_MESSAGES
    assert memory["sample_at"] == MEM_SAMPLE_AT
    assert set(memory["rss_mb"]) == {str(MEM_SAMPLE_AT), str(MEM_MESSAGES)}
    assert all(mb > 10 for mb in memory["rss_mb"].values())
    assert memory["growth_mb"] == pytest.approx(
        memory["rss_mb"][str(MEM_MESSAGES)] - memory["rss_mb"][str(MEM_SAMPLE_AT)]
    )
    assert memory["peak_rss_mb"] >= max(memory["rss_mb"].values())
    assert memory["frames"]["HBARUSDT"]["klines_1m"] == 60
    peaks = results["peak_rss_mb"]
    assert peaks["pipeline_process"] == memory["peak_rss_mb"]
    assert peaks["benchmark_process"] > 0
    assert all(math.isfinite(x) for x in results["environment"]["load_average"])


# ---------------------------------------------------------------- live loopback
LIVE_BENCHMARK = ROOT / "benchmarks" / "live_loopback.py"
LIVE_SYMBOLS = 10


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """`live_loopback.py --quick` (fewer symbols): its printed report and `--json` results."""
    out = tmp_path_factory.mktemp("live") / "results.json"
    args = ["--quick", "--symbols", str(LIVE_SYMBOLS), "--seconds", "0.5", "--hbar-seconds", "1"]
    return run_benchmark(LIVE_BENCHMARK, args, out, timeout=110)


# Four fake exchanges start (imports and all) and 100-odd sockets open: on a busy
# shared machine that alone can take half a minute.
@pytest.mark.timeout(120)
def test_live_report_names_every_scenario_and_contender(
    live_run: tuple[str, dict[str, Any]],
) -> None:
    report, results = live_run
    for label in (
        "HBAR, natural pace",
        "HBAR, flat out",
        f"{LIVE_SYMBOLS} symbols, natural pace",
        f"{LIVE_SYMBOLS} symbols, flat out",
        "floor",
        "pipeline",
        "pipeline/floor",
        "p99 <= 100 µs",
    ):
        assert label in report
    assert results["floor"] in report
    assert "orjson.loads(raw.data)" in results["floor"]


@pytest.mark.timeout(120)
def test_live_figures_are_sane(live_run: tuple[str, dict[str, Any]]) -> None:
    _, results = live_run
    scenarios = results["scenarios"]
    assert list(scenarios) == ["hbar", "hbar_fast", "many", "many_fast"]
    assert scenarios["hbar"]["symbols"] == 1
    assert scenarios["many"]["symbols"] == LIVE_SYMBOLS
    for sc in scenarios.values():
        for c in sc["contenders"].values():
            assert c["frames"] > 0
            assert c["frames_per_s"] > 0
            assert c["frames"] == sum(c["mix"].values())
            assert c["mix"]["depth20"] > 0
            lat = c["latency_us"]
            assert lat["n"] == c["frames"]
            assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            # The subscriber's own time is part of the receipt-to-return latency.
            assert 0 < c["in_subscriber_us"]["p50"] <= lat["max"]
            assert 0 <= c["gc_frames"] <= c["frames"]
            assert c["client_cpu_us_per_frame"] > 0
        assert all(r is None or r > 0 for r in sc["ratios"].values())
