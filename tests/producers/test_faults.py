"""``--faults`` text: what it accepts, and the error each bad input gets."""

from __future__ import annotations

import pytest

from producers import FaultRates, FaultSpecError
from schemas.errors import ConfigError, RunfoldError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, FaultRates()),
        ("", FaultRates()),
        ("gap=0.01", FaultRates(gap=0.01)),
        (" gap = 0.5 , dup=1 ", FaultRates(gap=0.5, dup=1.0)),
        ("gap=0,dup=0.1,reorder=0.2,after_end=0.3,conflict=0.4,corrupt=1e-3",
         FaultRates(dup=0.1, reorder=0.2, after_end=0.3, conflict=0.4, corrupt=0.001)),
    ],
)
def test_parse_accepts(text: str | None, expected: FaultRates) -> None:
    assert FaultRates.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gap", r"item 1 \('gap'\) has no '='"),
        ("gap=0.1,,dup=0.2", r"item 2 \(''\) is empty"),
        ("gap=0.1,lag=0.2", r"item 2 \('lag=0.2'\): unknown fault 'lag'; known faults: gap, dup"),
        ("dup=lots", r"item 1 \('dup=lots'\): 'lots' is not a number"),
        ("corrupt=1.5", r"item 1 \('corrupt=1.5'\): 1.5 is not a probability"),
        ("reorder=-0.1", r"-0.1 is not a probability"),
        ("gap=0.1,gap=0.2", r"item 2 \('gap=0.2'\): fault 'gap' is given twice"),
    ],
)
def test_parse_names_the_bad_item(text: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        FaultRates.parse(text)


def test_fault_errors_sit_under_the_root() -> None:
    assert issubclass(FaultSpecError, ConfigError)
    assert issubclass(FaultSpecError, RunfoldError)


def test_rates_must_be_probabilities() -> None:
    with pytest.raises(FaultSpecError, match="gap=2"):
        FaultRates(gap=2)


def test_as_text_round_trips() -> None:
    rates = FaultRates(gap=0.01, corrupt=0.5)
    assert rates.as_text() == "gap=0.01,corrupt=0.5"
    assert FaultRates.parse(rates.as_text()) == rates
    assert rates.any and not FaultRates().any
