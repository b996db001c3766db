"""consumers' public names are exported once, from the modules that define them."""

from __future__ import annotations

import importlib

import pytest

import consumers

# Each module that defines part of the pure API.
MODULES = [
    importlib.import_module(f"consumers.{name}")
    for name in ("digest", "next_event", "runs", "sequence", "state", "state_codec", "tally")
]

pytestmark = pytest.mark.unit


def test_every_public_name_of_the_fold_is_exported() -> None:
    for module in MODULES:
        for name in module.__all__:
            assert name in consumers.__all__, f"{module.__name__}.{name}"
            assert getattr(consumers, name) is getattr(module, name)
    for name in consumers.__all__:
        assert hasattr(consumers, name), name


def test_the_pure_fold_imports_no_kafka_client() -> None:
    """``import consumers`` (the fold) loads neither confluent_kafka nor the service."""
    import subprocess
    import sys

    code = (
        "import sys, consumers, consumers.digest, consumers.next_event, consumers.runs, "
        "consumers.sequence, consumers.state_codec, consumers.state_bytes; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'confluent_kafka' "
        "or m.startswith('consumers.service')); print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the pure fold imported: {out.stdout.strip()}"
