"""Carrier-platform pushes, without the network: signatures, body splitting, the push adapters,
and the sources the pipeline reads (tests/integration/test_push.py has the real listener)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence

import pytest

from adapters import ctwing, onenet
from adapters.nbiot import push_topic
from devices.errors import RejectedInput
from devices.families import Channel, Family
from gateway.mqtt.source import Message
from gateway.push.platforms import MAX_MESSAGES, parse_ctwing, parse_onenet
from gateway.push.source import MergedSource, PushSource

IMEI = "868480031234567"
AT = 1_764_900_000_000
TOKEN = "t0ken"


def test_onenet_signature_is_base64_of_md5_of_token_nonce_msg() -> None:
    expected = base64.b64encode(hashlib.md5(b't0kenabc{"a":1}').digest()).decode()
    assert onenet.signature(TOKEN, "abc", '{"a":1}') == expected
    body = json.loads(onenet.body([{"a": 1}], TOKEN, "abc"))
    assert body == {"msg": {"a": 1}, "msg_signature": expected, "nonce": "abc"}


def test_a_signed_onenet_push_splits_into_its_messages() -> None:
    msgs = [{"type": 1, "imei": IMEI, "at": AT, "ds_id": "battery", "value": 80},
            {"type": 2, "imei": "bad/imei", "at": AT, "status": 1}]  # fmt: skip
    parsed = parse_onenet(onenet.body(msgs, TOKEN, "n"), TOKEN)
    assert parsed.signed
    assert [i.imei for i in parsed.items] == [IMEI, None]  # not a usable id: no device
    assert [json.loads(i.payload) for i in parsed.items] == msgs


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'{"msg": {"a": 1}}', b'{"msg": [], "nonce": "n", "msg_signature": "x"}'],
)
def test_malformed_onenet_bodies_go_on_whole_to_be_dead_lettered(body: bytes) -> None:
    parsed = parse_onenet(body, TOKEN)
    if parsed.signed:
        assert [(i.imei, i.payload) for i in parsed.items] == [(None, body)]
    else:  # the last one is well-formed but not signed with our token
        assert parsed.items == ()


def test_onenet_refuses_another_token_a_tampered_msg_and_too_many_messages() -> None:
    body = onenet.body([{"type": 1, "imei": IMEI, "at": AT}], "other", "n")
    assert not parse_onenet(body, TOKEN).signed
    good = onenet.body([{"type": 1, "imei": IMEI, "at": AT, "value": 1}], TOKEN, "n")
    assert not parse_onenet(good.replace(b'"value":1', b'"value":2'), TOKEN).signed
    many = onenet.body([{"type": 1}] * (MAX_MESSAGES + 1), TOKEN, "n")
    [whole] = parse_onenet(many, TOKEN).items
    assert whole.imei is None


def test_ctwing_names_its_device_by_imei() -> None:
    body = json.dumps({"messageType": "dataReport", "IMEI": IMEI}).encode()
    assert [i.imei for i in parse_ctwing(body)] == [IMEI]
    assert [i.imei for i in parse_ctwing(b"\xff")] == [None]


def decode(adapter: str, family: str, message: dict[str, object], imei: str = IMEI) -> list:  # type: ignore[type-arg]
    module = onenet if adapter == "onenet" else ctwing
    return module.decode(push_topic("c1", adapter, family, imei), json.dumps(message).encode())


def test_onenet_data_points_and_online_messages() -> None:
    [r] = decode("onenet", "safety", {"type": 1, "imei": IMEI, "at": AT, "ds_id": "battery",
                                      "value": 55})  # fmt: skip
    assert (r.channel, r.values["battery_pct"], r.time_ns) == (Channel.TELEMETRY, 55, AT * 10**6)
    [alarm] = decode("onenet", "safety", {"type": 1, "imei": IMEI, "at": AT,
                                          "value": {"smoke_state": 1, "smoke_density": 3.2}})  # fmt: skip
    assert (alarm.kind, alarm.values["smoke_density_db_m"]) == ("smoke_alarm", 3.2)
    [online] = decode("onenet", "safety", {"type": 2, "imei": IMEI, "at": AT, "status": 1})
    assert (online.channel, online.kind) == (Channel.STATUS, "online")


@pytest.mark.parametrize(
    ("family", "message", "reason"),
    [
        ("unregistered", {"type": 1, "imei": IMEI, "at": AT, "ds_id": "battery", "value": 1},
         "unregistered"),
        ("safety", {"type": 1, "imei": "868480031234568", "at": AT, "ds_id": "battery",
                    "value": 1}, "device_id_mismatch"),
        ("safety", {"type": 1, "imei": IMEI, "at": AT, "value": {"smoke_state": 9}}, "bad_kind"),
        ("safety", {"type": 1, "imei": IMEI, "at": AT}, "missing_field"),
        ("safety", {"type": 3, "imei": IMEI, "at": AT}, "bad_value"),
        ("elder", {"type": 1, "imei": IMEI, "at": AT, "ds_id": "battery", "value": 1},
         "unsupported_family"),
    ],
)  # fmt: skip
def test_onenet_rejections(family: str, message: dict[str, object], reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        decode("onenet", family, message)
    assert caught.value.reason == reason


def test_ctwing_appdata_is_the_meter_reply_under_the_registry_identity() -> None:
    frame_id = "12345678901234"  # the address in the frame is not the identity
    from adapters import cjt188
    from devices.location import Location
    from devices.reading import Reading

    reading = Reading(frame_id, Family.METER, Channel.TELEMETRY, "telemetry", AT * 10**6,
                      Location("c1"), {"meter_type": "water", "water_m3": 10.5})  # fmt: skip
    _, frame = cjt188.encode(reading)
    message = {"messageType": "dataReport", "IMEI": IMEI, "timestamp": AT + 5,
               "payload": {"APPdata": base64.b64encode(frame).decode()}}  # fmt: skip
    [r] = decode("ctwing", "meter", message)
    assert (r.device_id, r.values["water_m3"], r.time_ns) == (IMEI, 10.5, AT * 10**6)
    for payload, reason in (({"APPdata": "***"}, "bad_encoding"),
                            ({"APPdata": ""}, "bad_encoding")):  # fmt: skip
        with pytest.raises(RejectedInput) as caught:
            decode("ctwing", "meter", {**message, "payload": payload})
        assert caught.value.reason == reason
    with pytest.raises(RejectedInput) as caught:
        decode("ctwing", "safety", message)
    assert caught.value.reason == "unsupported_payload"


def test_ctwing_online_offline_and_other_message_types() -> None:
    base = {"IMEI": IMEI, "timestamp": AT}
    [off] = decode("ctwing", "meter", {**base, "messageType": "deviceOnlineOfflineReport",
                                       "eventType": 0})  # fmt: skip
    assert off.kind == "offline"
    with pytest.raises(RejectedInput) as caught:
        decode("ctwing", "meter", {**base, "messageType": "commandResponse"})
    assert caught.value.reason == "unsupported_message"


# -- sources --------------------------------------------------------------------------------


async def test_a_push_is_answered_once_all_its_messages_are_acked() -> None:
    source = PushSource(max_pending=3)
    done = source.submit([("t/1", b"a"), ("t/2", b"b")])
    assert done is not None and source.pending == 2
    assert source.submit([("t/3", b"c"), ("t/4", b"d")]) is None  # no room: 503, not held
    batch = await source.next_batch(10, 0)
    assert [m.payload for m in batch] == [b"a", b"b"]
    source.ack(batch[:1])
    assert not done.done()
    source.ack(batch[1:])
    assert done.done() and source.pending == 0


class _Slow:
    """A stand-in MQTT source that answers only after `delay_s`."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.acked: list[Message] = []

    async def next_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        await asyncio.sleep(min(self.delay_s, timeout_s))
        return [Message("mqtt/t", b"m", 0, 7)] if self.delay_s <= timeout_s else []

    def ack(self, messages: Sequence[Message]) -> None:
        self.acked += messages

    @property
    def connected(self) -> bool:
        return True


