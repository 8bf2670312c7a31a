"""Fixtures shared by several test modules (helpers that are not fixtures: `live_helpers`)."""

from __future__ import annotations

import logging
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
