"""Peer implementations of runfold's fold, written for the benchmark, and how to run them.

Each peer script (``quix_fold.py``, ``faust_fold.py``) runs in its own virtual environment
under ``bench/.work/`` and imports nothing from runfold; :mod:`bench.peers.runner` times it
over the same pre-loaded topic and checks its final state against runfold's.
"""

from __future__ import annotations

from bench.peers.runner import FAUST, QUIX, Peer, run_peer
from bench.peers.venvs import WORK, ensure_venv

__all__ = ["FAUST", "QUIX", "WORK", "Peer", "ensure_venv", "run_peer"]
