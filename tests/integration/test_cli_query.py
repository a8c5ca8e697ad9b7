"""`gridgate query` (issue 13): the common questions answered from the real InfluxDB, in the
retention policies the gateway creates (``"rp_meter"."meter"`` …), with the InfluxQL shown.

Known points are written through the storage client into the test's own database after the
schema is created as the gateway creates it (`ensure_schema` with the policy's retention
policies); the registry is a small fleet of every family. Access and elder answers keep the
HTTP API's k-anonymity: cells describing fewer than k persons are withheld.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli.lookup import local_time
from gateway.cli.main import main
from gateway.cli.terminal import columns
from gateway.registry import Registry, import_file
from gateway.runtime import retention_policies
from gateway.settings import Settings
from gateway.storage.influx_v1 import InfluxV1Client
from gateway.storage.retention import rp_name
from privacy.policy import load_policy
from tests.support.influx_util import free_port
from tests.support.services import Services

pytestmark = pytest.mark.integration

S = 1_000_000_000

FLEET = """\
version: 1
community: {{code: {c}, name: 幸福小区}}
grids:
  - code: g01
    name: 第一网格
    buildings:
      - code: b01
        name: 1号楼
        units:
          - {{code: u1, name: 1单元, rooms: ["0101"]}}
          - {{code: u2, name: 2单元, rooms: ["0201"]}}
      - code: b02
        name: 2号楼
        units:
          - {{code: u1, name: 1单元, rooms: ["0101"]}}
households:
  - {{id: h-b01-0101, building: b01, unit: u1, room: "0101", elder_alone: true}}
devices:
  - {{id: em-b01-u1, family: meter, adapter: gridgate_json, vendor: acme, building: b01, unit: u1, room: "0101", power: mains}}
  - {{id: em-b01-u2, family: meter, adapter: gridgate_json, vendor: acme, building: b01, unit: u2, room: "0201", power: mains}}
  - {{id: em-b02-u1, family: meter, adapter: gridgate_json, vendor: acme, building: b02, unit: u1, room: "0101", power: mains}}
  - {{id: gas-b01-u1, family: safety, adapter: gridgate_json, vendor: acme, building: b01, unit: u1, room: "0101", power: mains}}
  - {{id: gate-b01, family: access, adapter: gridgate_json, vendor: acme, building: b01, power: mains}}
  - {{id: gate-b02, family: access, adapter: gridgate_json, vendor: acme, building: b02, power: mains}}
  - {{id: band-b01, family: elder, adapter: gridgate_json, vendor: acme, building: b01, unit: u1, room: "0101", power: battery, household: h-b01-0101}}
