"""Kill the whole gateway between "alert raised" and "delivered" (R5.5, R8).

The members' broker (a second Mosquitto, as a member-app broker would be) is down and the
emergency webhook answers 503 when a gas alert is raised: the alert and its notifications are
committed to the outbox but cannot go out. The gateway is SIGKILLed. With the broker and the
webhook back, a restarted gateway delivers every notification exactly once per recipient — on
the wire, not only after deduplication, since nothing had gone out before the crash — and the
readings redelivered by the ingest broker count as repeats, not as a second alert.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.alerts.delivery import Outbox, OutboxState
from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.registry import Registry
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.community import gas_detectors, leaking
from tests.support.gateway_util import gateway_env, start_gateway_process
from tests.support.members import FIRST_RESPONDERS, Members
from tests.support.polling import wait_for
from tests.support.registered import registered_community
from tests.support.services import Services
from tests.support.webhook_receiver import SECRET, running_receiver

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    assert found, "mosquitto is installed by scripts/services.sh"
    return found


@contextmanager
def members_broker(port: int, tmp: Path) -> Iterator[None]:
    """A second, throw-away Mosquitto on 127.0.0.1:`port`."""
    conf = tmp / "members-broker.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, "the members' broker did not start"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


async def test_killed_between_raised_and_delivered_delivers_exactly_once_after_restart(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(60, 57, unique, tmp_path)
    detector = gas_detectors(community)[0]
    port = free_port()
    log = tmp_path / "gateway.log"
    with running_receiver() as receiver:
        receiver.answer = lambda hit, nth: 503
        env = gateway_env(services, unique, influx_db, tmp_path) | {
            "GRIDGATE_REQUIRE_REGISTRATION": "true",
            "GRIDGATE_REGISTRY_URL": registry_url,
            "GRIDGATE_AUDIT_PATH": str(tmp_path / "audit.sqlite3"),
            "GRIDGATE_ALERT_MQTT_PORT": str(port),
            "GRIDGATE_EMERGENCY_WEBHOOK_URL": f"{receiver.origin}/dispatch",
            "GRIDGATE_WEBHOOK_SECRETS": json.dumps({receiver.origin: SECRET}),
        }
        with Registry.open(registry_url) as registry:
            expected = {m.id for m in registry.members_for(detector.location, FIRST_RESPONDERS)}
            store = AlertStore(registry, AuditStore(tmp_path / "audit.sqlite3"))
            outbox = Outbox(registry.engine)
            gateway = start_gateway_process(env, log)
            try:
                # 1. Raised and queued, not deliverable: the broker is down, the webhook fails.
                publish_all(services.mqtt_host, services.mqtt_port, leaking(detector))
                await wait_for(lambda: bool(receiver.hits), 30, "a failed webhook attempt")
                queued = outbox.counts()
                assert queued.get("sent", 0) == 0 and queued["pending"] == len(expected) + 1
            finally:
                gateway.send_signal(signal.SIGKILL)
                gateway.wait(10)
            assert gateway.returncode == -signal.SIGKILL
            [alert] = [a for a in store.alerts() if a.kind == "gas_leak"]
            failed_attempts = len(receiver.hits)

            # 2. Broker and webhook back, gateway restarted.
            receiver.answer = lambda hit, nth: 200
            with members_broker(port, tmp_path):
                members = Members("127.0.0.1", port, unique)
                gateway = start_gateway_process(env, log)
                try:
                    await wait_for(
                        lambda: outbox.counts().get("sent", 0) == len(expected) + 1,
                        60,
                        "every queued notification sent",
                    )
                    await wait_for(
                        lambda: set(members.of_kind("gas_leak")) == expected, 10, "the members"
                    )
                finally:
                    gateway.send_signal(signal.SIGTERM)
                    gateway.wait(30)
                    members.close()
            assert gateway.returncode == 0
            items = outbox.items()
            assert {i.state for i in items} == {OutboxState.SENT}
            alerts_now = [a for a in store.alerts() if a.kind == "gas_leak"]
            registry.engine.dispose()
        drop_session(services.mqtt_host, services.mqtt_port, env["GRIDGATE_MQTT_CLIENT_ID"])

    # exactly once per recipient, on the wire: each member one message, the webhook one 200
    for member, payloads in members.of_kind("gas_leak").items():
        assert [p["step"] for p in payloads] == ["raised"], member
    assert set(members.wire.values()) == {1} and len(members.wire) == len(expected)
    [answered] = receiver.hits[failed_attempts:]  # the one attempt after the restart: 200
    assert answered.body["alert_id"] == alert.id and answered.signed
    assert {h.delivery for h in receiver.hits} == {answered.delivery}
    # the redelivered readings were repeats of the same alert, not a second one
    assert [a.id for a in alerts_now] == [alert.id] and alerts_now[0].count >= alert.count
    assert "gas_lel_pct" not in log.read_text()  # the gateway logs no reading values
