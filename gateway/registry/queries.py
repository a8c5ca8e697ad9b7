"""Helpers for queries over many ids, shared by the registry and the alert state beside it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

# Stay well below SQLite's bound-parameter limit in IN (...) lists.
IN_CHUNK = 500
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = ["IN_CHUNK", "chunks"]
