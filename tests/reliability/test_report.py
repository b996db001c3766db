"""The reliability report renders the measured rows into docs/reliability.md's tables."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from report import BEGIN, END, render
from truth import Row

pytestmark = pytest.mark.unit


def test_rows_become_the_fault_matrix_and_the_catalogue(tmp_path: Path) -> None:
    row = Row("2. leader kill", "kill -9 | leader", 1234, 0, 1, 0, False, 3.25, {"kills": 5})
    (tmp_path / "2.json").write_text(json.dumps(asdict(row)))
    catalogue = [
        {"case": "empty", "input": "b''", "expected": "dlq:empty", "observed": "dlq:empty"},
        {"case": "x", "input": "y", "expected": "applied", "observed": "dlq:truncated"},
    ]
    (tmp_path / "bad-inputs.json").write_text(json.dumps(catalogue))

    text = render(tmp_path)

    assert text.startswith(BEGIN) and text.endswith(END)
    assert "| 2. leader kill | kill -9 \\| leader | 1,234 | 0 | 1 | 0 | **no** | 3.2 s |" in text
    assert "- **2. leader kill**: kills: 5" in text
    assert "| 1 | empty | b'' | `dlq:empty` | dlq:empty |" in text
    assert "| 2 | x | y | `applied` | **dlq:truncated** |" in text
