"""How long each kind of data is kept (R3.7, PIPL Art. 19): one InfluxDB retention policy per
measurement, created (or altered) by the gateway on start.

Health and access data are sensitive (whereabouts, medical) and kept for a short time; meter
data, personal only through the household, is kept for billing-length periods. Durations come
from the privacy policy file; these are the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from devices.errors import ConfigError

DEFAULT_RETENTION: Mapping[str, str] = {
    "access": "30d",
    "elder": "90d",
    "safety": "1y",
    "meter": "3y",
    "device_status": "90d",
    "liveness": "1y",
}
_DURATION = re.compile(r"^(\d+)([hdwy])$")


def rp_name(measurement: str) -> str:
    return f"rp_{measurement}"


def influx_duration(text: str) -> str:
    """`90d`, `12w`, `3y` → an InfluxQL duration (InfluxQL has no years: 1y = 365d)."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(f"retention {text!r}: use a positive number with h, d, w or y")
    n, unit = int(match.group(1)), match.group(2)
    return f"{n * 365}d" if unit == "y" else f"{n}{unit}"


def qualified(measurement: str) -> str:
    """The InfluxQL name of a measurement in its retention policy: "rp_elder"."elder"."""
    return f'"{rp_name(measurement)}"."{measurement}"'
