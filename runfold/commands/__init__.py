"""runfold's own CLI subcommands, one module each (registered in :mod:`runfold.cli`)."""

from __future__ import annotations

__all__: list[str] = []
