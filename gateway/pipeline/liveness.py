"""Online/offline per device (R1.3), from its traffic, its heartbeats and its MQTT last will.

A device is online while it keeps sending; it goes offline when its `status` channel says so
(an `offline` status is what a device's MQTT last-will carries) or when it has been silent
longer than the timeout of its power class — battery devices report far less often than mains
devices. Changes are returned as `LivenessEvent`s: stored, written to the registry, and consumed
by the alert engine. The clock is the gateway's (receive time), never the device's.

No I/O here: the pipeline feeds it and drains its events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from devices.families import Family, StatusKind
from devices.info import DeviceInfo
from devices.liveness import LivenessEvent
from devices.location import Location

NS = 1_000_000_000
DEFAULT_TIMEOUTS_S: Mapping[str, float] = {"mains": 600.0, "battery": 4 * 3600.0}


@dataclass(slots=True)
class _Device:
    family: Family
    location: Location
    timeout_ns: int
    last_seen_ns: int
    online: bool | None  # None: not seen since the gateway started


class LivenessTracker:
    """State per device; `observe` on every accepted message, `sweep` now and then."""

    def __init__(
        self,
        started_ns: int,
        timeouts_s: Mapping[str, float] = DEFAULT_TIMEOUTS_S,
        devices: Iterable[DeviceInfo] = (),
    ) -> None:
        self._timeouts = {power: int(s * NS) for power, s in timeouts_s.items()}
        self._default_timeout = self._timeouts.get("mains", int(DEFAULT_TIMEOUTS_S["mains"] * NS))
        self._started_ns = started_ns
        self._devices: dict[str, _Device] = {}
        self._dirty: set[str] = set()  # changed since the registry was last told
        for info in devices:
            self.register(info)

    def register(self, info: DeviceInfo) -> None:
        """Track a registered device; never seen yet, it goes offline after one timeout."""
        known = self._devices.get(info.device_id)
        timeout = self._timeouts.get(info.power, self._default_timeout)
        if known is None:
            self._devices[info.device_id] = _Device(
                info.family, info.location, timeout, self._started_ns, None
            )
        else:
            known.family, known.location, known.timeout_ns = info.family, info.location, timeout

    def register_all(self, infos: Iterable[DeviceInfo]) -> None:
        for info in infos:
            self.register(info)

    def observe(
        self,
        device_id: str,
        family: Family,
        location: Location,
        at_ns: int,
        status: str | None = None,
    ) -> LivenessEvent | None:
        """Record traffic from a device; returns the change it causes, if any."""
        device = self._devices.get(device_id)
        if device is None:
            device = _Device(family, location, self._default_timeout, at_ns, None)
            self._devices[device_id] = device
        if at_ns > device.last_seen_ns:
            device.last_seen_ns = at_ns
        self._dirty.add(device_id)
        if status == StatusKind.OFFLINE:
            online, reason = False, "last_will"
        else:
            online, reason = True, "status_online" if status == StatusKind.ONLINE else "traffic"
        if device.online is online:
            return None
        device.online = online
        return LivenessEvent(device_id, device.family, device.location, online, at_ns, reason)

    def silent(self, now_ns: int) -> list[str]:
        """Devices the next `sweep` would take offline."""
        return [
            device_id
            for device_id, d in self._devices.items()
            if d.online is not False and now_ns - d.last_seen_ns > d.timeout_ns
        ]

    def seen_elsewhere(self, last_seen: Mapping[str, int]) -> None:
        """Traffic another gateway process took (`gridgate run --workers`: the broker hands
        each message to one of them), as the shared registry tells it: a device is silent only
        if it is silent to all of them. Not dirty: the registry knows already."""
        for device_id, at_ns in last_seen.items():
            device = self._devices.get(device_id)
            if device is not None and at_ns > device.last_seen_ns:
                device.last_seen_ns = at_ns

    def sweep(self, now_ns: int) -> list[LivenessEvent]:
        """Devices silent past their timeout go offline (once)."""
        events = []
        for device_id, d in self._devices.items():
            if d.online is not False and now_ns - d.last_seen_ns > d.timeout_ns:
                d.online = False
                self._dirty.add(device_id)
                events.append(
                    LivenessEvent(device_id, d.family, d.location, False, now_ns, "silent")
                )
        return events

    def take_dirty(self) -> list[tuple[str, bool, int]]:
        """(device_id, online, last_seen_ns) of devices changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        out = []
        for device_id in dirty:
            d = self._devices[device_id]
            out.append((device_id, bool(d.online), d.last_seen_ns))
        return out

    def is_online(self, device_id: str) -> bool | None:
        device = self._devices.get(device_id)
        return None if device is None else device.online

    def last_seen_ns(self, device_id: str) -> int | None:
        device = self._devices.get(device_id)
        return None if device is None else device.last_seen_ns

    def __len__(self) -> int:
        return len(self._devices)
