"""Fixtures shared by several test modules (helpers that are not fixtures: `live_helpers`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back after every test (some configure it).

    The CLI configures logging on its way in; without this, its handlers would
    write into the captured streams of later tests.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def process_start_is_test_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--duration` counts from the process start; for in-process `main()` calls, the test's.

    Otherwise a `demo --duration 3` late in the suite would end right after its
    preload, and its frames would depend on where in the suite it ran.
    """
    import pipeline.cli

    monkeypatch.setattr(pipeline.cli, "_PROCESS_START", time.monotonic())
