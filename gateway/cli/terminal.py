"""Lines for a person at a terminal: widths in columns (a Chinese character takes two), cut to
fit, and a live line that alert lines can be printed above."""

from __future__ import annotations

import logging
import shutil
import sys
import unicodedata
from typing import TextIO

MAX_WIDTH = 80  # what a line must fit: the smallest terminal people still use
_WIDE = frozenset({"W", "F"})


def columns(text: str) -> int:
    """Terminal columns `text` takes: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in _WIDE else 1 for ch in text)


def fit(text: str, width: int = MAX_WIDTH - 1) -> str:
    """`text` cut to `width` columns, with an ellipsis where it was cut."""
    if columns(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = 2 if unicodedata.east_asian_width(ch) in _WIDE else 1
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def wrap(text: str, width: int = MAX_WIDTH - 1, indent: str = "    ") -> list[str]:
    """`text` in lines of at most `width` columns, broken at spaces; the following lines
    indented. A word longer than a line is cut."""
    lead = text[: len(text) - len(text.lstrip(" "))]
    lines: list[str] = []
    current = lead
    for word in text[len(lead) :].split(" "):
        candidate = f"{current} {word}" if current.strip() else current + word
        if columns(candidate) <= width or not current.strip():
            current = candidate
            continue
        lines.append(current)
        current = lead + indent + word
    lines.append(current)
    return [fit(line, width) for line in lines]


def line_width(out: TextIO = sys.stderr) -> int:
    """Columns a line may use: the terminal's, at most 80, minus one so that writing the last
    column does not wrap."""
    if not out.isatty():
        return MAX_WIDTH - 1
    return min(shutil.get_terminal_size((MAX_WIDTH, 24)).columns, MAX_WIDTH) - 1


class Console:
    """Permanent lines (alerts, notices) and one live line rewritten in place below them on a
    terminal; elsewhere (a pipe, a log file) the live line is printed every `every` updates."""

    def __init__(self, out: TextIO = sys.stderr, *, live: bool | None = None) -> None:
        self.out = out
        self.live = out.isatty() if live is None else live
        self.width = line_width(out)
        self._status = ""

    def say(self, text: str, *, cut: bool = False) -> None:
        """A permanent line, wrapped to the width (or `cut` to one line)."""
        if self.live and self._status:
            self.out.write("\r\x1b[K")
        lines = [fit(text, self.width)] if cut else wrap(text, self.width)
        self.out.write("\n".join(lines) + "\n")
        if self.live and self._status:
            self.out.write(self._status)
        self.out.flush()

    def status(self, text: str, *, print_it: bool = True) -> None:
        """Replace the live line; off a terminal it is printed only when `print_it`."""
        text = fit(text, self.width)
        if self.live:
            self._status = text
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
        elif print_it:
            self.out.write(text + "\n")
            self.out.flush()

    def end_status(self) -> None:
        """Leave the live line as it is and go on below it."""
        if self.live and self._status:
            self.out.write("\n")
            self.out.flush()
        self._status = ""


class ConsoleLogHandler(logging.Handler):
    """Log records as console lines (wrapped, above the live line) instead of lines that
    would break into the middle of it."""

    def __init__(self, console: Console, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.console = console
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.say(self.format(record))
        except Exception:  # logging must never take the caller down
            self.handleError(record)
