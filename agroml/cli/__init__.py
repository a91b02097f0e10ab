"""The `agroml` command line: thin Typer commands over the library (see DESIGN.md)."""
