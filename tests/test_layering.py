"""The packages layer: schemas <- clients <- producers, consumers <- runfold (CLI), serve, bench.

Each package is imported in a fresh interpreter, and the project packages it pulled into
``sys.modules`` are compared with the ones below it. An upward import (``producers``
reaching for ``runfold.settings``, ``clients`` for ``runfold.kafka``) fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PROJECT = frozenset(
    {"schemas", "clients", "producers", "consumers", "runfold", "serve", "bench"}
)

# What each package may load (itself included); everything else of PROJECT is above it.
ALLOWED: dict[str, frozenset[str]] = {
    "schemas": frozenset({"schemas"}),
    "clients": frozenset({"schemas", "clients"}),
    "producers": frozenset({"schemas", "clients", "producers"}),
    "consumers": frozenset({"schemas", "clients", "consumers"}),
    "consumers.service": frozenset({"schemas", "clients", "consumers"}),
    "runfold": PROJECT - {"bench"},
    "runfold.cli": PROJECT - {"bench", "serve"},
    "serve": PROJECT - {"bench"},
}


def _loaded_after_import(module: str, among: frozenset[str] = PROJECT) -> set[str]:
    """Top-level packages of ``among`` loaded by ``import module`` in a new interpreter."""
    probe = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(found.stdout)) & among


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_importing_a_package_loads_nothing_above_it(module: str) -> None:
    upward = _loaded_after_import(module) - ALLOWED[module]
    assert not upward, f"`import {module}` loaded {sorted(upward)}, which sit above it"


def test_the_probe_sees_imports() -> None:
    # A probe that found nothing would pass every check above.
    assert _loaded_after_import("producers") >= {"schemas", "clients", "producers"}


def test_the_settings_load_no_kafka_client() -> None:
    # The pure fold may take its settings from clients one day; that must not cost it a
    # librdkafka (clients.connection, which needs one, is imported on its own).
    assert _loaded_after_import("clients", frozenset({"confluent_kafka"})) == set()
