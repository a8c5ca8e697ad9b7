"""uvicorn as a part of a gridgate process, not its owner."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process's stop event ends it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_until(
    config: uvicorn.Config, stop: asyncio.Event, sockets: list[socket.socket] | None = None
) -> bool:
    """Serve until `stop` is set; False if the server never started (it could not listen)."""
    server = QuietServer(config)

    async def stopper() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stopper(), name="server-stop")
    try:
        await server.serve(sockets=sockets)
    finally:
        watcher.cancel()
    return bool(server.started)