async def test_merged_source_waits_on_both_and_acks_each_to_its_own() -> None:
    push = PushSource()
    mqtt = _Slow(delay_s=0.5)
    merged = MergedSource(mqtt, push)
    waiting = asyncio.create_task(merged.next_batch(10, 0.3))
    await asyncio.sleep(0.05)
    done = push.submit([("$push/p", b"x")])
    batch = await waiting
    assert [m.payload for m in batch] == [b"x"]  # the push woke it; the MQTT wait was dropped
    later = await merged.next_batch(10, 1.0)
    assert [m.payload for m in later] == [b"m"]
    merged.ack([*batch, *later])
    assert done is not None and done.done()
    assert [m.payload for m in mqtt.acked] == [b"m"]


def test_devices_behind_a_carrier_platform_get_no_broker_account() -> None:
    from gateway.mqtt.broker_config import accounts

    users = {a.username for a in accounts([(IMEI, "onenet"), ("868480041234567", "ctwing"),
                                           ("sd-1", "gridgate_json")], [], [])}  # fmt: skip
    assert "sd-1" in users and IMEI not in users and "868480041234567" not in users


# -- Hikvision ISAPI ------------------------------------------------------------------------

JPEG = b"\xff\xd8\xff\xfe\x00\x08face\xff\xd9"


def _multipart(parts: list[tuple[str, str, bytes]], boundary: str = "bnd") -> bytes:
    out = b""
    for name, ctype, data in parts:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"  # fmt: skip
    return out + f"--{boundary}--\r\n".encode()


