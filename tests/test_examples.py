"""The README's strategy example runs on the bundled sample and sees every closed candle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import sma_strategy


def test_sma_strategy_gets_a_frame_per_burst_of_closed_klines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sma_strategy.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The preload arrives as one REST body, so conflation turns its 60 rows into
    # one frame; each later final kline gives one more frame, in time order.
    assert len(lines) >= 2
    stamps = [line.split("  ")[0] for line in lines]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
