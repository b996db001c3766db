"""``runfold consume``'s lifecycle and bounds options: parsed, validated before connecting."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from runfold.cli import main
from runfold.commands.lifecycle_options import Duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
    ],
)
def test_a_duration_is_seconds_or_has_a_unit(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "5 weeks", "m", "1e3"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(Exception, match="not a positive duration"):
        Duration().convert(text, None, None)


def test_a_retention_shorter_than_the_grace_ends_the_command_before_it_connects() -> None:
    result = CliRunner().invoke(
        main,
        [
            "consume",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--finished-grace",
            "2h",
            "--finished-retention",
            "1h",
        ],
    )
    assert result.exit_code == 2
    assert "must not be shorter than finished_grace_s" in result.output


def test_max_run_bytes_below_a_shrunk_state_is_refused() -> None:
    result = CliRunner().invoke(main, ["consume", "--max-run-bytes", "100"])
    assert result.exit_code == 2 and "--max-run-bytes" in result.output
