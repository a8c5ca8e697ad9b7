"""`async with client:` for the gateway's clients that hold connections (InfluxDB, webhooks):
one definition of entering and leaving instead of a copy in each."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class ClosingClient(ABC):
    """`async with client:` closes its connections on the way out."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connection pool."""


__all__ = ["ClosingClient"]
