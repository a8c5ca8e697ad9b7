"""Live feeds for screens and members' pages: alert changes and device status over WebSocket.

One poller per API process reads the shared alert table (every `api_feed_poll_s`, alerts whose
`updated_ns` moved, deduplicated by each alert's step number) — so a change made by any
gateway or API process reaches every client, never only those of the process that made it.
Each client has a bounded queue (`api_feed_queue`); a client that falls that far behind is
closed with code 4008 ("too slow") instead of being buffered without bound, and reconnects to a
fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from gateway.alerts.model import Alert
from gateway.alerts.service import is_retryable
from gateway.alerts.store import AlertRow, to_alert
from gateway.api.accounts import Principal
from gateway.registry import Registry

log = logging.getLogger(__name__)

SLOW_CLOSE_CODE = 4008
UNAUTHORISED_CLOSE_CODE = 4401
OVERLAP_NS = 5_000_000_000  # rows whose updated_ns lags a little (another process's clock)


class TooSlow(Exception):
    """The client's queue was full."""


@dataclass(eq=False)
class Subscriber:
    caller: Principal
    queue: asyncio.Queue[dict[str, Any]]
    slow: bool = False
    last_status: Any = None

    def offer(self, message: dict[str, Any]) -> None:
        if self.slow:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.slow = True
            # wake the sender so that it closes the socket now
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait({"type": "_slow"})


@dataclass
class Feed:
    """Subscribers of one feed (alerts or status) in this process."""

    name: str
    queue_size: int
    subscribers: set[Subscriber] = field(default_factory=set)
    on_count: Callable[[str, int], None] = lambda name, n: None

    def subscribe(self, caller: Principal) -> Subscriber:
        sub = Subscriber(caller, asyncio.Queue(self.queue_size))
        self.subscribers.add(sub)
        self.on_count(self.name, len(self.subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self.on_count(self.name, len(self.subscribers))


class AlertPoller:
    """Finds alerts changed since the last look, in the shared database."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._seen: dict[int, tuple[int, int]] = {}  # alert id → (event_seq, updated_ns)
        self._watermark: int | None = None

    def changes(self) -> list[Alert]:
        with self._registry.reading() as s:
            if self._watermark is None:
                self._watermark = s.scalar(select(func.max(AlertRow.updated_ns))) or 0
                return []
            rows = s.scalars(
                select(AlertRow)
                .where(AlertRow.updated_ns >= self._watermark - OVERLAP_NS)
                .order_by(AlertRow.updated_ns, AlertRow.id)
                .limit(5000)
            ).all()
            fresh = []
            for row in rows:
                if self._seen.get(row.id, (-1, 0))[0] >= row.event_seq:
                    continue
                self._seen[row.id] = (row.event_seq, row.updated_ns)
                fresh.append(to_alert(row))
                self._watermark = max(self._watermark, row.updated_ns)
        floor = self._watermark - 2 * OVERLAP_NS
        self._seen = {k: v for k, v in self._seen.items() if v[1] >= floor}
        return fresh


def poll_failed(feed: str, exc: Exception) -> None:
    """A feed's poll only reads: nothing is lost or dead-lettered when one fails, and the next
    round is the retry. The database being away is a warning; anything else is a bug, logged
    as an error (by type: a message may quote a value) while the feed keeps serving."""
    if is_retryable(exc):
        log.warning("%s: the database is unavailable (%s); polling again", feed,
                    type(exc).__name__)  # fmt: skip
    else:
        log.error("%s: polling failed (%s): a bug; polling again", feed, type(exc).__name__)


async def run_alert_feed(
    feed: Feed,
    poller: AlertPoller,
    render: Callable[[Alert], dict[str, Any]],
    stop: asyncio.Event,
    every_s: float,
    hint: asyncio.Event | None = None,
) -> None:
    """Poll every `every_s`, or at once when `hint` is set (alerts changed in this process)."""
    hint = hint or asyncio.Event()
    while not stop.is_set():
        hint.clear()
        try:
            changed = await asyncio.to_thread(poller.changes)
        except Exception as exc:
            poll_failed("alert feed", exc)
            changed = []
        for alert in changed:
            message = {"type": "alert", "alert": render(alert)}
            for sub in list(feed.subscribers):
                if sub.caller.sees(alert.place):
                    sub.offer(message)
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(hint.wait())]
        await asyncio.wait(waits, timeout=every_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()


async def run_status_feed(
    feed: Feed,
    summary: Callable[[tuple[str, ...]], dict[str, Any]],
    stop: asyncio.Event,
    every_s: float,
) -> None:
    """Each client gets its places' status summary when it changed (one query per distinct
    set of places per round, whatever the number of clients)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        scopes = {sub.caller.scopes for sub in feed.subscribers}
        done: dict[tuple[str, ...], dict[str, Any]] = {}
        for scope in scopes:
            try:
                done[scope] = await asyncio.to_thread(summary, scope)
            except Exception as exc:
                poll_failed("status feed", exc)
        for sub in list(feed.subscribers):
            status = done.get(sub.caller.scopes)
            if status is not None and status != sub.last_status:
                sub.last_status = status
                sub.offer({"type": "status", "status": status})


__all__ = [
    "SLOW_CLOSE_CODE",
    "UNAUTHORISED_CLOSE_CODE",
    "AlertPoller",
    "Feed",
    "Subscriber",
    "run_alert_feed",
    "run_status_feed",
]
