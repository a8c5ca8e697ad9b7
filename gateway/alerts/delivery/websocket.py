"""In-process fan-out for screens (the property firm's 大屏, R6): the API's WebSocket endpoint
subscribes a queue per connected screen and forwards what `publish` puts in.

Screens are live views, not the record (that is the alert list in the database), so a screen
that reads too slowly must not hold the gateway back or grow memory: its queue is bounded and
the oldest item makes room for the newest; what was dropped is counted, per subscriber and in
total. All methods are called on the event loop's thread (the delivery worker runs there);
`publish_threadsafe` is for other threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

DEFAULT_QUEUE = 256


class Hub:
    def __init__(self, *, queue_size: int = DEFAULT_QUEUE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._queues: dict[asyncio.Queue[dict[str, Any]], int] = {}  # queue -> dropped
        self.published = 0
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, maxsize: int | None = None) -> asyncio.Queue[dict[str, Any]]:
        """A new screen: its own bounded queue of payloads (call `unsubscribe` when it goes)."""
        self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize or self.queue_size)
        self._queues[queue] = 0
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.pop(queue, None)

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def dropped_for(self, queue: asyncio.Queue[dict[str, Any]]) -> int:
        """Items this subscriber lost because it read too slowly."""
        return self._queues.get(queue, 0)

    def publish(self, payload: Mapping[str, Any]) -> int:
        """Give every subscriber its own copy; returns how many subscribers received it (0:
        nobody did — the delivery worker does not count that as sent)."""
        self.published += 1
        for queue in list(self._queues):
            item = dict(payload)
            if queue.full():
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:  # pragma: no cover - single-threaded, cannot happen
                    pass
                else:
                    self._queues[queue] += 1
                    self.dropped += 1
            queue.put_nowait(item)
        return len(self._queues)

    def publish_threadsafe(self, payload: Mapping[str, Any]) -> None:
        """`publish` from another thread (no-op before the first subscriber)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.publish, dict(payload))


__all__ = ["DEFAULT_QUEUE", "Hub"]
