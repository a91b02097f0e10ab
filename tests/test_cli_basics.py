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
