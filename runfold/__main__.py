"""``python -m runfold``: the same as the ``runfold`` console script."""

from __future__ import annotations

from runfold.cli import main

if __name__ == "__main__":
    main()