"""


def _tags(c: str, building: str, unit: str, kind: str, device: str) -> str:
    unit_tag = f",unit={unit}" if unit else ""
    return f"building={building},community={c},device={device},grid=g01,kind={kind}{unit_tag}"


@dataclass
class Stored:
    community: str
    hour_ns: int  # the start of the hour all hourly points are in
    gas_ns: int  # the newest gas reading


def _points(c: str, h0: int) -> dict[str, list[str]]:
    """Points as the gateway stores them (de-identified: pseudonyms only), by measurement."""
    at = [h0 + m * 60 * S for m in range(60)]
    meter = [  # b01/u1: 10 and 12 (mean 11); b01/u2: 20; b02/u1: 100
        f'meter,{_tags(c, "b01", "u1", "telemetry", "em-b01-u1")} schema=1i,energy_kwh=10,room="0101" {at[5]}',
        f'meter,{_tags(c, "b01", "u1", "telemetry", "em-b01-u1")} schema=1i,energy_kwh=12,room="0101" {at[35]}',
        f'meter,{_tags(c, "b01", "u2", "telemetry", "em-b01-u2")} schema=1i,energy_kwh=20,room="0201" {at[10]}',
        f'meter,{_tags(c, "b02", "u1", "telemetry", "em-b02-u1")} schema=1i,energy_kwh=100,room="0101" {at[10]}',
    ]  # fmt: skip
    safety = [
        f'safety,{_tags(c, "b01", "u1", "telemetry", "gas-b01-u1")} schema=1i,detector="gas",gas_lel_pct=1.5,battery_pct=90i {at[1]}',
        f'safety,{_tags(c, "b01", "u1", "telemetry", "gas-b01-u1")} schema=1i,detector="gas",gas_lel_pct=3.5,battery_pct=88i {at[50]}',
    ]  # fmt: skip
    # b01's gate: 12 entries by 3 residents (fewer than 5 persons); b02's: 8 by 6 residents
    access = [
        f'access,{_tags(c, "b01", "", "entry_granted", "gate-b01")} schema=1i,direction="in",granted=true,resident_ref="k1:a{i % 3}" {at[i]}'
        for i in range(12)
    ] + [
        f'access,{_tags(c, "b02", "", "entry_granted", "gate-b02")} schema=1i,direction="in",granted=true,resident_ref="k1:b{i % 6}" {at[20 + i]}'
        for i in range(8)
    ]  # fmt: skip
    elder = [
        f'elder,{_tags(c, "b01", "u1", "telemetry", "band-b01")} schema=1i,worn=true,heart_rate_bpm={70 + i}i {at[i]}'
        for i in range(3)
    ]  # fmt: skip
    status = [
        f'device_status,{_tags(c, "b01", "u1", "status", "band-b01")} schema=1i,rssi_dbm=-70i,battery_pct=80i,firmware="2.3.1" {at[40]}',
    ]  # fmt: skip
    liveness = [
        f"liveness,building=b01,community={c},device=gas-b01-u1,family=safety,grid=g01,unit=u1"
        f' schema=1i,online=true,reason="traffic" {at[2]}'
    ]
    return {"meter": meter, "safety": safety, "access": access, "elder": elder,
            "device_status": status, "liveness": liveness}  # fmt: skip


@pytest.fixture
def stored(
    services: Services, unique: str, influx_db: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stored]:  # fmt: skip
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(c=unique), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    with Registry.open(url) as registry:
        import_file(registry, fleet)
    for name, value in {"REGISTRY_URL": url, "AUDIT_PATH": str(tmp_path / "audit.sqlite3"),
                        "INFLUX_URL": services.influx_url, "INFLUX_DATABASE": influx_db,
                        "LOG_LEVEL": "WARNING"}.items():  # fmt: skip
        monkeypatch.setenv(f"GRIDGATE_{name}", value)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    h0 = int(hour.timestamp()) * S
    points = _points(unique, h0)
    settings = Settings()
    policies = retention_policies(load_policy(settings.privacy_policy), settings)

    async def write() -> None:
        async with InfluxV1Client(
            services.influx_url, influx_db, retention_policies=policies
        ) as influx:
            await influx.ensure_schema()  # as the gateway does when it starts
            for measurement, lines in points.items():
                await influx.write(lines, rp=rp_name(measurement))

    asyncio.run(write())
    try:
        yield Stored(unique, h0, h0 + 50 * 60 * S)
    finally:

        async def drop() -> None:
            async with InfluxV1Client(services.influx_url, influx_db) as influx:
                await influx.query(f'DROP DATABASE "{influx_db}"')

        asyncio.run(drop())


def gridgate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def _row(out: str, first: str) -> list[str]:
    """The words of the output line whose first word is `first`."""
    for line in out.splitlines():
        words = line.split()
        if words[:1] == [first]:
            return words
    raise AssertionError(f"no line starting {first!r} in:\n{out}")


def test_counts_per_measurement_in_their_retention_policies(
    stored: Stored, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = gridgate(capsys, "query", "counts", "--since", "4h")
    assert status == 0, err
    assert f"community {stored.community}  幸福小区" in out
    assert _row(out, "meter")[1:] == ['"rp_meter"."meter"', "4"]
    assert _row(out, "safety")[1:] == ['"rp_safety"."safety"', "2"]
    assert _row(out, "access")[1:] == ['"rp_access"."access"', "20"]  # 9 persons
    assert _row(out, "device_status")[1:] == ['"rp_device_status"."device_status"', "1"]
    assert _row(out, "liveness")[1:] == ['"rp_liveness"."liveness"', "1"]
    # one wearable is one person: its count is withheld, as the API would
    assert _row(out, "elder")[1:] == ['"rp_elder"."elder"', "<", "5", "persons:", "suppressed"]
    assert err == ""  # the InfluxQL only when asked for (--show-query)
    assert all(columns(line) <= 79 for line in out.splitlines())

    # k = 10: the community's 20 entries by 9 residents describe too few persons
    monkeypatch.setenv("GRIDGATE_API_K_ANONYMITY", "10")
    status, out, err = gridgate(
        capsys, "query", "counts", "--community", stored.community, "--since", "4h",
        "--show-query",
    )  # fmt: skip
    assert status == 0, err
    assert _row(out, "access")[2:] == ["<", "10", "persons:", "suppressed"]
    assert _row(out, "meter")[2:] == ["4"]
    assert out.startswith("influxql (")  # --show-query: on stdout, to copy
    assert 'count("schema")' in out and '"rp_meter"."meter"' in out  # the InfluxQL it ran
    assert err == ""
    status, out, _ = gridgate(capsys, "query", "counts", "--community", stored.community)
    assert _row(out, "meter")[2:] == ["0"]  # the last hour (by default): the points are older


def test_latest_readings_of_a_device_from_its_family(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = gridgate(
        capsys, "query", "latest", "gas-b01-u1", "--limit", "1", "--show-query"
    )
    assert status == 0, err
    assert "1号楼 1单元 0101" in out and "safety" in out
    assert f"{local_time(stored.gas_ns)}  telemetry" in out  # UTC+8
    assert "gas_lel_pct=3.5" in out and "battery_pct=88" in out and "1.5" not in out
    assert '"rp_safety"."safety" WHERE "device" = \'gas-b01-u1\'' in out
    status, out, _ = gridgate(capsys, "query", "latest", "em-b01-u1")
    assert status == 0 and out.count("energy_kwh=") == 2

    # a wearable's readings describe one person: refused, with the aggregate and --status
    status, out, err = gridgate(capsys, "query", "latest", "band-b01")
    assert status == 2 and "heart_rate" not in out
    assert "gridgate query place band-b01 --family elder" in err and "--status" in err
    status, out, err = gridgate(capsys, "query", "latest", "band-b01", "--status")
    assert status == 0, err
    assert "rssi_dbm=-70" in out and "firmware=2.3.1" in out
    assert '"rp_device_status"."device_status"' in out
    status, out, err = gridgate(capsys, "query", "latest", "gate-b01")
    assert status == 2 and "resident_ref" not in out + err

    status, _, err = gridgate(capsys, "query", "latest", "no-such-device")
    assert status == 2 and "no device 'no-such-device'" in err and "registry show" in err


def test_a_place_over_a_window_as_the_api_builds_it(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    hour = local_time(stored.hour_ns, "%m-%d %H:%M")

    def value(*argv: str) -> list[str]:
        status, out, err = gridgate(capsys, "query", "place", *argv)
        assert status == 0, err
        return [line.split(None, 2)[2].strip() for line in out.splitlines()
                if line.startswith(f"  {hour}")]  # fmt: skip

    assert value("b01", "--since", "4h") == ["14"]  # mean(10, 12, 20): energy_kwh by default
    assert value("b01/u1", "--since", "4h") == ["11"]
    assert value(f"{stored.community}/g01/b01/u2", "--since", "4h") == ["20"]
    assert value("em-b02-u1", "--since", "4h", "--fn", "max") == ["100"]
    assert value("g01", "--since", "4h", "--fn", "sum") == ["142"]
    assert value("b01", "--since", "4h", "--family", "safety") == ["3.5"]  # max gas_lel_pct
    by_unit = [row.split() for row in value("b01", "--since", "4h", "--by", "unit")]
    assert by_unit == [[f"{stored.community}/g01/b01/u1", "1号楼", "1单元", "11"],
                       [f"{stored.community}/g01/b01/u2", "1号楼", "2单元", "20"]]  # fmt: skip

    # access: a cell of fewer than k persons is withheld; b02's 8 entries by 6 residents shown
    assert value("b01", "--since", "4h", "--family", "access") == ["< 5 persons: suppressed"]
    assert value("b02", "--since", "4h", "--family", "access") == ["8"]
    status, out, err = gridgate(
        capsys, "query", "place", "g01", "--family", "access", "--by", "building",
        "--since", "4h", "--show-query",
    )  # fmt: skip
    assert "1 of 2 cells withheld: they describe fewer than 5 persons" in out
    assert 'count(distinct("resident_ref"))' in out and '"rp_access"."access"' in out
    # one wearable: its heart rate is always withheld
    assert value("band-b01", "--since", "4h", "--family", "elder") == ["< 5 persons: suppressed"]

    # bad input: one line naming the fix, exit 2
    for argv, words in (
        (["b01", "--field", "colour"], "meter has no queryable field 'colour'; it has"),
        (["b01", "--since", "soon"], "'soon' is not a duration: use e.g. 90s, 30m"),
        (["b09"], "no place or device 'b09' in the registry"),
        (["em-b01-u1", "--family", "safety"], "em-b01-u1 is a meter device: use --family meter"),
        (["b01", "--since", "60d"], "a history spans at most 31 days"),
    ):
        status, out, err = gridgate(capsys, "query", "place", *argv)
        assert status == 2 and words in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_an_unreachable_influxdb_is_named_with_its_setting(
    stored: Stored, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("GRIDGATE_INFLUX_URL", url)
    status, _, err = gridgate(capsys, "query", "counts")
    assert status == 1
    assert url in err and "GRIDGATE_INFLUX_URL" in err and "unreachable" in err
