"""What the gateway needs of InfluxDB, whichever API speaks to it (influx_v1 or influx_v2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class InfluxStore(Protocol):
    async def write(self, lines: Sequence[str], *, rp: str | None = None) -> None:
        """One batch of line protocol to the store of retention policy `rp`."""

    async def ping(self) -> bool:
        """True when the server answers; never raises."""

    async def ensure_schema(self) -> None:
        """Databases, retention policies or buckets; StorageError when refused."""

    async def query(self, influxql: str) -> list[dict[str, Any]]:
        """InfluxQL rows (v1 only: v2 raises StorageError saying so)."""

    async def aclose(self) -> None: ...


__all__ = ["InfluxStore"]
