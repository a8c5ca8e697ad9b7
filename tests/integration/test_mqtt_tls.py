"""The gateway through a TLS listener of a real Mosquitto, its certificate from a locally
generated CA: readings arrive; with another CA the connection is refused and the error says
the certificate is not trusted and which variable names the CA; a missing CA file stops the
gateway at start, naming the variable."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from adapters import gridgate_json
from devices.errors import ConfigError
from gateway.mqtt.tls import MqttTls
from gateway.pipeline.metrics import GatewayMetrics
from gateway.runtime import run_gateway
from tests.support.broker import PrivateBroker
from tests.support.gateway_util import running_gateway, settings_for
from tests.support.polling import wait_for
from tests.support.readings import family_readings
from tests.support.services import Services
from tests.support.tls import make_certs

pytestmark = pytest.mark.integration


def publish_tls(port: int, ca: Path, messages: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for topic, payload in messages:
            c.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


async def test_the_gateway_ingests_through_a_tls_listener_and_says_why_a_wrong_ca_fails(
    services: Services,
    unique: str,
    influx_db: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    certs = make_certs(tmp_path / "pki")
    other = make_certs(tmp_path / "other", name="another")
    broker = PrivateBroker(
        tmp_path / "mq",
        listener=f"cafile {certs.ca}\ncertfile {certs.cert}\nkeyfile {certs.key}\n",
    )
    broker.start()
    try:
        base = settings_for(services, unique, influx_db, tmp_path).model_copy(
            update={"mqtt_port": broker.port, "mqtt_tls_ca_file": certs.ca}
        )
        readings = family_readings(unique, 3, int(time.time() * 1000) - 60_000)
        async with running_gateway(base) as metrics:
            publish_tls(broker.port, certs.ca, [gridgate_json.encode(r) for r in readings])
            await wait_for(lambda: metrics.written == len(readings), 30, "written over TLS")

        wrong = base.model_copy(
            update={"mqtt_tls_ca_file": other.ca, "mqtt_client_id": f"{unique}-wrong"}
        )
        caplog.set_level(logging.ERROR, logger="gateway.mqtt.source")

        def refused() -> bool:
            return any(
                "certificate is not trusted" in r.getMessage()
                and "GRIDGATE_MQTT_TLS_CA_FILE" in r.getMessage()
                for r in caplog.records
                if r.name == "gateway.mqtt.source"
            )

        stop = asyncio.Event()
        task = asyncio.create_task(run_gateway(wrong, stop, GatewayMetrics()))
        try:
            await wait_for(refused, 20, "the TLS refusal, named")  # and it keeps retrying
            assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        broker.stop()


def test_a_missing_ca_file_is_named_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"GRIDGATE_MQTT_TLS_CA_FILE=.*no such file"):
        MqttTls.from_settings(False, tmp_path / "nope.crt", None, None)
    cert = tmp_path / "client.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="go together"):
        MqttTls.from_settings(True, None, cert, None)
    assert MqttTls.from_settings(False, None, None, None) is None
