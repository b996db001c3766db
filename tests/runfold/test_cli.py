"""The CLI's registration pattern and its one-line errors."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from runfold.cli import RunfoldGroup, main
from schemas.errors import KafkaSetupError

pytestmark = pytest.mark.unit


def test_help_lists_registered_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "kafka" in result.output and "topics" in result.output


def test_lazy_command_is_imported_on_use_and_runfold_errors_are_one_line() -> None:
    group = RunfoldGroup(name="t")
    group.add_lazy_command("probe", f"{__name__}:_failing_command")
    result = CliRunner().invoke(group, ["probe"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: no broker here: do X"]


def test_lazy_target_must_name_an_attribute() -> None:
    with pytest.raises(ValueError, match="module:attribute"):
        RunfoldGroup(name="t").add_lazy_command("x", "just.a.module")


@click.command()
def _failing_command() -> None:
    raise KafkaSetupError("no broker here: do X")


def test_a_broken_command_module_does_not_break_the_others() -> None:
    group = RunfoldGroup(name="t")
    group.add_lazy_command("broken", "runfold.no_such_module:cmd")
    group.add_lazy_command("probe", f"{__name__}:_failing_command")
    listing = CliRunner().invoke(group, ["--help"])
    assert listing.exit_code == 0
    assert "unavailable" in listing.output and "probe" in listing.output
    used = CliRunner().invoke(group, ["broken"])
    assert used.exit_code == 1
    assert "runfold.no_such_module" in used.output
