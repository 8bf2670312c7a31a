"""The view as text: pure functions of a `ViewState` (no terminal, no clock)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from pipeline.view._state import REST, STARTUP, SymbolView, Top, ViewState


# ---------------------------------------------------------------------- render (pure)
def render(state: ViewState) -> list[str]:
    """The live view of `state`, one string a line, no escapes (pure)."""
    lines = [_header(state)]
    if state.phase == "starting" or state.phase in STARTUP:
        lines.extend(_progress(state))
    lines.extend(_streams(state))
    lines.append("  " + _run_counters(state))
    for s in state.symbols:
        lines.extend(_market(s))
    return lines


def status_line(state: ViewState) -> str:
    """The state in one line, for logs where the view cannot redraw (pure)."""
    parts = [f"{_clock(state.elapsed)} {state.phase}"]
    if state.phase in STARTUP:
        parts.append(_preload_text(state) or f"{state.sockets_open} sockets open")
    for s in state.symbols:
        streams = ", ".join(
            f"{r.name} {r.rate:.1f}/s {_age(r.age)}" for r in s.streams if r.name != REST
        )
        text = f"{s.symbol} {streams}"
        if s.ticker is not None:
            text += f", last {_price(s.ticker.last_price)}"
        if s.top is not None and s.top.bid is not None and s.top.ask is not None:
            text += f", bid/ask {_price(s.top.bid)}/{_price(s.top.ask)}"
        parts.append(text)
    parts.append(_run_counters(state))
    return " | ".join(parts)


def _header(state: ViewState) -> str:
    names = ", ".join(s.symbol for s in state.symbols)
    text = f"hbar-data {state.venue} {names}: {state.phase}, {_clock(state.elapsed)}".replace(
        "  ", " "
    )
    if state.remaining is not None and state.phase != "stopping":
        text += f" (stops in {_clock(state.remaining)})"
    return text


def _progress(state: ViewState) -> Iterator[str]:
    current = STARTUP.index(state.phase) if state.phase in STARTUP else -1
    details = {
        "checking symbols": ", ".join(s.symbol for s in state.symbols),
        "opening sockets": f"{state.sockets_open} open",
        "preloading": _preload_text(state),
    }
    for i, step in enumerate(STARTUP):
        mark = "x" if i < current else ">" if i == current else " "
        detail = details[step] if i <= current else ""
        yield f"  [{mark}] {step:<17} {detail}".rstrip()


def _preload_text(state: ViewState) -> str:
    if not state.preload_requests:
        return ""
    return (
        f"{state.preload_answered} of {state.preload_requests} REST requests answered, "
        f"{state.rest_rows} rows loaded"
    )


def _streams(state: ViewState) -> Iterator[str]:
    if not any(s.streams for s in state.symbols):
        return
    yield f"  {'stream':<22}{'msgs/s':>8}{'msgs':>9}{'kept':>9}  last msg"
    for s in state.symbols:
        for r in s.streams:
            label = f"{s.symbol} {r.name}"
            extra = f"  ({r.rows} rows)" if r.name == REST and r.rows else ""
            yield (
                f"  {label:<22}{r.rate:>8.1f}{r.messages:>9}{r.kept:>9}  {_age(r.age):>8}{extra}"
            )


def _run_counters(state: ViewState) -> str:
    parts = [
        f"reconnects {state.reconnects}",
        f"gaps repaired {state.gaps_repaired}/{state.gaps_seen}",
        f"retries {state.retries}",
        f"bad {state.bad}",
    ]
    if state.failed_requests:
        parts.append(f"failed requests {state.failed_requests}")
    if state.reconnect_backfills:
        parts.append(f"backfills {state.reconnect_backfills}")
    if state.rest_in_flight and state.phase not in STARTUP:
        parts.append(f"REST in flight {state.rest_in_flight}")
    if state.weight_limit:
        parts.append(f"weight {state.used_weight}/{state.weight_limit}")
    return ", ".join(parts)


def _market(s: SymbolView) -> Iterator[str]:
    if s.ticker is None and s.top is None and not s.klines_1m and s.last_1h is None:
        return
    head = f"  {s.symbol}"
    if s.ticker is not None:
        t = s.ticker
        head += (
            f"  last {_price(t.last_price)}  24h volume {_amount(t.volume_24h)}"
            f" (quote {_amount(t.quote_volume_24h)})"
        )
    yield head
    if s.top is not None:
        yield "    book  " + _book(s.top)
    cells = [
        [_price(k.open), _price(k.high), _price(k.low), _price(k.close), _amount(k.volume)]
        for k in s.klines_1m
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(5)] if cells else []
    for i, (k, row) in enumerate(zip(s.klines_1m, cells, strict=True)):
        o, h, lo, c, v = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        lead = "    1m    " if i == 0 else "          "
        yield f"{lead}{_minute(k.open_ms)}  o {o}  h {h}  l {lo}  c {c}  v {v}".rstrip()
    closes = []
    if s.last_1h is not None:
        closes.append(f"1h {_hour(s.last_1h.open_ms)} close {_price(s.last_1h.close)}")
    if s.last_1d is not None:
        closes.append(f"1d {_day(s.last_1d.open_ms)} close {_price(s.last_1d.close)}")
    if closes:
        yield "    " + "    ".join(closes)
    if s.fill:
        yield "    rows  " + "  ".join(
            f"{b.removeprefix('klines_')} {n}/{cap}" for b, n, cap in s.fill
        )


def _book(top: Top) -> str:
    bid = "-" if top.bid is None else f"{_price(top.bid)} x {_amount(top.bid_qty or 0.0)}"
    ask = "-" if top.ask is None else f"{_price(top.ask)} x {_amount(top.ask_qty or 0.0)}"
    text = f"bid {bid}  ask {ask}"
    if top.bid is not None and top.ask is not None:
        spread = top.ask - top.bid
        mid = (top.ask + top.bid) / 2
        text += f"  spread {_price(spread)}"
        if mid > 0:
            text += f" ({spread / mid * 10_000:.1f} bp)"
    return text


def _price(x: float) -> str:
    # Fixed-point, as the exchange writes prices: `1e-05` would hide a spread's size.
    return f"{x:.8f}".rstrip("0").rstrip(".")


def _amount(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.6g}"


def _age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 1:
        return "<1s"
    return _clock(age)


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _minute(ms: int) -> str:
    return _utc(ms).strftime("%H:%M")


def _hour(ms: int) -> str:
    return _utc(ms).strftime("%m-%d %H:00")


def _day(ms: int) -> str:
    return _utc(ms).strftime("%Y-%m-%d")
