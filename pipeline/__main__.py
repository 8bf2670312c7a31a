"""`python -m pipeline`: the `hbar-data` command line."""

from __future__ import annotations

from pipeline.cli import main

raise SystemExit(main())
