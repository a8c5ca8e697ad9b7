"""The `gridgate` command tree."""

from gateway.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
