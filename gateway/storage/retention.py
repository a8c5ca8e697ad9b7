"""How long each kind of data is kept (R3.7, PIPL Art. 19): one InfluxDB retention policy per
measurement, created (or altered) by the gateway on start with the durations of the privacy
policy file (`retention:`) — health and access data far shorter than meter data.
"""

from __future__ import annotations


def rp_name(measurement: str) -> str:
    return f"rp_{measurement}"


def qualified(measurement: str) -> str:
    """The InfluxQL name of a measurement in its retention policy: "rp_elder"."elder"."""
    return f'"{rp_name(measurement)}"."{measurement}"'
