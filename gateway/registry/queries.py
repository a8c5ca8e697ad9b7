"""Helpers for queries over many ids, shared by the registry and the alert state beside it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, false, or_

# Stay well below SQLite's bound-parameter limit in IN (...) lists.
IN_CHUNK = 500
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def under(column: Any, keys: Sequence[str]) -> ColumnElement[bool]:
    """`column` (a place key) is one of `keys` or inside one of them (none: nothing is)."""
    if not keys:
        return false()
    return or_(*(or_(column == k, column.startswith(k + "/", autoescape=True)) for k in keys))


__all__ = ["IN_CHUNK", "chunks", "under"]
