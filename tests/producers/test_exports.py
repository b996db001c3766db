"""``producers.__all__`` is the package's public API: complete, and nothing stale."""

from __future__ import annotations

import pytest

import producers

pytestmark = pytest.mark.unit


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in producers.__all__:
        value = getattr(producers, name)
        if callable(value):
            assert value.__doc__, f"producers.{name} has no docstring"


def test_public_classes_and_functions_are_exported() -> None:
    public = {
        name for name, value in vars(producers).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("producers.")
    }
    assert public <= set(producers.__all__)
    assert len(producers.__all__) == len(set(producers.__all__))
