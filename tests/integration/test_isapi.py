"""Hikvision ISAPI terminals and barrier cameras through the real push listener: JSON and
multipart events (one and two pictures), wrapped and bare, a resend with the same serialNo,
an unknown terminal, a torn multipart body, consenting and non-consenting residents → exact
InfluxDB points; the pictures, names and employee numbers found nowhere; and a gateway killed
between an event and its answer loses nothing and stores nothing twice."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from random import Random
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from adapters.hikvision_isapi import terminal_token
from gateway.pipeline.deadletter import DeadLetterStore
from gateway.registry import Registry
from gateway.registry.importer import import_file
from gateway.runtime import load_keyring
from gateway.settings import Settings
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import qualified
from privacy.operators import pseudonymise
from simulators.mqtt_tools import drop_session
from simulators.people import fake_id_number
from tests.support.api import add_accounts, crawl, running_api
from tests.support.community import community_settings, simulate_recorded
from tests.support.gateway_util import gateway_env, running_gateway, start_gateway_process
from tests.support.influx_util import HOST, free_port
from tests.support.polling import wait_for
from tests.support.pushers import Resenders, wait_for_listener
from tests.support.registered import key_file, registered_community
from tests.support.services import Services
from tests.support.stored import stored_counts

pytestmark = pytest.mark.integration

SECRET = "hikvision-secret-for-tests"
APPROVED, UNAPPROVED, CAMERA = "ACSHK0001", "ACSHK0002", "LPRHK0001"
NAMES = ("张伟", "王秀英")
rng = Random(18)
ID_YES, ID_NO = fake_id_number(rng), fake_id_number(rng)
# A JPEG: SOI, a comment that makes it this test's own, EOI. Its bytes and base64 must not
# show up anywhere.
JPEG = b"\xff\xd8\xff\xfe\x00\x10gridgate-face-" + os.urandom(4).hex().encode() + b"\xff\xd9"


def fleet_yaml(community: str) -> str:
    return f"""\
version: 1
community: {{code: {community}, name: 幸福小区, street: 城东街道}}
grids:
  - code: g01
    name: 第一网格
    buildings:
      - code: b01
        name: 1号楼
        units:
          - {{code: u1, name: 1单元, rooms: ["0101", "0102"]}}
households:
  - {{id: h-0101, building: b01, unit: u1, room: "0101"}}
  - {{id: h-0102, building: b01, unit: u1, room: "0102"}}
devices:
  - {{id: {APPROVED}, family: access, adapter: hikvision_isapi, vendor: hikvision, building: b01, unit: u1, power: mains, gate_approved: true}}
  - {{id: {UNAPPROVED}, family: access, adapter: hikvision_isapi, vendor: hikvision, building: b01, unit: u1, power: mains, gate_approved: false}}
  - {{id: {CAMERA}, family: access, adapter: hikvision_isapi, vendor: hikvision, building: b01, power: mains}}
residents:
  - {{id: r-yes, household: h-0101, id_number: "{ID_YES}", face_consent: true, plate: "京A12345"}}
  - {{id: r-no, household: h-0102, id_number: "{ID_NO}", face_consent: false}}
