"""``python -m agroml``: the same command line as the ``agroml`` script (handy on Windows)."""

from agroml.cli.main import main

if __name__ == "__main__":
    main()
