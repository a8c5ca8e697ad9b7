"""`gridgate alerts` (issue 13): an operator at a terminal lists alerts, reads one's timeline
and acts on it as a named grid member, through the same lifecycle as the HTTP API.

The alerts are raised by the real engine into a real SQLite registry (the alert world's fleet:
buildings b03 and b05, members of every role) with a real outbox and audit log; then the
command runs as an operator runs it, against those files (GRIDGATE_REGISTRY_URL,
GRIDGATE_AUDIT_PATH), and the test reads the store afterwards as another process would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devices.location import Location
from gateway.alerts.delivery.outbox import Outbox
from gateway.alerts.engine import AlertEngine
from gateway.alerts.escalation import Escalator
from gateway.alerts.model import Alert, AlertState, Severity
from gateway.alerts.routing import Router, load_routing_policy
from gateway.alerts.store import AlertStore
from gateway.audit.store import AuditStore
from gateway.cli.main import main
from gateway.cli.terminal import columns
from gateway.registry import Registry
from tests.support.alert_world import ENV, Clock, cond, make_registry, registry_url

pytestmark = pytest.mark.integration

S = 1_000_000_000
ACK_WITHIN_S = 300  # level I, shipped routing policy
RESOLVE_WITHIN_S = 7200
UNIT_HEAD = "m-uh-b03u2"  # 李建国, unit head of b03/u2: responsible for the gas leak
BUILDING_HEAD = "m-bh-b03"
OTHER_UNIT_HEAD = "m-uh-b05u2"  # another building's unit head: not responsible
PHONE = "13812345678"
SMOKE_B05 = Location("xf", "g01", "b05", "u2", "1201")


@dataclass
class Raised:
    tmp: Path
    clock: Clock
    gas: int  # at b03/u2/1201, severity I
    smoke: int  # at b05/u2/1201, severity I: never touched, the escalation control

    def open(self) -> tuple[Registry, AuditStore, AlertStore]:
        audit = AuditStore(self.tmp / "audit.sqlite3")
        registry = Registry.open(registry_url(self.tmp), audit=audit)
        return registry, audit, AlertStore(registry, audit)

    def alert(self, alert_id: int) -> Alert:
        registry, audit, store = self.open()
        try:
            found = store.alert(alert_id)
            assert found is not None
            return found
        finally:
            registry.close()
            audit.close()


@pytest.fixture
def raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Raised]:
    """Two level-I alerts raised a minute ago by the engine, notified through the outbox; the
    command's settings point at their registry and audit log."""
    clock = Clock(time.time_ns() - 60 * S)
    make_registry(tmp_path).close()
    audit = AuditStore(tmp_path / "audit.sqlite3", clock_ns=clock)
    registry = Registry.open(registry_url(tmp_path), audit=audit)
    router = Router(load_routing_policy(), registry, environ=ENV)
    outbox = Outbox(registry.engine, clock_ns=clock)
    engine = AlertEngine(registry, audit, clock_ns=clock, router=router, outbox=outbox)
    gas = engine.handle([cond(at_ns=clock())])[0].alert.id
    smoke = engine.handle(
        [cond("smoke", kind="smoke", location=SMOKE_B05, device_id="", at_ns=clock())]
    )[0].alert.id
    registry.close()
    audit.close()
    monkeypatch.setenv("GRIDGATE_REGISTRY_URL", registry_url(tmp_path))
    monkeypatch.setenv("GRIDGATE_AUDIT_PATH", str(tmp_path / "audit.sqlite3"))
    monkeypatch.setenv("GRIDGATE_LOG_LEVEL", "WARNING")
    yield Raised(tmp_path, clock, gas, smoke)


