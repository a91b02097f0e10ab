"""The `agroml` application: registers each command module and turns typed errors into one line.

Why a custom group: every library error becomes ``error: <message> (<fix>)`` on stderr with the
error's exit code (1 failed, 2 bad usage) in one place, and AGROML_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from agroml import __version__
from agroml.cli import data, doctor, export, models, output, pull, stats, train
from agroml.core.errors import AgromlError

# TensorFlow's C++ logging goes to stderr; keep it to errors so --json users see only data.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class AgromlGroup(TyperGroup):
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
    rich_markup_mode="markdown",
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


def _register() -> None:
    # Each module adds its commands; imported here so `agroml --help` lists them in this order.

    for module in (data, stats, export, pull, train, models, doctor):
        module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":  # `python -m agroml.cli.main` (tests run it in a subprocess)
    main()
