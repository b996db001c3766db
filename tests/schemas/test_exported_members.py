"""``schemas.__all__`` is exactly the public API (after encode/httpx's test_exported_members)."""

from __future__ import annotations

import inspect

import pytest

import schemas

pytestmark = pytest.mark.unit


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(schemas).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("schemas.")
    }
    # Submodules are reached as schemas.<module>; they are not part of __all__.
    modules = {name for name, value in vars(schemas).items() if type(value).__name__ == "module"}
    constants = {"EVENT_KINDS", "EventKind", "Framing", "MAX_REORDER_DELAY_NS"}
    assert set(schemas.__all__) == public - modules | constants


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in schemas.__all__:
        value = getattr(schemas, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"schemas.{name} has no docstring"


def test_all_is_sorted_and_has_no_duplicates() -> None:
    assert schemas.__all__ == sorted(set(schemas.__all__))
