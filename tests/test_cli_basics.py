"""The application shell: version, help on every command, error rendering."""

from __future__ import annotations

from agroml import __version__


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"agroml {__version__}"


def test_every_command_has_help_with_an_example(cli):
    import typer.main

    from agroml.cli.main import app

    group = typer.main.get_command(app)
    names = sorted(group.commands)
    assert names, "no commands registered"
    for name in names:
        result = cli(name, "--help")
        assert result.exit_code == 0, name
        assert "Example" in result.output, f"`agroml {name} --help` shows no example"


def test_help_keeps_every_placeholder(cli):
    """Help is rendered as Markdown, where an unquoted `<type>` is an HTML tag and silently vanishes
    ("writes models//<run_id>/"): every <placeholder> of a command's docstring must reach the screen."""
    import re

    import typer.main

    from agroml.cli.main import app

    group = typer.main.get_command(app)
    for name, command in sorted(group.commands.items()):
        text = " ".join((command.help or "").split())
        shown = " ".join(cli(name, "--help").output.split())
        for placeholder in re.findall(r"<[^<>]+>", text):
            assert placeholder in shown, f"`agroml {name} --help` drops {placeholder}"
