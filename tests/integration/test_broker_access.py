"""`gridgate broker-config`'s accounts and ACL, loaded into a real Mosquitto: nobody anonymous,
a device publishes only on its own topics and reads nothing, only the gateway reads the ingest
topics, a member reads only their own alerts, nobody takes over the gateway's session — and
the gateway itself ingests through it with its accounts."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import SecretStr

from adapters import gridgate_json
from adapters.registry import default_registry
from gateway.cli.broker import reload_broker
from gateway.mqtt.broker_config import (
    ALERTS_USER,
    GATEWAY_USER,
    accounts,
    auth_conf,
    write_config,
)
from tests.support.broker import PrivateBroker, free_port
from tests.support.gateway_util import running_gateway, settings_for
from tests.support.polling import wait_for
from tests.support.readings import family_readings
from tests.support.services import ROOT, Services

pytestmark = pytest.mark.integration

DEVICES = ("m-000", "m-001")
MEMBERS = ("mem-a", "mem-b")


@dataclass
class Client:
    """A paho client that records what it gets; `rc` is the CONNACK reason."""

    client: mqtt.Client
    rc: int | None = None
    received: list[tuple[str, bytes]] = field(default_factory=list)
    granted: list[int] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    connected: threading.Event = field(default_factory=threading.Event)


@contextmanager
def client(
    port: int, username: str | None, password: str | None, client_id: str
) -> Iterator[Client]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if username is not None:
        c.username_pw_set(username, password)
    box = Client(c)

    def on_connect(
        _c: mqtt.Client, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object
    ) -> None:
        box.rc = rc.value
        box.connected.set()

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        box.received.append((m.topic, m.payload))

    def on_subscribe(
        _c: mqtt.Client, _u: object, _mid: int, codes: list[mqtt.ReasonCode], _p: object
    ) -> None:
        box.granted.extend(code.value for code in codes)

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        box.disconnected.set()

    c.on_connect, c.on_message, c.on_subscribe = on_connect, on_message, on_subscribe
    c.on_disconnect = on_disconnect
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert box.connected.wait(10), "no CONNACK"
        yield box
    finally:
        c.disconnect()
        c.loop_stop()


def publish(box: Client, topic: str, payload: bytes) -> None:
    box.client.publish(topic, payload, qos=1).wait_for_publish(10)


@pytest.fixture
def locked(
    tmp_path: Path, unique: str
) -> Iterator[tuple[PrivateBroker, dict[str, str], list[str]]]:
    filters = default_registry(unique).subscriptions()
    users = accounts([(d, "gridgate_json") for d in DEVICES], MEMBERS, [])
    write_config(tmp_path / "broker", filters, users)
    with (tmp_path / "broker" / "credentials.csv").open(newline="") as f:
        passwords = {row["username"]: row["password"] for row in csv.DictReader(f)}
    broker = PrivateBroker(tmp_path / "mq", auth=auth_conf(tmp_path / "broker"))
    broker.start()
    try:
        yield broker, passwords, filters
    finally:
        broker.stop()


def test_the_password_file_holds_hashes_only(tmp_path: Path) -> None:
    users = accounts([("m-000", "gridgate_json"), ("m-900", "dlt645")], ["mem-a"], ["conc-1"])
    write_config(tmp_path, ["gridgate/v1/+/+/+/+"], users)
    passwd = (tmp_path / "passwd").read_text()
    plain = {
        row["username"]: row["password"]
        for row in csv.DictReader((tmp_path / "credentials.csv").open())
    }
    assert "m-900" not in plain  # a meter behind a concentrator has no account of its own
    assert set(plain) == {GATEWAY_USER, ALERTS_USER, "m-000", "mem-a", "conc-1"}
    assert all(p not in passwd for p in plain.values())
    assert (tmp_path / "credentials.csv").stat().st_mode & 0o077 == 0
    # generated again: the same passwords (devices are not re-provisioned)
    write_config(tmp_path, ["gridgate/v1/+/+/+/+"], users)
    again = {
        row["username"]: row["password"]
        for row in csv.DictReader((tmp_path / "credentials.csv").open())
    }
    assert again == plain


def test_the_broker_lets_each_in_only_where_it_belongs(
    locked: tuple[PrivateBroker, dict[str, str], list[str]], unique: str
) -> None:
    broker, pw, filters = locked
    port = broker.port
    own = f"gridgate/v1/{unique}/meter/m-000/telemetry"
    other = f"gridgate/v1/{unique}/meter/m-001/telemetry"
    with client(port, None, None, "anon") as anonymous:
        assert anonymous.rc == 135  # not authorized: nobody anonymous
    with client(port, "m-000", "wrong", "m-000") as wrong:
        assert wrong.rc in (134, 135)  # bad user name or password
    with (
        client(port, GATEWAY_USER, pw[GATEWAY_USER], GATEWAY_USER) as gateway,
        client(port, "m-000", pw["m-000"], "m-000") as device_a,
        client(port, "m-001", pw["m-001"], "m-001") as device_b,
    ):
        assert gateway.rc == device_a.rc == device_b.rc == 0
        gateway.client.subscribe([(f, 1) for f in filters])
        device_a.client.subscribe("#", qos=1)  # a device that would read everyone's readings
        wait_for_sync(lambda: len(gateway.granted) == len(filters) and device_a.granted)
        assert all(code == 1 for code in gateway.granted)
        publish(device_a, own, b"a-own")
        publish(device_a, other, b"a-forged")  # acknowledged, and dropped by the broker
        publish(device_b, other, b"b-own")
        wait_for_sync(lambda: len(gateway.received) >= 2)
        time.sleep(0.3)  # time for a forged message to arrive if it were going to
        assert sorted(gateway.received) == [(own, b"a-own"), (other, b"b-own")]
        assert device_a.received == []  # `#` gave a device nothing

        # A device that uses the gateway's client id gets its own (its user name): no takeover
        # of the gateway's session (it only replaces that device's own connection).
        with client(port, "m-001", pw["m-001"], GATEWAY_USER) as impostor:
            assert impostor.rc == 0
            publish(device_a, own, b"a-again")
            wait_for_sync(lambda: len(gateway.received) == 3)
            # the broker drops the session the impostor took over; paho reports it from its
            # own thread, which under load runs after the gateway has its messages
            assert device_b.disconnected.wait(10)
            assert not gateway.disconnected.is_set()

    with (
        client(port, ALERTS_USER, pw[ALERTS_USER], ALERTS_USER) as alerts,
        client(port, "mem-a", pw["mem-a"], "mem-a") as member,
    ):
        member.client.subscribe(
            [("gridgate/alerts/member/mem-a", 1), ("gridgate/alerts/member/mem-b", 1)]
        )
        wait_for_sync(lambda: len(member.granted) == 2)
        publish(alerts, "gridgate/alerts/member/mem-b", b"for b")
        publish(alerts, "gridgate/alerts/member/mem-a", b"for a")
        publish(member, "gridgate/alerts/member/mem-a", b"forged by a member")
        wait_for_sync(lambda: len(member.received) >= 1)
        time.sleep(0.3)
        assert member.received == [("gridgate/alerts/member/mem-a", b"for a")]


async def test_the_gateway_ingests_through_the_locked_broker(
    locked: tuple[PrivateBroker, dict[str, str], list[str]],
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
) -> None:
    broker, pw, _ = locked
    settings = settings_for(services, unique, influx_db, tmp_path).model_copy(
        update={
            "mqtt_port": broker.port,
            "mqtt_username": GATEWAY_USER,
            "mqtt_password": SecretStr(pw[GATEWAY_USER]),
            "mqtt_client_id": GATEWAY_USER,
            "alert_mqtt_username": ALERTS_USER,
            "alert_mqtt_password": SecretStr(pw[ALERTS_USER]),
        }
    )
    readings = [r for r in family_readings(unique, 2, int(time.time() * 1000) - 60_000)
                if r.device_id in DEVICES]  # fmt: skip
    assert {r.device_id for r in readings} == set(DEVICES)
    async with running_gateway(settings) as metrics:
        for r in readings:
            topic, payload = gridgate_json.encode(r)
            with client(broker.port, r.device_id, pw[r.device_id], r.device_id) as device:
                await asyncio.to_thread(publish, device, topic, payload)
        await wait_for(lambda: metrics.written == len(readings), 30, "both readings written")
    assert metrics.dead_lettered == 0


def wait_for_sync(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_services_script_runs_the_broker_with_the_generated_files(
    tmp_path: Path, unique: str
) -> None:
    """`GRIDGATE_BROKER_AUTH_CONF=…/mosquitto-auth.conf scripts/services.sh start`: the local
    broker with the accounts and ACL instead of anonymous access."""
    users = accounts([(d, "gridgate_json") for d in DEVICES], MEMBERS, [])
    write_config(tmp_path / "broker", default_registry(unique).subscriptions(), users)
    with (tmp_path / "broker" / "credentials.csv").open(newline="") as f:
        pw = {row["username"]: row["password"] for row in csv.DictReader(f)}
    env = {
        **os.environ,
        "GRIDGATE_RUN_DIR": str(tmp_path / "run"),
        "GRIDGATE_MQTT_PORT": str(free_port()),
        "GRIDGATE_INFLUX_PORT": str(free_port()),
        "GRIDGATE_INFLUX_RPC_PORT": str(free_port()),
        "GRIDGATE_BROKER_AUTH_CONF": str(tmp_path / "broker" / "mosquitto-auth.conf"),
    }
    script = str(ROOT / "scripts" / "services.sh")
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        port = int(env["GRIDGATE_MQTT_PORT"])
        with client(port, None, None, f"anon-{unique}") as anonymous:
            assert anonymous.rc == 135  # not authorized
        with client(port, GATEWAY_USER, pw[GATEWAY_USER], GATEWAY_USER) as gateway:
            assert gateway.rc == 0
        with client(port, "m-000", "wrong", "m-000") as wrong:
            assert wrong.rc in (134, 135)  # bad user name or password
        # a device imported later: its account works once the broker is told (SIGHUP)
        more = accounts([(d, "gridgate_json") for d in (*DEVICES, "m-002")], MEMBERS, [])
        write_config(tmp_path / "broker", default_registry(unique).subscriptions(), more)
        with (tmp_path / "broker" / "credentials.csv").open(newline="") as f:
            pw = {row["username"]: row["password"] for row in csv.DictReader(f)}
        with client(port, "m-002", pw["m-002"], "m-002") as early:
            assert early.rc in (134, 135)  # not yet: the broker has the old files
        reload_broker(tmp_path / "run" / "mosquitto" / "mosquitto.pid")
        deadline = time.monotonic() + 10
        while True:
            with client(port, "m-002", pw["m-002"], "m-002") as late:
                if late.rc == 0:
                    break
            assert time.monotonic() < deadline, "the new account never worked"
            time.sleep(0.2)
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, check=False)


def test_the_services_script_names_a_missing_auth_file(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GRIDGATE_RUN_DIR": str(tmp_path / "run"),
        "GRIDGATE_MQTT_PORT": str(free_port()),
        "GRIDGATE_INFLUX_PORT": str(free_port()),
        "GRIDGATE_INFLUX_RPC_PORT": str(free_port()),
        "GRIDGATE_BROKER_AUTH_CONF": str(tmp_path / "nowhere.conf"),
    }
    script = str(ROOT / "scripts" / "services.sh")
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    subprocess.run([script, "stop"], env=env, capture_output=True, check=False)
    assert started.returncode == 1
    assert "GRIDGATE_BROKER_AUTH_CONF" in started.stderr and "broker-config" in started.stderr
