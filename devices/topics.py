"""The gateway's own topic grammar: gridgate/v1/{community}/{family}/{device_id}/{channel}."""

from __future__ import annotations

import re
from dataclasses import dataclass

from devices.errors import RejectedInput
from devices.families import Channel, Family

PREFIX = "gridgate/v1"
# Ids travel in topics, storage tags and logs: keep them to a safe, bounded alphabet.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_FAMILIES = {f.value: f for f in Family}
_CHANNELS = {c.value: c for c in Channel}


@dataclass(slots=True, frozen=True)
class TopicParts:
    community: str
    family: Family
    device_id: str
    channel: Channel


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def build_topic(community: str, family: Family, device_id: str, channel: Channel) -> str:
    return f"{PREFIX}/{community}/{family.value}/{device_id}/{channel.value}"


def subscription(community: str = "+") -> str:
    """The MQTT filter for every device topic of one community (or all with ``+``)."""
    return f"{PREFIX}/{community}/+/+/+"


def parse_topic(topic: str) -> TopicParts:
    parts = topic.split("/")
    if len(parts) != 6 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise RejectedInput("bad_topic", f"expected {PREFIX}/community/family/device/channel")
    _, _, community, family, device_id, channel = parts
    fam = _FAMILIES.get(family)
    if fam is None:
        raise RejectedInput("unknown_family", "topic family is not access/safety/meter/elder")
    chan = _CHANNELS.get(channel)
    if chan is None:
        raise RejectedInput("bad_topic", "topic channel is not telemetry/event/status")
    if not is_valid_id(community):
        raise RejectedInput("bad_topic", "community id has characters outside [A-Za-z0-9_.:-]")
    if not is_valid_id(device_id):
        raise RejectedInput("bad_device_id", "device id has characters outside [A-Za-z0-9_.:-]")
    return TopicParts(community, fam, device_id, chan)
