"""The one ``tutti`` command line: thin subcommands over the Python API."""
