"""How `--help` shows parameters: `-h` as well as `--help`, and types a newcomer can read.

Why: Typer prints a type for every parameter, including ``<bool>`` after each flag (which takes no
value), ``<list[str]>`` after a list argument, ``<int range>`` before ``[x>=1]`` and ``{folder}`` in
the usage line. Typer builds its parameter objects itself and has no hook for their class, so the
command classes in cli/main.py pass their parameters through :func:`tidy_params`, which gives each
one a subclass that only changes how it is displayed (parsing is untouched).
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperOption

#: Every command takes -h as well as --help (click hands these settings down to each subcommand).
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

_LIST = re.compile(r"<list\[(.+?)\]>")
_RANGE = re.compile(r"<(\w+) range>")


def plain_type(shown: str | None) -> str | None:
    """``<list[str]>`` -> ``<str>``, ``<int range>`` -> ``<int>`` (the range itself is shown after it)."""
    if shown is None:
        return None
    return _RANGE.sub(r"<\1>", _LIST.sub(r"<\1>", shown))


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:  # a flag takes no value: no type to show
            return None
        return plain_type(super().display_type_rich(ctx))


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return plain_type(super().display_type_rich(ctx))

    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


def tidy_params(params: list[Any]) -> list[Any]:
    """The same parameter objects, each displayed by the subclass above (in place; idempotent)."""
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _Option
        elif type(param) is TyperArgument:
            param.__class__ = _Argument
    return params
