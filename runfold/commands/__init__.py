"""runfold's CLI subcommands, one module each (registered in :mod:`runfold.cli`).

Options several commands share, and how a command loads its settings, are in
:mod:`runfold.commands.options`.
"""

from __future__ import annotations

__all__: list[str] = []
