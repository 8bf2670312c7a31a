"""The distribution ships every package of the checkout (a non-editable install too)."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_in_the_distribution() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # setuptools' `packages.find` keeps a package whose dotted name matches an
    # include pattern (fnmatch); a plain `packages` list would ship only its names.
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("pipeline", "operators", "sinks")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert {"pipeline.fake_exchange", "pipeline.view"} <= on_disk
    missing = {name for name in on_disk if not any(fnmatchcase(name, p) for p in include)}
    assert not missing, f"packages left out of the distribution: {sorted(missing)}"
    for other in ("tests", "benchmarks", "examples"):
        assert not any(fnmatchcase(other, p) for p in include)