def gridgate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`gridgate ARGV` as an operator runs it: exit status, stdout, stderr."""
    capsys.readouterr()
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse refusing the command line
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_an_alert_is_listed_shown_and_taken_through_its_lifecycle_from_a_terminal(
    raised: Raised, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs: list[str] = []

    def run(*argv: str) -> tuple[int, str, str]:
        status, out, err = gridgate(capsys, *argv)
        outputs.extend((out, err))
        return status, out, err

    # list: open alerts, one line each within 80 columns, places by their names
    status, out, _ = run("alerts", "list")
    assert status == 0
    lines = out.splitlines()
    assert all(columns(line) <= 79 for line in lines), lines
    gas_line = next(line for line in lines if line.split()[0] == str(raised.gas))
    assert gas_line.split()[1:4] == ["I", "gas_leak", "notified"]
    assert "3号楼 2单元 1201" in gas_line and gas_line.rstrip().endswith("—")
    assert any(line.split()[0] == str(raised.smoke) for line in lines)

    # filters: a place by its codes, severity, kind
    assert _ids(run("alerts", "list", "--place", "b03")[1]) == [raised.gas]
    assert _ids(run("alerts", "list", "--place", "b05/u2")[1]) == [raised.smoke]
    assert _ids(run("alerts", "list", "--place", "xf/g01")[1]) == [raised.smoke, raised.gas]
    assert _ids(run("alerts", "list", "--kind", "smoke")[1]) == [raised.smoke]
    assert _ids(run("alerts", "list", "--severity", "II")[1]) == []
    listed = json.loads(run("alerts", "list", "--json", "--community", "xf")[1])
    assert [a["id"] for a in listed["data"]] == [raised.smoke, raised.gas]
    assert listed["data"][1]["place_names"] == ["幸福小区", "第一网格", "3号楼", "2单元", "1201"]

    # show: the timeline and what the state allows
    status, out, _ = run("alerts", "show", str(raised.gas))
    assert status == 0
    assert "3号楼 2单元 1201" in out and "gas-b03-u2-1201" in out
    timeline = out[out.index("timeline") : out.index("notifications")]
    assert [w for w in ("raised", "notified") if w in timeline] == ["raised", "notified"]
    assert f"{UNIT_HEAD} " in out[out.index("notifications") :]
    assert "next: ack" in out

    # a member of another building is refused, and nothing changes
    status, _, err = run("alerts", "ack", str(raised.gas), "--as", OTHER_UNIT_HEAD)
    assert status == 1
    assert f"member {OTHER_UNIT_HEAD} is not responsible for alert {raised.gas}" in err
    assert UNIT_HEAD in err  # who is
    assert raised.alert(raised.gas).state is AlertState.NOTIFIED

    # a step the state does not allow: the lifecycle's message, with what it allows
    status, _, err = run("alerts", "close", str(raised.gas), "--as", UNIT_HEAD, "--rating", "5")
    assert status == 1
    assert f"alert {raised.gas} is notified: it cannot be closed; it can be acknowledged" in err
    assert "allowed now: ack" in err

    # acknowledge: escalation for not acknowledging stops
    status, out, _ = run("alerts", "ack", str(raised.gas), "--as", UNIT_HEAD)
    assert status == 0, out
    assert "escalation for not acknowledging stopped" in out
    acked = raised.alert(raised.gas)
    assert acked.state is AlertState.ACKNOWLEDGED and acked.ack_deadline_ns is None
    registry, audit, store = raised.open()
    try:
        router = Router(load_routing_policy(), registry, environ=ENV)
        escalator = Escalator(store, router, outbox=Outbox(registry.engine))
        overdue = escalator.due(now_ns=raised.clock.now + (ACK_WITHIN_S + 1) * S)
    finally:
        registry.close()
        audit.close()
    assert [e.alert.id for e in overdue] == [raised.smoke]  # the one nobody acknowledged

    status, out, _ = run("alerts", "handle", str(raised.gas), "--as", BUILDING_HEAD)
    assert status == 0 and raised.alert(raised.gas).state is AlertState.HANDLING
    feedback = f"关阀通风，燃气公司已到场；住户电话 {PHONE}"
    status, out, _ = run(
        "alerts", "resolve", str(raised.gas), "--as", BUILDING_HEAD, "--feedback", feedback
    )
    assert status == 0 and raised.alert(raised.gas).state is AlertState.RESOLVED
    status, out, _ = run("alerts", "close", str(raised.gas), "--as", UNIT_HEAD, "--rating", "5")
    assert status == 0 and raised.alert(raised.gas).state is AlertState.CLOSED

    # reopen: back in handling with a fresh resolve limit (the lifecycle has the router)
    before = time.time_ns()
    status, out, _ = run("alerts", "reopen", str(raised.gas), "--as", UNIT_HEAD)
    assert status == 0, out
    reopened = raised.alert(raised.gas)
    assert reopened.state is AlertState.HANDLING
    assert reopened.resolve_deadline_ns is not None
    assert reopened.resolve_deadline_ns >= before + RESOLVE_WITHIN_S * S

    # the whole history, who and when
    status, out, _ = run("alerts", "show", str(raised.gas))
    timeline = out[out.index("timeline") : out.index("notifications")]
    steps = [w[3] for w in map(str.split, timeline.splitlines()) if w[2:3] and w[2][0] == "#"]
    assert steps == ["raised", "notified", "acknowledged", "handling", "resolved", "closed",
                     "reopened"]  # fmt: skip
    assert f"{UNIT_HEAD} (李建国)" in timeline and f"{BUILDING_HEAD} (张伟)" in timeline
    assert "<redacted>" in out and "rating    5/5" in out
    detail = json.loads(run("alerts", "show", str(raised.gas), "--json")[1])
    assert detail["acknowledged_by"] == UNIT_HEAD and detail["rating"] == 5
    assert [s["step"] for s in detail["timeline"]][-1] == "reopened"
    assert {d["member_id"] for d in detail["deliveries"]} >= {UNIT_HEAD, BUILDING_HEAD}

    # every step was audited, and the audit log agrees with the alert steps
    status, out, _ = run("audit", "verify")
    assert status == 0, out
    assert "chain intact" in out and "every alert record matches an alert step" in out

    # nothing personal on the terminal: no phone (feedback, a member's SMS channel), no
    # webhook secret
    text = "\n".join(outputs)
    for secret in (PHONE, "13912345678", "token=", "s3cret", "t0k"):
        assert secret not in text, secret


def test_refusals_and_bad_input_say_what_to_do(
    raised: Raised, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    status, _, err = gridgate(capsys, "alerts", "ack", "99999", "--as", UNIT_HEAD)
    assert status == 1 and "no alert 99999" in err
    status, _, err = gridgate(capsys, "alerts", "show", "99999")
    assert status == 1 and "no alert 99999" in err
    status, _, err = gridgate(capsys, "alerts", "ack", str(raised.gas), "--as", "m-nobody")
    assert status == 1 and "'m-nobody' is not an active grid member" in err
    # an action needs --as; resolve needs feedback, close a rating of 1-5
    assert gridgate(capsys, "alerts", "ack", str(raised.gas))[0] == 2
    assert gridgate(capsys, "alerts", "resolve", str(raised.gas), "--as", UNIT_HEAD)[0] == 2
    assert gridgate(capsys, "alerts", "close", str(raised.gas), "--as", UNIT_HEAD,
                    "--rating", "6")[0] == 2  # fmt: skip
    status, _, err = gridgate(capsys, "alerts", "ack", str(raised.gas), "--as", UNIT_HEAD)
    assert status == 0
    status, _, err = gridgate(
        capsys, "alerts", "resolve", str(raised.gas), "--as", UNIT_HEAD, "--feedback", "  "
    )
    assert status == 2 and "resolving needs feedback" in err
    assert raised.alert(raised.gas).state is AlertState.ACKNOWLEDGED
    status, _, err = gridgate(capsys, "alerts", "list", "--place", "b09")
    assert status == 2 and "no place 'b09'" in err and "b03/u2" in err
    status, _, err = gridgate(capsys, "alerts", "list", "--community", "zz")
    assert status == 2 and "no community 'zz'" in err
    status, _, err = gridgate(capsys, "alerts", "list", "--severity", "V")
    assert status == 2 and "I, II, III or IV" in err
    # the list shows who acknowledged, and --all/--state reach finished alerts
    status, out, _ = gridgate(capsys, "alerts", "list", "--state", "acknowledged")
    assert _ids(out) == [raised.gas] and out.splitlines()[1].rstrip().endswith(UNIT_HEAD)
    assert _ids(gridgate(capsys, "alerts", "list", "--all", "--severity", "I")[1]) == [
        raised.smoke, raised.gas]  # fmt: skip
    # no registry: said, not created
    monkeypatch.setenv("GRIDGATE_REGISTRY_URL", f"sqlite:///{tmp_path / 'none.sqlite3'}")
    status, _, err = gridgate(capsys, "alerts", "list")
    assert status == 2 and "no registry at" in err and "GRIDGATE_REGISTRY_URL" in err
    assert not (tmp_path / "none.sqlite3").exists()


def _ids(out: str) -> list[int]:
    """The alert ids of a list's lines (id, then severity)."""
    rows = [line.split() for line in out.splitlines()]
    return [int(w[0]) for w in rows if len(w) > 2 and w[1] in Severity.__members__]