"""


def event(sub: int, serial: int, when: int, *, employee: str = "", name: str = "",
          reader: int = 1, wrapped: bool = False, pictures: int = 0) -> bytes:  # fmt: skip
    body: dict[str, Any] = {"deviceName": "1号楼1单元门", "majorEventType": 5,
                            "subEventType": sub, "doorNo": 1, "cardReaderNo": reader,
                            "serialNo": serial, "currentVerifyMode": "cardOrFace",
                            "picturesNumber": pictures, "mask": "no",
                            "FaceRect": {"height": 0.2, "width": 0.1, "x": 0.4, "y": 0.3}}  # fmt: skip
    if employee:
        body["employeeNoString"] = employee
    if name:
        body["name"] = name
    at = time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(when + 8 * 3600))
    data: dict[str, Any] = {"ipAddress": "10.0.3.21", "macAddress": "a4:14:37:00:00:01",
                            "dateTime": at, "eventType": "AccessControllerEvent",
                            "eventState": "active", "AccessControllerEvent": body}  # fmt: skip
    if wrapped:
        data = {"EventNotificationAlert": data}
    return json.dumps(data, ensure_ascii=False).encode()


def multipart(
    event_json: bytes, pictures: int, boundary: str = "MIME_boundary"
) -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="event_log"\r\n'
        f"Content-Type: application/json\r\n\r\n".encode()
        + event_json
        + b"\r\n"
    ]
    for i in range(pictures):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="Picture"; '
            f'filename="face{i}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + JPEG
            + b"\r\n"
        )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def anpr(plate: str, direction: str, when: int) -> bytes:
    at = time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(when + 8 * 3600))
    return json.dumps({"dateTime": at, "eventType": "ANPR", "ANPR": {
        "licensePlate": plate, "direction": direction, "confidenceLevel": 96}},
        ensure_ascii=False).encode()  # fmt: skip


def url(device: str, secret: str = SECRET) -> str:
    return f"/push/hikvision/{device}/{terminal_token(secret, device)}"


def setup_registry(unique: str, tmp: Path) -> tuple[str, Settings]:
    fleet = tmp / "fleet.yaml"
    fleet.write_text(fleet_yaml(unique), encoding="utf-8")
    registry_url = f"sqlite:///{tmp / 'registry.sqlite3'}"
    with Registry.open(registry_url) as registry:
        import_file(registry, fleet, keyring=load_keyring(
            Settings(pseudonym_key_file=key_file(tmp))))  # fmt: skip
    return registry_url, Settings(pseudonym_key_file=key_file(tmp))


async def rows(services: Services, database: str, device: str) -> list[dict[str, Any]]:
    async with InfluxV1Client(services.influx_url, database) as influx:
        return await influx.query(f'SELECT * FROM "access" WHERE "device" = \'{device}\'')


async def test_terminals_events_land_once_without_pictures_names_or_numbers(
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    registry_url, key_settings = setup_registry(unique, tmp_path)
    port = free_port()
    settings = community_settings(
        services, unique, influx_db, tmp_path, registry_url,
        push_port=port, hikvision_secret=SecretStr(SECRET), influx_retention=False,
        audit_path=tmp_path / "audit.sqlite3",
    )  # fmt: skip
    log_dir = tmp_path / "spool"
    t0 = int(time.time()) - 120
    try:
        async with (
            running_gateway(settings) as metrics,
            httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http,
        ):
            await wait_for_listener(http, "/push/hikvision/x/y")

            async def post(device: str, body: bytes, ctype: str = "application/json",
                           secret: str = SECRET) -> int:  # fmt: skip
                r = await http.post(
                    url(device, secret), content=body, headers={"content-type": ctype}
                )
                return r.status_code

            # 1: face passed, consenting resident, approved terminal, JSON, bare
            assert await post(APPROVED, event(75, 1, t0, employee="r-yes", name=NAMES[0])) == 200
            # 2: the same consenting resident at the unapproved terminal, multipart, 1 picture
            body, ctype = multipart(event(75, 1, t0 + 1, employee="r-yes", name=NAMES[0],
                                          pictures=1), 1)  # fmt: skip
            assert await post(UNAPPROVED, body, ctype) == 200
            # 3: a non-consenting resident at the approved terminal, wrapped, 2 pictures
            body, ctype = multipart(event(75, 2, t0 + 2, employee="r-no", name=NAMES[1],
                                          wrapped=True, pictures=2), 2)  # fmt: skip
            assert await post(APPROVED, body, ctype) == 200
            # the terminal resends event 3 (a new boundary): answered, not stored again
            again, ctype = multipart(event(75, 2, t0 + 2, employee="r-no", name=NAMES[1],
                                           wrapped=True, pictures=2), 2, "other_boundary")  # fmt: skip
            assert await post(APPROVED, again, ctype) == 200
            # 4: face failed (a stranger), and 5: an event code not mapped here
            assert await post(APPROVED, event(76, 3, t0 + 3, reader=2)) == 200
            assert await post(APPROVED, event(0x99, 4, t0 + 4)) == 200
            # a torn multipart body: dead-lettered, answered so the terminal stops resending
            torn = b"--MIME_boundary\r\nContent-Type: image/jpeg\r\n\r\n" + JPEG
            assert await post(APPROVED, torn, "multipart/form-data; boundary=MIME_boundary") == 200
            # an unknown terminal (right token, not in the registry), and a wrong token
            assert await post("ACSHK9999", event(75, 9, t0)) == 403
            assert await post(APPROVED, event(75, 9, t0), secret="guess") == 401
            # 6: the door forced (an alert: the alert stores are not empty)
            assert await post(APPROVED, event(0x1B, 5, t0 + 7)) == 200
            # 7, 8: a barrier camera: a car in, a car out
            assert await post(CAMERA, anpr("京A12345", "forward", t0 + 5)) == 200
            assert await post(CAMERA, anpr("沪B67890", "reverse", t0 + 6)) == 200

            outcomes = {
                o: n for (p, o), n in metrics.push_requests.items() if p == "hikvision_isapi"
            }
            assert outcomes == {"accepted": 8, "replayed": 1, "malformed": 1,
                                "unknown_terminal": 1, "unauthorized": 1}  # fmt: skip
            # 1 + 2 + 2 resent + the torn body's: all let go on arrival
            assert metrics.dropped_fields["face_picture"] == 6
            assert dict(metrics.rejected) == {"malformed_body": 1}
            assert metrics.backlog == 0

        db = settings.influx_database
        approved = sorted(await rows(services, db, APPROVED), key=lambda r: r["time"])
        unapproved = await rows(services, db, UNAPPROVED)
        camera = sorted(await rows(services, db, CAMERA), key=lambda r: r["time"])
        assert [r["kind"] for r in approved] == ["entry_granted", "entry_granted", "entry_denied",
                                                 "unknown_event", "door_forced"]  # fmt: skip
        keyring = load_keyring(key_settings)
        yes_ref = pseudonymise(ID_YES, "id_number", keyring)
        # identity only for the consenting resident at the approved terminal
        assert approved[0]["resident_ref"] == yes_ref and approved[0]["method"] == "face"
        assert approved[1].get("resident_ref") is None  # r-no did not consent
        assert [r.get("resident_ref") for r in unapproved] == [None]  # terminal not approved
        assert approved[2]["direction"] == "out" and approved[2]["granted"] is False
        assert (approved[3]["event_major"], approved[3]["event_minor"]) == (5, 0x99)
        assert [r["kind"] for r in camera] == ["vehicle_entry", "vehicle_exit"]
        assert camera[0]["plate_masked"] != "京A12345" and camera[0]["plate_masked"].startswith(
            "京"
        )

        # nothing of the pictures, names, employee numbers or plates anywhere
        secrets = [JPEG, base64.b64encode(JPEG), *(n.encode() for n in NAMES), b"r-yes", b"r-no",
                   "京A12345".encode(), "沪B67890".encode(), ID_YES.encode(), ID_NO.encode()]  # fmt: skip
        stored = json.dumps([approved, unapproved, camera], ensure_ascii=False).encode()
        for secret in secrets:
            assert secret not in stored
        for path in files_under(tmp_path):
            if path.name == "fleet.yaml" or path.suffix == ".key":
                continue  # the fleet file holds the ID numbers on purpose; the key is the key
            data = path.read_bytes()
            for secret in (JPEG, base64.b64encode(JPEG), *(n.encode() for n in NAMES)):
                assert secret not in data, path
            assert ID_YES.encode() not in data and ID_NO.encode() not in data, path
            assert "京A12345".encode() not in data and "沪B67890".encode() not in data, path
        # the logs (DEBUG) and what the API shows an administrator of the community
        add_accounts(settings, {"isapi-admin": {"role": "admin", "scope": unique}})
        async with running_api(settings, ingest=False) as api:
            shown = await crawl(api, await api.login("isapi-admin"))
        assert any('"kind":"door_forced"' in text for text in shown.values())
        texts = {"logs": caplog.text, **shown}
        for where, text in texts.items():
            for secret in (*NAMES, "r-yes", "r-no", "京A12345", "沪B67890", ID_YES, ID_NO,
                           base64.b64encode(JPEG).decode()):  # fmt: skip
                assert secret not in text, (where, secret)
        dead = DeadLetterStore(settings.deadletter_path, keyring=None)
        try:
            [letter] = dead.recent()
            assert letter.reason == "malformed_body"
        finally:
            dead.close()
        assert not log_dir.exists() or not any(log_dir.rglob("*.seg"))  # nothing spooled
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)


def files_under(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


async def test_a_gateway_killed_between_an_event_and_its_answer_loses_nothing(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    registry_url, _ = setup_registry(unique, tmp_path)
    port = free_port()
    env = gateway_env(services, unique, influx_db, tmp_path) | {
        "GRIDGATE_REQUIRE_REGISTRATION": "true",
        "GRIDGATE_REGISTRY_URL": registry_url,
        "GRIDGATE_PUSH_PORT": str(port),
        "GRIDGATE_HIKVISION_SECRET": SECRET,
        "GRIDGATE_INFLUX_RETENTION": "false",
        "GRIDGATE_AUDIT_PATH": str(tmp_path / "audit.sqlite3"),
    }
    t0 = int(time.time()) - 3600
    total = 300
    proc = start_gateway_process(env, tmp_path / "gateway.log")

    def resend(i: int, attempt: int) -> tuple[str, bytes, str]:
        """A terminal resends an event until it gets its 200, a new boundary each time."""
        body, ctype = multipart(event(75, 1000 + i, t0 + i, employee="r-yes", pictures=1), 1,
                                f"b{i}-{attempt}")  # fmt: skip
        return url(APPROVED), body, ctype

    try:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http:
            await wait_for_listener(http, "/push/hikvision/x/y")
            proc = await Resenders(http, total, resend).through_a_kill(
                proc, lambda: start_gateway_process(env, tmp_path / "gateway.log")
            )
        assert len(await rows(services, influx_db, APPROVED)) == total  # none lost, none twice
        log = (tmp_path / "gateway.log").read_bytes()
        assert JPEG not in log and base64.b64encode(JPEG) not in log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        drop_session(services.mqtt_host, services.mqtt_port, env["GRIDGATE_MQTT_CLIENT_ID"])


async def test_the_simulated_terminals_events_land_exactly_and_their_pictures_nowhere(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    """The simulator's Hikvision terminals and plate cameras (half the gates) push ISAPI
    events, face events as multipart with a JPEG of their own, while everything else publishes
    on MQTT: every reading stored once, at its time, and no picture anywhere."""
    community, registry_url, fleet = registered_community(300, 73, unique, tmp_path, isapi=0.5)
    terminals = {d.device_id for d in community.devices if d.adapter == "hikvision_isapi"}
    assert terminals
    port = free_port()
    settings = community_settings(
        services, unique, influx_db, tmp_path, registry_url,
        push_port=port, hikvision_secret=SecretStr(SECRET),
    )  # fmt: skip
    try:
        async with running_gateway(settings) as metrics:
            report, expected = await simulate_recorded(
                services,
                ["--households", "300", "--speed", "600", "--duration", "10", "--seed", "73",
                 "--community", unique, "--fleet-out", str(fleet), "--isapi-share", "0.5",
                 "--push-url", f"http://{HOST}:{port}", "--hikvision-secret", SECRET],
                tmp_path / "sent.json",
            )  # fmt: skip
            sent = report["publisher"]["published_ok"]
            assert sent == report["publisher"]["total"] == expected.messages
            await wait_for(lambda: metrics.acked >= sent, 60, "every message handled")
        assert metrics.rejected == {} and metrics.dead_lettered == 0
        assert metrics.dropped_fields["face_picture"] > 0  # face events came with pictures
        async with InfluxV1Client(services.influx_url, influx_db) as influx:
            counts = await stored_counts(influx)
            dump = json.dumps(await influx.query(f"SELECT * FROM {qualified('access')}"),
                              ensure_ascii=False).encode()  # fmt: skip
        pushed = {k: n for k, n in expected.counts.items() if k[1] in terminals}
        assert pushed, "no terminal sent anything"
        wrong = {
            k: (n, counts.get(k, 0)) for k, n in expected.counts.items() if counts.get(k, 0) != n
        }
        assert not wrong, sorted(wrong.items())[:5]
        marker = b"gridgate-sim face"  # in every simulated picture
        assert marker not in dump
        for path in files_under(tmp_path):
            assert marker not in path.read_bytes(), path
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings.mqtt_client_id)
