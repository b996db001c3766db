"""consumers' public names are exported once, from the modules that define them."""

from __future__ import annotations

import importlib

import pytest

import consumers

# ``consumers.fold`` the attribute is the function fold(); the module is in sys.modules.
MODULES = [
    importlib.import_module(f"consumers.{name}")
    for name in ("fold", "sequence", "state", "state_codec")
]

pytestmark = pytest.mark.unit


def test_every_public_name_of_the_fold_is_exported() -> None:
    for module in MODULES:
        for name in module.__all__:
            assert name in consumers.__all__, f"{module.__name__}.{name}"
            assert getattr(consumers, name) is getattr(module, name)
    for name in consumers.__all__:
        assert hasattr(consumers, name), name
