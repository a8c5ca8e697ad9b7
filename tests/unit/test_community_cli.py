"""``gridgate simulate --households``: arguments, the fleet file, the report — without a broker."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import yaml

from simulators import cli, community_cli
from simulators.community_cli import (
    ScheduledSource,
    parse_scenario,
    parse_seconds,
)
from simulators.publisher import Publisher, SimReport
from simulators.schedule import NS, Schedule, SimClock
from simulators.traffic import MessageSource, SimMessage


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    community_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_durations_and_scenario_arguments() -> None:
    assert [parse_seconds(x) for x in ("90", "90s", "30m", "2h", "1.5d")] == [
        90, 90, 1800, 7200, 129_600,
    ]  # fmt: skip
    with pytest.raises(ValueError):
        parse_seconds("soon")
    s = parse_scenario("gas-leak@b03/u2/1201@30m")
    assert (s.name, s.place, s.offset_s, s.options) == ("gas-leak", "b03/u2/1201", 1800, {})
    s = parse_scenario("device-offline@123456789012@10m@span=2h@announce=1")
    assert s.options == {"span": 7200, "announce": True} and s.offset_s == 600
    assert parse_scenario("water-leak@b01/u1/0101@hours=8").options == {"hours": 8}
    assert parse_scenario("hostile@b01").offset_s is None
    for bad in ("gas-leak", "meteor@b01", "gas-leak@b01@soon", "gas-leak@b01@colour=red"):
        with pytest.raises(ValueError):
            parse_scenario(bad)


def test_fleet_only_writes_the_file_and_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fleet.yaml"
    code = community_cli.run(
        _args(["--households", "120", "--fleet-only", "--fleet-out", str(out)])
    )
    assert code == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["fleet_file"] == str(out)
    assert report["community_size"]["households"] == 120
    data = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert len(data["devices"]) == report["community_size"]["devices"]


def test_default_fleet_path_is_under_run_dir() -> None:
    args = _args(["--households", "10", "--community", "hp"])
    assert community_cli.fleet_path(args) == Path(".run/gridgate/fleet-hp.yaml")


@pytest.mark.parametrize(
    "argv",
    [
        ["--households", "0"],
        ["--households", "10", "--speed", "0"],
        ["--households", "10", "--community", "a b"],
        ["--households", "10", "--scenario", "meteor@b01"],
        ["--households", "10", "--scenario", "gas-leak@b99"],
        ["--households", "10", "--speed", "600", "--duration", "36000"],  # > 29 days back
    ],
)
def test_impossible_arguments_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args([*argv, "--fleet-out", str(tmp_path / "f.yaml")])
    assert community_cli.run(args) == 2
    assert "simulate:" in capsys.readouterr().err


class FakePublisher:
    """Drains the source as `Publisher.run` would, acknowledging everything."""

    def __init__(self, host: str, port: int, *, max_inflight: int) -> None:
        self.stopped = False

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def request_stop(self) -> None:
        self.stopped = True

    def run(self, source: MessageSource, **_: Any) -> SimReport:
        report = SimReport()
        while (msg := source.next_message(time.time_ns())) is not None:
            report.total += 1
            report.published_ok += 1
            if msg.family is not None:
                report.sent_by_family[msg.family.value] = (
                    report.sent_by_family.get(msg.family.value, 0) + 1
                )
            else:
                key = msg.bad_reason or ""
                report.bad_by_reason[key] = report.bad_by_reason.get(key, 0) + 1
        return report


def test_a_run_reports_messages_points_rejections_and_scenarios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(community_cli, "Publisher", FakePublisher)
    real_plan = SimClock.plan

    def in_the_past(speed: float, duration_s: float | None, **_: Any) -> SimClock:
        # the run "started" a duration ago, so everything is due at once: no sleeping
        assert duration_s is not None
        return real_plan(speed, duration_s, real_start_ns=time.time_ns() - int(duration_s * NS))

    monkeypatch.setattr(SimClock, "plan", staticmethod(in_the_past))
    argv = [
        "--households", "150", "--speed", "600", "--duration", "6", "--quiet",
        "--fleet-out", str(tmp_path / "f.yaml"),
        "--scenario", "gas-leak@b01/u2/0101@5m",
        "--scenario", "hostile@b01/u1@10m",
        "--scenario", "device-offline@b01/u1/0102@20m@span=30m@announce=1",
    ]  # fmt: skip
    assert community_cli.run(_args(argv)) == 0
    report = orjson.loads(capsys.readouterr().out)
    messages = report["messages"]
    assert messages["total"] == report["publisher"]["total"] > 1000
    assert set(messages["by_family"]) == {"access", "safety", "meter", "elder", "hostile"}
    good = sum(v for k, v in messages["by_family"].items() if k != "hostile")
    assert sum(messages["by_format"].values()) == good
    assert report["expected_points_total"] == sum(report["expected_points"].values()) + sum(
        report["expected_status_points"].values()
    )
    assert report["expected_lines"]["meter"] > report["expected_points"]["meter"]  # DL/T 645
    assert report["expected_rejections"] == report["publisher"]["bad_by_reason"]
    assert [s["scenario"] for s in report["scenarios"]] == ["gas-leak", "hostile", "device-offline"]
    assert [s["offset_s"] for s in report["scenarios"]] == [300, 600, 1200]
    assert report["scenario_messages"]["gas-leak"] >= 20
    assert report["scenario_messages"]["device-offline"] == 2
    assert report["max_reading_lead_ms"] < 0  # every reading older than the clock at sending
    assert report["exact"] is True


def test_the_source_waits_until_messages_are_due_and_then_ends() -> None:
    from simulators.community import build_community

    community = build_community(20, seed=1)
    clock = SimClock.plan(600, 0.3)
    source = ScheduledSource(Schedule(community, clock))
    started = time.monotonic()
    sent = []
    while (msg := source.next_message(time.time_ns())) is not None:
        sent.append((time.time_ns(), msg))
    assert time.monotonic() - started >= 0.25  # paced by the schedule, not flat out
    assert sent and all(m.time_ns <= at for at, m in sent)
    assert source.tally.total == len(sent)
    source.stop.set()
    assert source.next_message(time.time_ns()) is None


def test_publisher_ends_the_run_when_the_source_is_done() -> None:
    publisher = Publisher("127.0.0.1", 1, max_inflight=4)

    class Client:
        def publish(self, topic: str, payload: bytes, qos: int) -> SimpleNamespace:
            publisher._on_publish(None, None, 0, SimpleNamespace(is_failure=False), None)  # type: ignore[arg-type]
            return SimpleNamespace(rc=0)

    class ThreeThenDone:
        n = 0

        def next_message(self, now_ns: int) -> SimMessage | None:
            self.n += 1
            return None if self.n > 3 else SimMessage("t/x", b"{}", None, "valid")

    publisher.client = Client()  # type: ignore[assignment]
    report = publisher.run(ThreeThenDone(), ack_timeout_s=1)
    assert (report.total, report.published_ok, report.unacked) == (3, 3, 0)


def test_gridgate_simulate_routes_households_to_the_community(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[argparse.Namespace] = []

    def fake_run(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(community_cli, "run", fake_run)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--households", "3000", "--speed", "60", "--scenario", "hostile@b01"])
    assert cli.run(args) == 0
    assert seen and seen[0].households == 3000 and seen[0].scenario == ["hostile@b01"]
    assert parser.parse_args([]).households is None  # the --devices path is unchanged
