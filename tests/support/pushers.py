"""Pushing to the gateway's push listener as a platform or a terminal does: waiting for it to
listen, and senders that resend whatever got no 200 (the platform's retry, which is what
makes a push at-least-once), counting the answers a killed gateway never gave."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tests.support.polling import wait_for

Request = tuple[str, bytes, str]  # path, body, content type


async def wait_for_listener(http: httpx.AsyncClient, probe: str) -> None:
    """Until anything answers at `probe` (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await http.get(probe)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@dataclass
class Resenders:
    """`senders` tasks pushing requests 0..total-1 until each gets its 200; `request(i,
    attempt)` makes the i-th (a terminal makes a new multipart boundary on every attempt)."""

    http: httpx.AsyncClient
    total: int
    request: Callable[[int, int], Request]
    senders: int = 8
    answered: int = 0
    unanswered: int = 0  # sent, and the connection died before an answer: a kill's window
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.total):
            queue.put_nowait(i)
        self._tasks = [asyncio.create_task(self._send(queue)) for _ in range(self.senders)]

    async def finished(self, timeout_s: float) -> None:
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout_s)

    async def through_a_kill(
        self, proc: subprocess.Popen[bytes], restart: Callable[[], subprocess.Popen[bytes]]
    ) -> subprocess.Popen[bytes]:
        """Send everything; SIGKILL the gateway once a quarter is answered, start it again,
        and return the new process once every request has its 200 (asserted, with at least
        one cut off by the kill before its answer)."""
        self.start()
        await wait_for(lambda: self.answered >= self.total // 4, 60, "a quarter answered")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = restart()
        await self.finished(120)
        assert self.answered == self.total
        assert self.unanswered >= 1, "the kill should have cut requests off before their answer"
        return proc

    async def _send(self, queue: asyncio.Queue[int]) -> None:
        while not queue.empty():
            i, attempt = queue.get_nowait(), 0
            while True:
                attempt += 1
                path, body, content_type = self.request(i, attempt)
                try:
                    r = await self.http.post(path, content=body,
                                             headers={"content-type": content_type})  # fmt: skip
                    if r.status_code == 200:
                        self.answered += 1
                        break
                except httpx.RemoteProtocolError:
                    self.unanswered += 1
                except httpx.TransportError:
                    pass  # refused: the gateway is down
                await asyncio.sleep(0.05)
