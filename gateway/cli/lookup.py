"""What the operator commands (`gridgate alerts`, `gridgate query`) share: places as people
type them (``b03``, ``b03/u2``, ``g01`` or a whole key ``xf/g01/b03``), the registry's names
for them, China time, durations and columns.

Names come from the registry and are shown only when they pass the registry's own rules for
names (`gateway.registry.identifiers`): a registry written before those rules may hold a
place named like a person, and it is printed as ``<redacted>``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from devices.places import KEY_SEP
from gateway.cli.terminal import columns, fit
from gateway.registry import PlaceNode, Registry
from gateway.registry.identifiers import shown_key, shown_place_name

CST = timezone(timedelta(hours=8), "UTC+8")  # China has one time zone, without summer time
NS = 1_000_000_000
PLACE_HINT = "a place is a code path such as b03, b03/u2, g01, or a whole key such as xf/g01/b03"
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class UsageError(ValueError):
    """What the operator typed cannot be answered (exit status 2); the message says what to
    type instead."""


def registry_missing(url: str) -> str | None:
    """Why the registry cannot be used, for a SQLite file that does not exist (opening it
    would create an empty one and every answer would be "nothing"); None otherwise."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        path = Path(url.removeprefix(prefix))
        if not path.exists():
            return (
                f"no registry at {path}: import a fleet file first (gridgate registry import"
                " FILE) or set GRIDGATE_REGISTRY_URL"
            )
    return None


def registry_ready(command: str, url: str) -> bool:
    """False, having said why on stderr, when `registry_missing` finds no registry: the
    commands that only read it stop there (exit status 2) instead of answering "nothing"."""
    missing = registry_missing(url)
    if missing:
        print(f"gridgate {command}: {missing}", file=sys.stderr)
    return missing is None


def _walk(nodes: Sequence[PlaceNode]) -> list[PlaceNode]:
    out: list[PlaceNode] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.children)
    return out


def resolve_places(registry: Registry, text: str, *, community: str | None = None) -> list[str]:
    """The keys of the registry's places that `text` names: every place whose key ends with
    the codes typed (``b03/u2`` is unit u2 of every building b03), within `community` when
    given. Empty when none does."""
    codes = text.strip().strip(KEY_SEP).split(KEY_SEP)
    if not codes or any(not c for c in codes):
        return []
    n = len(codes)
    found = []
    for node in _walk(registry.place_tree()):
        parts = node.key.split(KEY_SEP)
        if parts[-n:] == codes and (community is None or parts[0] == community):
            found.append(node.key)
    return sorted(found)


def communities(registry: Registry) -> list[str]:
    return [node.code for node in registry.place_tree()]


class PlaceNames:
    """Display names of place keys, asked of the registry once per key."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._cache: dict[str, tuple[str, ...]] = {}

    def path(self, key: str) -> tuple[str, ...]:
        """Names from the community down to `key` ("" where unknown), checked for display."""
        if key not in self._cache:
            names = self._registry.place_names(key) if key else ()
            self._cache[key] = tuple(shown_place_name(n) if n else "" for n in names)
        return self._cache[key]

    def label(self, key: str) -> str:
        """How a screen names a place: from the building down ("3号楼 2单元 1201"); a grid or
        community by its own name; the key when the registry has no name."""
        names = self.path(key)
        inner = [n for n in names[2:] if n]
        if inner:
            return " ".join(inner)
        own = [n for n in names if n]
        return own[-1] if own else shown_key(key)

    def full(self, key: str) -> str:
        """Every name from the community down, for a header ("幸福小区 第一网格 3号楼")."""
        return " ".join(n for n in self.path(key) if n) or shown_key(key)


def local_time(ns: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A nanosecond stamp in China time (UTC+8), where the community and its operators are."""
    return datetime.fromtimestamp(ns / NS, UTC).astimezone(CST).strftime(fmt)


def age(seconds: float) -> str:
    """45s, 12m, 3h, 2d: how long ago, in at most four columns."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def parse_duration(text: str) -> int:
    """Seconds of ``90s``, ``30m``, ``6h``, ``7d``, ``2w`` or ``1h30m``; ValueError otherwise."""
    compact = text.strip().lower()
    pos, total = 0, 0
    for m in _DURATION.finditer(compact):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not compact or pos != len(compact) or total <= 0:
        raise ValueError(f"{text!r} is not a duration: use e.g. 90s, 30m, 6h, 7d or 1h30m")
    return total


def cell(text: str, width: int, *, right: bool = False) -> str:
    """`text` in exactly `width` terminal columns (a Chinese character takes two), cut with an
    ellipsis when longer."""
    text = fit(text, width)
    gap = " " * max(0, width - columns(text))
    return gap + text if right else text + gap


__all__ = [
    "CST",
    "PLACE_HINT",
    "PlaceNames",
    "UsageError",
    "age",
    "cell",
    "communities",
    "local_time",
    "parse_duration",
    "registry_missing",
    "resolve_places",
]
