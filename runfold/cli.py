"""The ``runfold`` command line.

Adding a subcommand (one module, one line here)
-----------------------------------------------
1. Write a click command or group in its own module, ``runfold/commands/<name>.py``, taking
   the shared options (``--bootstrap-servers``, ``--prefix``, ``--group`` ...) and the
   settings from :mod:`runfold.commands.options`::

       import click

       from runfold.commands.options import connection_options, load_settings

       @click.command()
       @connection_options
       def fold(bootstrap_servers: str | None, prefix: str | None) -> None:
           "Fold agent-run-events into agent-runs."
           settings = load_settings(bootstrap_servers, prefix)

2. Register it below with ONE line, naming it by ``"module:attribute"``::

       main.add_lazy_command("fold", "runfold.commands.fold:fold")

The module is imported only when the command runs (or ``--help`` lists it), so a slow import
or a half-finished module of one command never breaks the others. Raise
:class:`schemas.errors.RunfoldError` (or a subclass) for a failure the user can act on: the
group prints it as one ``Error: ...`` line and exits 1, no traceback.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from schemas.errors import RunfoldError

__all__ = ["RunfoldGroup", "main"]


class RunfoldGroup(click.Group):
    """A click group whose subcommands are imported lazily and whose errors are one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, str] = {}

    def add_lazy_command(self, name: str, target: str) -> None:
        """Register ``target`` (``"package.module:attribute"``) as subcommand ``name``."""
        if ":" not in target:
            raise ValueError(f"lazy command target must be 'module:attribute', not {target!r}")
        self._lazy[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy and cmd_name not in self.commands:
            target = self._lazy[cmd_name]
            module_name, attribute = target.split(":", 1)
            try:
                command = getattr(importlib.import_module(module_name), attribute)
                if not isinstance(command, click.Command):
                    raise TypeError(f"{target} is not a click command")
            except Exception as exc:  # one broken module must not break every other command
                return _unavailable(cmd_name, target, exc)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RunfoldError as exc:
            # One sentence the user can act on; the cause is kept for --debug-style tools.
            raise click.ClickException(str(exc)) from exc


def _unavailable(name: str, target: str, error: Exception) -> click.Command:
    """A stand-in for a command whose module failed to import: listed, and explains on use."""
    reason = f"{type(error).__name__}: {error}"

    def fail() -> None:
        raise click.ClickException(f"`runfold {name}` is unavailable ({target}): {reason}")

    return click.Command(name, callback=fail, short_help=f"(unavailable: {reason})"[:80])


@click.group(cls=RunfoldGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runfold")
def main() -> None:
    """runfold: fold AI-agent run events from Kafka into trusted Run state, exactly once."""


assert isinstance(main, RunfoldGroup)
# -- subcommands: one line each ----------------------------------------------------------
main.add_lazy_command("kafka", "runfold.commands.kafka:kafka")
main.add_lazy_command("topics", "runfold.commands.topics:topics")
main.add_lazy_command("consume", "runfold.commands.consume:consume")
main.add_lazy_command("runs", "runfold.commands.runs:runs")
main.add_lazy_command("produce", "runfold.commands.produce:produce")
main.add_lazy_command("top", "runfold.commands.top:top")
main.add_lazy_command("export", "runfold.commands.export:export")
main.add_lazy_command("sql", "runfold.commands.export:sql")
main.add_lazy_command("bench", "runfold.commands.bench:bench")
main.add_lazy_command("demo", "runfold.commands.demo:demo")
main.add_lazy_command("serve", "serve.cli:serve")
