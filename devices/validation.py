"""Checks that apply to every reading whatever its adapter: is its time believable?"""

from __future__ import annotations

from devices.errors import RejectedInput
from devices.reading import Reading

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