def test_isapi_multipart_keeps_the_event_and_counts_the_pictures() -> None:
    from gateway.push.isapi import split

    event = json.dumps({"AccessControllerEvent": {"serialNo": 7}}).encode()
    body = _multipart([("event_log", "application/json", event), ("Picture", "image/jpeg", JPEG),
                       ("Picture", "image/jpeg", JPEG)])  # fmt: skip
    parts = split("multipart/form-data; boundary=bnd", body)
    assert (parts.event, parts.pictures, parts.serial) == (event, 2, 7)
    wrapped = json.dumps({"EventNotificationAlert": {"AccessControllerEvent": {"serialNo": 8}}})
    assert split("application/json", wrapped.encode()).serial == 8
    torn = split("multipart/form-data; boundary=bnd", body[:40])
    assert torn.event is None
    assert split("multipart/form-data", body).event is None  # no boundary
    assert split("image/jpeg", JPEG).event is None


def test_isapi_terminal_tokens_are_per_terminal_and_per_secret() -> None:
    from gateway.push.isapi import terminal_token, token_ok

    token = terminal_token("s", "ACS1")
    assert token_ok("s", "ACS1", token)
    assert not token_ok("s", "ACS2", token) and not token_ok("t", "ACS1", token)
    assert len(token) == 24 and token != terminal_token("s", "ACS2")


@pytest.mark.parametrize(
    ("major", "minor", "kind", "method"),
    [(5, 75, "entry_granted", "face"), (5, 76, "entry_denied", "face"),
     (5, 1, "entry_granted", "card"), (5, 9, "entry_denied", "card"),
     (5, 0x1B, "door_forced", "none"), (1, 0x404, "tamper", "none")],
)  # fmt: skip
def test_isapi_codes_give_the_event_and_the_method(
    major: int, minor: int, kind: str, method: str
) -> None:
    from adapters import hikvision_isapi

    body = {"dateTime": "2024-05-20T08:30:15+08:00", "eventType": "AccessControllerEvent",
            "AccessControllerEvent": {"majorEventType": major, "subEventType": minor,
                                      "currentVerifyMode": "card"}}  # fmt: skip
    [r] = hikvision_isapi.decode(push_topic("c1", "hikvision_isapi", "access", "T1"),
                                 json.dumps(body).encode())  # fmt: skip
    assert (r.kind, r.values["method"]) == (kind, method)


def test_resolve_gives_the_residents_pseudonym_only_with_consent_at_an_approved_gate() -> None:
    from datetime import date

    from devices.info import DeviceInfo
    from devices.location import Location
    from devices.reading import Reading
    from privacy.deidentify import Deidentifier
    from privacy.keys import KeyRing
    from privacy.policy import load_policy

    refs = {"r-1": "P-one", "r-2": "P-two"}
    consents = {"P-one": True, "P-two": False}
    keyring = KeyRing([("k1", hashlib.sha256(b"k").digest())])
    privacy = Deidentifier(load_policy(), keyring, face_consent=consents.__getitem__,
                           resolve=lambda field, value: refs.get(value))  # fmt: skip
    place = Location("c1", "g01", "b01", "u1")
    gate = DeviceInfo("T1", Family.ACCESS, "hikvision_isapi", "hik", place, "", "mains",
                      date(2024, 1, 1), gate_approved=True)  # fmt: skip

    def ref(employee: str, method: str = "face", device: DeviceInfo = gate) -> object:
        values = {"method": method, "employee_no": employee, "person_name": "张伟"}
        r = Reading("T1", Family.ACCESS, Channel.EVENT, "entry_granted", AT * 10**6, place, values)
        out = privacy.apply(r, device).values
        assert "person_name" not in out and "employee_no" not in out
        return out.get("resident_ref")

    assert ref("r-1") == "P-one"
    assert ref("r-2") is None  # no consent
    assert ref("r-9") is None  # nobody the registry knows
    from dataclasses import replace

    assert ref("r-1", device=replace(gate, gate_approved=False)) is None
    assert ref("r-2", method="card") == "P-two"  # a card is not a face: no consent needed


def test_two_passages_in_one_second_stay_two_points() -> None:
    from adapters import hikvision_isapi

    def at(serial: int) -> int:
        body = {"dateTime": "2024-05-20T08:30:15+08:00", "eventType": "AccessControllerEvent",
                "AccessControllerEvent": {"majorEventType": 5, "subEventType": 75,
                                          "serialNo": serial}}  # fmt: skip
        [r] = hikvision_isapi.decode(push_topic("c1", "hikvision_isapi", "access", "T1"),
                                     json.dumps(body).encode())  # fmt: skip
        return r.time_ns

    second = 1_716_165_015 * 10**9
    assert at(41) != at(42) and second <= at(41) < second + 1_000_000  # within a millisecond
