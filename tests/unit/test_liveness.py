from __future__ import annotations

from datetime import date

from devices.families import Family
from devices.info import DeviceInfo
from devices.location import Location
from gateway.pipeline.liveness import NS, LivenessTracker

LOC = Location("c1", "g01", "b03", "u2", "1201")


def info(device_id: str, power: str) -> DeviceInfo:
    return DeviceInfo(
        device_id, Family.SAFETY, "gridgate_json", "acme", LOC, "", power, date(2024, 1, 1)
    )


def tracker() -> LivenessTracker:
    return LivenessTracker(
        0, {"mains": 10.0, "battery": 100.0}, [info("mains-1", "mains"), info("batt-1", "battery")]
    )


def test_first_traffic_brings_a_device_online_once() -> None:
    t = tracker()
    event = t.observe("mains-1", Family.SAFETY, LOC, 1 * NS)
    assert event is not None and event.online and event.reason == "traffic"
    assert t.observe("mains-1", Family.SAFETY, LOC, 2 * NS) is None  # no repeat
    assert t.is_online("mains-1") is True


def test_silence_past_the_power_class_timeout_goes_offline_once() -> None:
    t = tracker()
    t.observe("mains-1", Family.SAFETY, LOC, 1 * NS)
    t.observe("batt-1", Family.SAFETY, LOC, 1 * NS)
    assert t.sweep(10 * NS) == []
    [event] = t.sweep(12 * NS)  # mains: 10 s timeout; the battery device is still fine
    assert (event.device_id, event.online, event.reason) == ("mains-1", False, "silent")
    assert t.sweep(13 * NS) == []
    [batt] = t.sweep(102 * NS)
    assert batt.device_id == "batt-1"


def test_never_seen_registered_device_goes_offline_after_one_timeout() -> None:
    t = tracker()
    offline = {e.device_id for e in t.sweep(11 * NS)}
    assert offline == {"mains-1"}


def test_last_will_is_offline_at_once_and_traffic_brings_it_back() -> None:
    t = tracker()
    t.observe("mains-1", Family.SAFETY, LOC, 1 * NS)
    event = t.observe("mains-1", Family.SAFETY, LOC, 2 * NS, status="offline")
    assert event is not None and not event.online and event.reason == "last_will"
    back = t.observe("mains-1", Family.SAFETY, LOC, 3 * NS, status="online")
    assert back is not None and back.online and back.reason == "status_online"


def test_unregistered_traffic_is_tracked_with_the_default_timeout() -> None:
    t = tracker()
    assert t.observe("new-1", Family.METER, LOC, 5 * NS) is not None
    assert {e.device_id for e in t.sweep(16 * NS)} == {"mains-1", "new-1"}  # not batt-1


def test_dirty_devices_are_handed_out_once_for_the_registry() -> None:
    t = tracker()
    t.observe("mains-1", Family.SAFETY, LOC, 3 * NS)
    t.observe("mains-1", Family.SAFETY, LOC, 4 * NS)
    assert t.take_dirty() == [("mains-1", True, 4 * NS)]
    assert t.take_dirty() == []


def test_traffic_another_worker_took_keeps_a_device_online() -> None:
    """`--workers`: the broker gave mains-1's recent messages to another process, which told
    the registry; this one's sweep must not take it offline, and it stays clean (the registry
    knows already)."""
    t = tracker()
    t.observe("mains-1", Family.SAFETY, LOC, 1 * NS)
    t.observe("batt-1", Family.SAFETY, LOC, 1 * NS)
    t.take_dirty()
    assert t.silent(12 * NS) == ["mains-1"]
    t.seen_elsewhere({"mains-1": 9 * NS, "batt-1": 0, "unknown": 50 * NS})
    assert t.silent(12 * NS) == [] and t.sweep(12 * NS) == []
    assert t.last_seen_ns("batt-1") == 1 * NS  # an older report never moves it back
    assert t.take_dirty() == []
    [event] = t.sweep(20 * NS)  # silent to every worker: offline after all
    assert event.device_id == "mains-1" and not event.online
