"""What every benchmark script shares: the checkout on `sys.path`, option types, the machine."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
"""The checkout the benchmarks measure."""


def project_importable() -> None:
    """Let a plain checkout run `python benchmarks/<script>.py` without installing."""
    if str(ROOT) not in sys.path:
        sys.path.insert(1, str(ROOT))


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def environment(**versions: str) -> dict[str, Any]:
    """The machine a result was measured on, and the `versions` of what was measured."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        **versions,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
