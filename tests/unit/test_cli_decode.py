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
    assert reading["dropped_fields"] == ["person_name", "phone"]  # canonical names
    assert reading["dropped_unknown_fields"] == 0
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


def test_decode_prints_no_device_supplied_identifiers(capsys: pytest.CaptureFixture[str]) -> None:
    """A phone number as device id, names and numbers as place codes and as the payload's own
    keys: positions and counts are printed, the planted text is not."""
    phone = "13812345678"
    body = {
        "device_id": phone,
        "ts": int(time.time() * 1000),
        "kind": "entry_granted",
        "loc": {"grid": "g01", "building": "张三家", "unit": "13912345678"},
        "data": {
            "method": "card",
            "person_name": "王芳",
            "张三": "x",
            "tel_13700001111": 1,
            "110105-19491231-002X": True,
        },
    }
    rc = main(
        [
            "decode",
            "--topic",
            f"gridgate/v1/c1/access/{phone}/event",
            "--payload",
            json.dumps(body, ensure_ascii=False),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    [reading] = json.loads(captured.out)
    assert reading["device_id"] == "<redacted>"
    assert reading["location"] == {
        "community": "c1",
        "grid": "g01",
        "building": "<redacted>",
        "unit": "<redacted>",
        "room": "",
    }
    assert reading["values"] == {"method": "card"}
    assert reading["dropped_fields"] == ["person_name"]  # named by the policy
    assert reading["dropped_unknown_fields"] == 3  # the payload's own keys: counted
    for planted in (phone, "张三", "13912345678", "13700001111", "王芳", "19491231"):
        assert planted not in captured.out and planted not in captured.err


def test_decode_prints_equipment_ids_and_codes(capsys: pytest.CaptureFixture[str]) -> None:
    meter = "123456789012"  # a DL/T 645 address is an id, not a phone number
    body = {"device_id": meter, "ts": int(time.time() * 1000), "loc": {"building": "b03"},
            "data": {"energy_kwh": 12.5}}  # fmt: skip
    rc = main(["decode", "--topic", f"gridgate/v1/c1/meter/{meter}/telemetry",
               "--payload", json.dumps(body)])  # fmt: skip
    assert rc == 0
    [reading] = json.loads(capsys.readouterr().out)
    assert reading["device_id"] == meter and reading["location"]["building"] == "b03"
    assert reading["dropped_fields"] == [] and reading["dropped_unknown_fields"] == 0


def test_decode_rejection_does_not_quote_the_payloads_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = {"device_id": "gate-01", "ts": int(time.time() * 1000), "kind": "entry_granted",
            "loc": {"张三": "x"}, "data": {}}  # fmt: skip
    rc = main(["decode", "--topic", TOPIC, "--payload", json.dumps(body, ensure_ascii=False)])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.err.startswith("rejected: ")
    assert "张三" not in captured.err and captured.out == ""
