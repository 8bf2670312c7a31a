"""`ReplayScheduler` behaves as the stock `HistoricalScheduler`, advanced the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import abc
from reactivex import operators as ops
from reactivex.scheduler import HistoricalScheduler

from pipeline.clock import EPOCH, ReplayScheduler, advancer, datetime_to_ns, ns_to_datetime

T0 = 1_732_600_000_000_000_000


def test_conversions() -> None:
    assert ns_to_datetime(T0 + 123_456_789) == datetime(2024, 11, 26, 5, 46, 40, 123456, tzinfo=UTC)
    assert datetime_to_ns(datetime(2024, 11, 26, 5, 46, 40, 123456, tzinfo=UTC)) == T0 + 123_456_000
    assert datetime_to_ns(datetime(2024, 11, 26, 5, 46, 40)) == T0  # naive means UTC
    assert ns_to_datetime(0) == EPOCH


def test_clock_is_exact_ns_and_never_goes_back() -> None:
    s = ReplayScheduler()
    s.advance_to_ns(T0 + 7)
    assert s.now_ns == T0 + 7
    assert s.now == ns_to_datetime(T0)
    s.advance_to_ns(T0 - 5_000_000_000)
    assert s.now_ns == T0 + 7


def test_interval_runs_on_the_replay_clock() -> None:
    s = ReplayScheduler(T0)
    fired: list[tuple[int, int]] = []
    reactivex.interval(timedelta(seconds=1), scheduler=s).pipe(ops.take(3)).subscribe(
        lambda n: fired.append((n, s.now_ns))
    )
    for step in range(0, 5_000_000_000, 300_000_000):
        s.advance_to_ns(T0 + step)
    assert fired == [(0, T0 + 1_000_000_000), (1, T0 + 2_000_000_000), (2, T0 + 3_000_000_000)]


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Actions (due offset in µs, id, follow-up delay in µs or -1) and advance times (ns)."""
    actions = draw(
        st.lists(
            st.tuples(
                st.integers(0, 5_000_000),
                st.integers(0, 1000),
                st.one_of(st.just(-1), st.integers(0, 2_000_000)),
            ),
            max_size=15,
        )
    )
    steps = sorted(draw(st.lists(st.integers(0, 8_000_000_000), max_size=30)))
    return actions, steps


@settings(max_examples=100, deadline=None)
@given(plans())
def test_same_actions_at_the_same_times_as_historical_scheduler(
    plan: tuple[list[tuple[int, int, int]], list[int]],
) -> None:
    actions, steps = plan

    def run(scheduler: HistoricalScheduler) -> list[tuple[int, datetime]]:
        log: list[tuple[int, datetime]] = []

        def make(ident: int, follow_up: int) -> Any:
            def action(sched: abc.SchedulerBase, _: Any = None) -> None:
                log.append((ident, sched.now))
                if follow_up >= 0:
                    sched.schedule_relative(
                        timedelta(microseconds=follow_up), make(ident + 10_000, -1)
                    )

            return action

        for due_us, ident, follow_up in actions:
            scheduler.schedule_absolute(
                ns_to_datetime(T0) + timedelta(microseconds=due_us), make(ident, follow_up)
            )
        advance = advancer(scheduler)
        for step in steps:
            # Whole microseconds: the stock scheduler's datetime clock has no finer grain.
            advance(T0 + step // 1000 * 1000)
        return log

    assert run(ReplayScheduler(T0)) == run(HistoricalScheduler(ns_to_datetime(T0)))
