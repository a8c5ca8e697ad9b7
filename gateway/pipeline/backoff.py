"""Waiting between attempts while the outside world is down (InfluxDB, the registry database,
the dead-letter disk): one helper instead of a hand-written doubling loop at every hand-off."""

from __future__ import annotations

import asyncio
import contextlib


class Backoff:
    """Doubling waits from `first_s` up to `max_s`. `wait` sleeps the current delay (or until
    `stop` is set) and doubles it; a new `Backoff` per outage starts short again."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self.delay = first_s
        self.max_s = max_s
        self.attempts = 0

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        self.attempts += 1
        if stop is None:
            await asyncio.sleep(self.delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.delay)
        self.delay = min(self.delay * 2, self.max_s)


__all__ = ["Backoff"]
