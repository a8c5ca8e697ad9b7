from __future__ import annotations

import json
import time

import pytest

from gateway.cli import main

TOPIC = "gridgate/v1/c1/access/gate-01/event"


def payload(**data: object) -> str:
    return json.dumps(
        {
            "device_id": "gate-01",
            "ts": int(time.time() * 1000),
            "kind": "entry_granted",
            "data": data,
        },
        ensure_ascii=False,
    )


def test_decode_prints_canonical_readings_without_personal_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(
        [
            "decode",
            "--topic",
            TOPIC,
            "--payload",
            payload(method="face", person_name="王芳", phone="13912345678"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    [reading] = json.loads(out)
    assert reading["family"] == "access" and reading["kind"] == "entry_granted"
    assert reading["values"] == {"method": "face"}
    assert reading["dropped_fields"] == ["person_name", "phone"]
    assert "王芳" not in out and "13912345678" not in out


def test_decode_rejection_prints_reason_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["decode", "--topic", TOPIC, "--payload", '{"device_id": "gate-02"}'])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.err.startswith("rejected: missing_field")
    assert captured.out == ""


def test_decode_unknown_adapter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--adapter", "nope", "--topic", TOPIC, "--payload", "{}"]) == 2
    assert "unknown adapter" in capsys.readouterr().err


def test_unknown_gridgate_variables_are_reported() -> None:
    from gateway.settings import unknown_variables

    env = {
        "GRIDGATE_MQTT_PROT": "1",
        "GRIDGATE_MQTT_PORT": "1883",
        "GRIDGATE_INFLUX_PORT": "1",
        "HOME": "/",
    }
    assert unknown_variables(env) == ["GRIDGATE_MQTT_PROT"]
