"""``python -m tutti``: the ``tutti`` CLI where the console script is not installed (e.g. ``PYTHONPATH=src``)."""

from tutti.cli.main import main

if __name__ == "__main__":
    main()
