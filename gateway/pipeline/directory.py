"""The registry's devices as an in-memory dictionary for the hot path.

One lookup per reading must not touch the database, so the directory holds a snapshot and
reloads it in a worker thread every `refresh_s` — a device imported with `registry import`
is known to a running gateway within that time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from devices.info import DeviceInfo

log = logging.getLogger(__name__)


class DeviceSnapshot:
    def __init__(self, load: Callable[[], Sequence[DeviceInfo]]) -> None:
        self._load = load
        self._devices: dict[str, DeviceInfo] = {}
        self.on_reload: list[Callable[[Sequence[DeviceInfo]], None]] = []
        # Callbacks that query a database: run in a worker thread, so they must only swap in
        # what they build (never mutate what the event loop reads).
        self.on_reload_blocking: list[Callable[[Sequence[DeviceInfo]], None]] = []

    def lookup(self, device_id: str) -> DeviceInfo | None:
        return self._devices.get(device_id)

    def communities(self) -> list[str]:
        """The communities of the registered devices (for alerts about the gateway itself)."""
        return sorted({info.location.community for info in self._devices.values()})

    def __len__(self) -> int:
        return len(self._devices)

    def reload(self) -> int:
        """Load synchronously (start-up); returns the number of devices."""
        infos = self._load()
        self._devices = {info.device_id: info for info in infos}
        for callback in (*self.on_reload, *self.on_reload_blocking):
            callback(infos)
        return len(infos)

    async def keep_fresh(self, stop: asyncio.Event, refresh_s: float) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), refresh_s)
                return
            except TimeoutError:
                pass
            try:
                infos = await asyncio.to_thread(self._load)
            except Exception as exc:  # the old snapshot stays valid; say why it is old
                log.error("registry reload failed, keeping the previous snapshot: %s", exc)
                continue
            self._devices = {info.device_id: info for info in infos}
            for callback in self.on_reload:
                callback(infos)
            for callback in self.on_reload_blocking:
                try:
                    await asyncio.to_thread(callback, infos)
                except Exception as exc:
                    log.error("registry reload: %s failed: %s", callback.__name__, exc)
