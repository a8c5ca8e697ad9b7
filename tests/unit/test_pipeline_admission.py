"""What the pipeline lets in as ids and places (issue 9, findings 3 and 5), and what a dead
letter keeps of a payload: each message through `Pipeline.process`, no services."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from adapters.registry import default_registry
from devices.families import Family
from devices.info import DeviceInfo
from devices.location import Location
from gateway.mqtt.source import Message
from gateway.pipeline.core import Pipeline, PipelineConfig, _Batch
from gateway.pipeline.deadletter import DeadLetterStore
from privacy.deidentify import Deidentifier
from privacy.keys import KeyRing
from privacy.policy import load_policy

NOW_MS = 1_732_190_000_000
KEYS = KeyRing([("k1", secrets.token_bytes(32))])
PHONE = "13812345678"
ID_NUMBER = "11010519491231002X"
HOME = Location("xf", "g01", "b03", "u2", "1201")


class Directory:
    def __init__(self, *devices: DeviceInfo) -> None:
        self.devices = {d.device_id: d for d in devices}

    def lookup(self, device_id: str) -> DeviceInfo | None:
        return self.devices.get(device_id)


class NoSource:
    connected = True

    async def next_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        return []

    def ack(self, messages: Sequence[Message]) -> None:
        pass


class NoWriter:
    async def write(self, lines: Sequence[str], *, rp: str | None = None) -> None:
        pass


def meter(device: str, location: Location = HOME) -> DeviceInfo:
    return DeviceInfo(device, Family.METER, "gridgate_json", "acme", location)


def pipeline(tmp_path: Path, *devices: DeviceInfo, require_registration: bool = True) -> Pipeline:
    return Pipeline(
        NoSource(),
        NoWriter(),
        DeadLetterStore(tmp_path / "dl.sqlite3", keyring=KEYS),
        adapters=default_registry(),  # every community, as GRIDGATE_COMMUNITY defaults
        privacy=Deidentifier(load_policy(), KEYS),
        config=PipelineConfig(require_registration=require_registration),
        directory=Directory(*devices),
        clock_ns=lambda: NOW_MS * 1_000_000,
    )


def message(device: str, *, community: str = "xf", loc: dict[str, str] | None = None) -> Message:
    body: dict[str, object] = {"device_id": device, "ts": NOW_MS, "data": {"energy_kwh": 1.5}}
    if loc is not None:
        body["loc"] = loc
    topic = f"gridgate/v1/{community}/meter/{device}/telemetry"
    return Message(topic, json.dumps(body).encode(), NOW_MS * 1_000_000, token=1)


def outcome(p: Pipeline, msg: Message) -> tuple[list[str], list[str]]:
    """(the lines stored, the reasons dead-lettered)."""
    batch = _Batch()
    p.process(msg, batch)
    lines = [line for group in batch.by_rp.values() for line in group.lines]
    return [line for line in lines if "liveness" not in line], [d.reason for d in batch.dead]


def test_a_device_on_another_communitys_topic_is_refused_not_moved(tmp_path: Path) -> None:
    p = pipeline(tmp_path, meter("em-0001"))
    lines, dead = outcome(p, message("em-0001", community="c" + ID_NUMBER[:-1]))
    assert (lines, dead) == ([], ["community_mismatch"])
    lines, dead = outcome(p, message("em-0001"))  # its own community: stored, as registered
    assert dead == [] and len(lines) == 1 and "community=xf" in lines[0]


@pytest.mark.parametrize(
    "loc",
    [
        {"grid": "g01", "building": "b03", "unit": PHONE},
        {"grid": "g01", "building": "b-" + ID_NUMBER, "unit": "u2"},
        {"grid": "g01", "building": "b03", "unit": "u2", "room": "张三"},
        {"grid": "138-1234-5678", "building": "b03", "unit": "u2"},
        {"grid": "g01", "building": "b03", "unit": "u-913812345678"},  # a stray digit in front
    ],
)
def test_with_registration_off_a_personal_place_never_becomes_a_tag(
    tmp_path: Path, loc: dict[str, str]
) -> None:
    p = pipeline(tmp_path, require_registration=False)
    lines, dead = outcome(p, message("em-0002", loc=loc))
    assert (lines, dead) == ([], ["identifier_shaped"])
    # and the same device with an ordinary place (Chinese place names included) is stored
    lines, dead = outcome(p, message("em-0002", loc={"grid": "g01", "building": "3号楼"}))
    assert dead == [] and len(lines) == 1


@pytest.mark.parametrize(
    ("registered", "device"), [(True, PHONE), (False, PHONE), (False, "9" + PHONE)]
)
def test_a_phone_shaped_device_id_never_becomes_a_tag(
    tmp_path: Path, registered: bool, device: str
) -> None:
    # registered: a registry imported before ids were checked; unregistered ids get the loose
    # check (a phone behind a stray digit is refused too)
    devices = [meter(device)] if registered else []
    p = pipeline(tmp_path, *devices, require_registration=registered)
    lines, dead = outcome(p, message(device))
    assert (lines, dead) == ([], ["identifier_shaped"])
    assert all(PHONE not in d.detail + d.topic for d in _dead(p, message(device)))


def test_a_registered_meter_address_holding_a_phone_shape_is_still_a_meter(tmp_path: Path) -> None:
    # A 12-digit DL/T 645 address the registry vouched for: strict check, it is an id.
    p = pipeline(tmp_path, meter("135000000123"))
    lines, dead = outcome(p, message("135000000123"))
    assert dead == [] and len(lines) == 1


def test_a_registered_place_holding_a_phone_is_refused(tmp_path: Path) -> None:
    p = pipeline(tmp_path, meter("em-0003", Location("xf", "g01", "b03", PHONE)))
    assert outcome(p, message("em-0003")) == ([], ["identifier_shaped"])


def _dead(p: Pipeline, msg: Message) -> list[object]:
    batch = _Batch()
    p.process(msg, batch)
    return list(batch.dead)


def test_dead_letter_digests_are_keyed_and_stable(tmp_path: Path) -> None:
    payload = ID_NUMBER.encode()  # a payload that is only an identifier
    store = DeadLetterStore(tmp_path / "dl.sqlite3", keyring=KEYS)
    letter = store.letter("t", payload, "not_json", "", 1)
    kid, digest = letter.payload_digest.split(":")
    assert kid == "k1" and len(digest) == 64
    assert hashlib.sha256(payload).hexdigest() not in letter.payload_digest  # not enumerable
    assert store.letter("t", payload, "not_json", "", 2).payload_digest == letter.payload_digest
    other = DeadLetterStore(
        tmp_path / "other.sqlite3", keyring=KeyRing([("k1", secrets.token_bytes(32))])
    )
    assert other.letter("t", payload, "x", "", 1).payload_digest != letter.payload_digest
    store.close()
    other.close()


def test_an_old_store_loses_its_unkeyed_digests(tmp_path: Path) -> None:
    path = tmp_path / "dl.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, received_ns INTEGER"
            " NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,"
            " payload_sha256 TEXT NOT NULL, payload_bytes INTEGER NOT NULL)"
        )
        plain = hashlib.sha256(PHONE.encode()).hexdigest()
        db.execute("INSERT INTO dead_letters VALUES (1, 1, 't', 'not_json', '', ?, 11)", (plain,))
    store = DeadLetterStore(path, keyring=KEYS)
    [old] = store.recent()
    assert old.payload_digest == "unkeyed:removed"
    store.add_many([store.letter("t", b"{", "not_json", "", 2)])
    assert store.count() == 2
    store.close()
