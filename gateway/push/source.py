"""Pushed messages as a `MessageSource`, and one source made of two.

A platform's HTTP request becomes messages in the same pipeline as MQTT's: `PushSource.submit`
queues them with a ticket and returns a future that completes when the pipeline acks the last
of them — after their durable hand-off (InfluxDB or the fsync'ed spool, the alerts accepted,
the dead letters committed). Only then is the request answered 200; a request that gets no
answer in time is answered 503 and the platform sends it again (its retry is the at-least-once
mechanism, as the broker's redelivery is for MQTT). The queue is bounded: when it is full a
push is refused at once with 503 rather than held.

`MergedSource` lets the pipeline read MQTT and push messages as one source: each message's
ack goes back to the source it came from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.mqtt.source import Message, MessageSource


@dataclass(slots=True, eq=False)
class _Ticket:
    """One request's messages: done when the pipeline has acked all of them."""

    remaining: int
    done: asyncio.Future[None] = field(repr=False)

    def acked(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and not self.done.done():
            self.done.set_result(None)


class PushSource:
    """Messages from HTTP pushes, queued for the pipeline; bounded by `max_pending`."""

    def __init__(self, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self._buffer: collections.deque[Message] = collections.deque()
        self._pending = 0  # submitted, not yet acked
        self._wake: asyncio.Event | None = None

    def submit(self, items: Sequence[tuple[str, bytes]]) -> asyncio.Future[None] | None:
        """Queue (topic, payload) pairs of one request; the future completes once all are
        acked. None when the queue has no room for them (answer 503: the platform retries)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not items:
            done.set_result(None)
            return done
        if self._pending + len(items) > self.max_pending:
            return None
        ticket = _Ticket(len(items), done)
        now = time.time_ns()
        self._buffer.extend(Message(topic, payload, now, ticket) for topic, payload in items)
        self._pending += len(items)
        self._waker().set()
        return done

    def owns(self, message: Message) -> bool:
        return isinstance(message.token, _Ticket)

    def _waker(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    async def next_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        buffer = self._buffer
        if not buffer and timeout_s > 0:
            wake = self._waker()
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout_s)
        n = min(max_messages, len(buffer))
        return [buffer.popleft() for _ in range(n)]

    def ack(self, messages: Sequence[Message]) -> None:
        for message in messages:
            if isinstance(message.token, _Ticket):
                self._pending -= 1
                message.token.acked()

    @property
    def connected(self) -> bool:
        return True

    @property
    def pending(self) -> int:
        return self._pending


class MergedSource:
    """MQTT and pushes as one source; acks go back to where each message came from."""

    def __init__(self, mqtt: MessageSource, push: PushSource) -> None:
        self.mqtt = mqtt
        self.push = push

    async def next_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        batch = await self.mqtt.next_batch(max_messages, 0)
        if len(batch) < max_messages:
            batch += await self.push.next_batch(max_messages - len(batch), 0)
        if batch or timeout_s <= 0:
            return batch
        # Nothing now: wait on both. A waiter takes messages only after its wait has ended,
        # so cancelling the one that lost takes nothing from it.
        waiters = [
            asyncio.ensure_future(self.mqtt.next_batch(max_messages, timeout_s)),
            asyncio.ensure_future(self.push.next_batch(max_messages, timeout_s)),
        ]
        _done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        out: list[Message] = []
        for waiter in waiters:
            if waiter.done() and not waiter.cancelled():
                out += waiter.result()
        return out

    def ack(self, messages: Sequence[Message]) -> None:
        pushed = [m for m in messages if self.push.owns(m)]
        if pushed:
            self.push.ack(pushed)
            self.mqtt.ack([m for m in messages if not self.push.owns(m)])
        else:
            self.mqtt.ack(messages)

    @property
    def connected(self) -> bool:
        return self.mqtt.connected
