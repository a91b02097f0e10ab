"""The `agroml` application: lists the commands, loads each one's module when it runs, renders errors.

Why a custom group, three reasons:
- every library error becomes ``error: <message> (<fix>)`` on stderr with the error's exit code (1
  failed, 2 bad usage) in one place, and AGROML_DEBUG=1 shows the traceback;
- commands are loaded lazily: the command modules import the library, and the library imports pandas,
  pyarrow and numpy (about a second), which `agroml --help` and `agroml <other command>` do not need.
  The one-line summaries below are what `agroml --help` lists; tests/test_cli_basics.py checks that
  each equals the first line of its command's docstring, so they cannot drift;
- the commands that use TensorFlow load it first with its start-up chatter filtered off stderr (cli/quiet.py).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any, Literal

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from agroml import __version__
from agroml.cli import output
from agroml.cli.help import CONTEXT_SETTINGS, tidy_params
from agroml.cli.quiet import load_tensorflow_quietly
from agroml.core.errors import AgromlError

# TensorFlow's C++ logging goes to stderr; keep it to errors so --json users see only data.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: command -> (module under agroml.cli that registers it, its one-line summary), in `--help` order.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "data",
        "Create a deterministic synthetic AgroShield data set: rows in the store, drawn photos in the cache.",
    ),
    "import": ("data", 'Import a folder-per-class image collection as confirmed rows (source "import").'),
    "stats": (
        "stats",
        "Feedback counts, the deployed model's feedback accuracy, trainable rows per class, readiness.",
    ),
    "distribution": (
        "stats",
        "Where and when the rows are: counts by class, crop, region, season or month of the year.",
    ),
    "report": (
        "report",
        "Write the monitoring page: one HTML file with charts and tables, readable offline in any browser.",
    ),
    "export": ("export", "Write records to one file per model type: `<model>_<scope>_<UTC timestamp>.<ext>`."),
    "pull": ("pull", "Copy rows from Supabase into the local store and their images into the image cache."),
    "train": ("train", "Train a classifier for one model type on the store's confirmed and corrected rows."),
    "runs": (
        "models",
        "List every training run, newest first: state, time taken, test accuracy and macro F1, folder.",
    ),
    "status": ("models", "Show the training(s) running now with their epoch and latest metrics."),
    "evaluate": (
        "models",
        "Measure a saved model on rows it never trained on: its recorded test split, or rows newer than its data.",
    ),
    "predict": (
        "models",
        "Name the pest, disease or storage condition in photos with a saved model, with probabilities.",
    ),
    "promote": (
        "production",
        "Make a run the production model: copied to `models/<type>/production/`, the previous one archived.",
    ),
    "publish": (
        "production",
        "Upload the production model to Supabase Storage, then point `<type>/production.json` at it.",
    ),
    "rollback": ("production", "Put the previous production model back, byte for byte, from `models/<type>/archive/`."),
    "history": (
        "production",
        "List every promotion, refusal, no-op and rollback: when, which runs, the figures compared, by which command.",
    ),
    "performance": (
        "models",
        "The deployed model's feedback accuracy from farmers, next to its production run's test figures.",
    ),
    "serve": ("serve", "Serve the HTTP API (the FastAPI router under /api/model-training) with uvicorn."),
    "retrain": (
        "retrain",
        "Pull, check, train, gate and promote in one unattended command (for cron / Task Scheduler).",
    ),
    "doctor": (
        "doctor",
        "Check that this machine is ready: Python, packages, TensorFlow, folders, store, settings, Supabase key.",
    ),
}
#: Commands that load TensorFlow: its start-up lines are kept off the user's terminal while they run.
LOADS_TENSORFLOW = frozenset({"train", "evaluate", "predict", "doctor", "promote", "retrain"})
MARKUP: Literal["markdown"] = "markdown"


class AgromlCommand(TyperCommand):
    """A command whose help shows readable types (cli/help.py) and that loads TensorFlow quietly if it uses it."""

    def get_params(self, ctx: Any) -> list[Any]:
        return tidy_params(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        if self.name in LOADS_TENSORFLOW:
            load_tensorflow_quietly()
        return super().invoke(ctx)


def load_command(name: str) -> TyperCommand:
    """Import the module of command ``name`` and build its click command (as Typer would have)."""
    module = importlib.import_module(f"agroml.cli.{COMMANDS[name][0]}")
    scratch = typer.Typer(rich_markup_mode=MARKUP)
    module.register(scratch)
    for info in scratch.registered_commands:
        assert info.callback is not None
        if (info.name or typer.main.get_command_name(info.callback.__name__)) == name:
            if info.cls in (None, TyperCommand):  # Typer fills in its own class: use ours
                info.cls = AgromlCommand
            command = typer.main.get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=MARKUP)
            assert isinstance(command, TyperCommand)
            return command
    raise LookupError(f"agroml.cli.{COMMANDS[name][0]} registers no command {name!r}")


class LazyCommands(MutableMapping[str, Any]):
    """The group's ``commands``: every name is known up front; a command is built on first access."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = load_command(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*COMMANDS, *(n for n in self._loaded if n not in COMMANDS)])

    def __len__(self) -> int:
        return len(set(COMMANDS) | set(self._loaded))

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._loaded


class AgromlGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = LazyCommands()
        self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if self._listing and cmd_name in COMMANDS:
            # `agroml --help` lists names and summaries: a stand-in, so no command module is imported
            return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name][1], rich_markup_mode=MARKUP)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_params(self, ctx: Any) -> list[Any]:
        return tidy_params(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AgromlError as exc:
            if os.environ.get("AGROML_DEBUG"):
                raise
            output.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            output.error("interrupted")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=AgromlGroup,
    name="agroml",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=MARKUP,
    context_settings=CONTEXT_SETTINGS,
    help="Turn AgroShield farmers' feedback into better crop pest, disease and storage models.\n\n"
    "Start with **agroml demo** (synthetic data, no account needed), then "
    "**agroml stats** and **agroml train --model pest**. Settings come from flags, the "
    "environment and .env; **agroml doctor** shows them.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agroml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Turn AgroShield farmers' feedback into better crop pest, disease and storage models."""


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":  # `python -m agroml.cli.main` (tests run it in a subprocess)
    main()
