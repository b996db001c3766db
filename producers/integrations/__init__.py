"""Integrations that record runs from agent frameworks without hand-written ``emit`` calls.

Each integration is its own module and imports its framework only when imported
itself, so ``import producers`` never needs an optional extra:

- :mod:`producers.integrations.langgraph`: ``RunfoldCallback``, a LangGraph callback
  handler (``pip install 'runfold[langgraph]'``); :mod:`~.langgraph_graph` reads what
  LangGraph's graphs and callback values mean (structure, node paths, updates, messages,
  checkpoints) for it.

:mod:`producers.integrations.values` holds what every integration needs and no
framework: JSON-safe copies of framework values, state digests, the git sha.
"""

from __future__ import annotations

__all__: list[str] = []
