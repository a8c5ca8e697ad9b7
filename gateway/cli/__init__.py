"""The `gridgate` command tree."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from gateway.cli.main import build_parser
from gateway.cli.main import main as _main


def main(argv: Sequence[str] | None = None) -> int:
    """`gridgate`, quiet when its reader goes away (`gridgate alerts list | head`): a closed
    pipe is not an error worth a traceback."""
    try:
        return _main(argv)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail
        return 141  # 128 + SIGPIPE, as a shell reports it


__all__ = ["build_parser", "main"]
