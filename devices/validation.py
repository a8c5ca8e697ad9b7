"""Checks that apply to every reading whatever its adapter: is its time believable?"""

from __future__ import annotations

from dataclasses import replace

from devices.errors import RejectedInput
from devices.reading import RECEIVE_TIME, Reading

NS_PER_S = 1_000_000_000


def check_time(reading: Reading, now_ns: int, max_past_s: float, max_future_s: float) -> None:
    """Reject a reading stamped absurdly far from the gateway's clock (R8).

    Devices buffer while offline, so the past window is long (days); the future window only
    covers clock skew.
    """
    if reading.time_ns > now_ns + int(max_future_s * NS_PER_S):
        raise RejectedInput("future_timestamp", f"reading is more than {max_future_s:g} s ahead")
    if reading.time_ns < now_ns - int(max_past_s * NS_PER_S):
        raise RejectedInput("stale_timestamp", f"reading is more than {max_past_s:g} s old")


def stamp_and_check(
    reading: Reading, received_ns: int, now_ns: int, max_past_s: float, max_future_s: float
) -> Reading:
    """A clock-less reading gets the receive time; any other must have a believable one."""
    if reading.time_ns == RECEIVE_TIME:
        return replace(reading, time_ns=received_ns)
    check_time(reading, now_ns, max_past_s, max_future_s)
    return reading
