"""The one ``tutti`` command line: thin subcommands over the Python API."""

_fast_exit = False


def request_fast_exit() -> None:
    """Let the console script end the process with ``os._exit`` once the command has returned successfully.

    Tearing down an interpreter that imported torch takes about half a second (module and object finalisation)
    and does nothing a finished command needs: a command calls this only after its outputs are closed and
    published. Standard streams are flushed first; ``main(argv)`` called in-process (tests) never exits this way.
    """
    global _fast_exit
    _fast_exit = True


def fast_exit_requested() -> bool:
    """Whether the command that just ran asked for :func:`request_fast_exit`."""
    return _fast_exit
