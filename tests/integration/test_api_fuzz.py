"""Schemathesis fuzzes the running API (every operation in its /openapi.json) as a unit head
and as a community administrator (the re-identification and audit operations also as an
approver and an auditor), without credentials and with a forged key: no answer is a server
error, every 4xx is a problem (`application/problem+json` whose `status` is the HTTP status),
every success is as documented, and none comes without credentials where they are needed.

The gateway ingests a real gas leak first, so alerts, devices and readings exist; beside the
schema-generated cases, each operation also gets cases built around ids and places that exist
(the leak's alert, its detector, a re-identification request, the caller's places, a field
with readings), so the fuzzing reaches past "404 no such alert". Hypothesis is derandomized
and bounded. The API serves in this test's event loop; the synchronous fuzzing runs in a
thread. Every failure is collected and reported at the end."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.errors import FailureGroup

from devices.places import PlaceLevel, location_key, place_key
from gateway.registry import Registry, Role
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.api import PROBLEM, add_accounts, running_api
from tests.support.community import community_settings, gas_detectors, leaking
from tests.support.registered import registered_community
from tests.support.services import Services

pytestmark = pytest.mark.integration

EXAMPLES = 20  # per operation, generation mode and caller
FEW = 4  # for callers without valid credentials
SPARE_TOKENS = 3  # logged in beforehand for POST /auth/logout (which ends the token it is sent)
LOGOUT = ("POST", "/api/v1/auth/logout")
OPERATIONS = 31  # every route in /openapi.json (the two WebSocket feeds are not in it)
# what a success must be (schemathesis checks): a documented status, media type and schema
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # nothing fails inside: nothing to shrink
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


@dataclass(frozen=True)
class Known:
    """Ids and places that exist, for cases that reach past the 404s."""

    alert_ids: list[int]
    device_ids: list[str]
    request_ids: list[str]  # the unit head's re-identification requests, to approve
    to_deny: list[str]  # and others, to deny
    places: list[str]  # inside the callers' scopes, and one outside a unit head's
    members: list[str]
    fields: list[tuple[str, str]]  # (measurement, field) with readings
    span: dict[str, str]  # start and end around them


@dataclass(frozen=True)
class Caller:
    name: str
    credential: str | None
    authenticated: bool = True
    spares: list[str] = field(default_factory=list)  # fresh tokens for POST /auth/logout
    examples: int = EXAMPLES
    only: str = "/"  # the paths under this prefix


@dataclass
class Report:
    cases: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    # (caller, method, path, status, what is wrong) → the first such request and answer
    failures: dict[tuple[str, str, str, int, str], tuple[str, str]] = field(default_factory=dict)

    def fail(self, caller: Caller, response: Any, path: str, why: str) -> None:
        request = response.request
        key = (caller.name, str(request.method), path, int(response.status_code), why)
        body = response.content.decode("utf-8", "replace")
        self.failures.setdefault(key, (str(request.url), body[:300]))

    def readable(self) -> str:
        return "\n".join(
            f"{caller:9} {method:6} {path} → {status}: {why}\n    {url}\n    {body!r}"
            for (caller, method, path, status, why), (url, body) in sorted(self.failures.items())
        )


async def test_fuzzing_every_operation_finds_no_server_error_and_only_problem_4xx(
    services: Services, unique: str, influx_db: str, tmp_path: Path
) -> None:
    community, registry_url, _ = registered_community(60, 71, unique, tmp_path)
    detector = gas_detectors(community)[0]
    settings_ = community_settings(services, unique, influx_db, tmp_path, registry_url,
                                   audit_path=tmp_path / "audit.sqlite3")  # fmt: skip
    with Registry.open(registry_url) as registry:
        responsible = registry.members_for(detector.location)
        unit_head = next(m.id for m in responsible if m.role is Role.UNIT_HEAD)
        resident = registry.residents()[0]
        pseudonym = next(iter(registry.pseudonyms_of(resident.id).values()))
    add_accounts(settings_, {
        unit_head: {},
        "admin1": {"role": "admin", "scope": unique},
        "auditor1": {"role": "auditor", "scope": unique},
        "approver1": {"role": "approver", "scope": unique},
    })  # fmt: skip
    other_building = next(
        place_key(d.location, PlaceLevel.BUILDING) for d in community.devices
        if d.location.building != detector.location.building
    )  # fmt: skip
    try:
        async with running_api(settings_) as api:
            publish_all(services.mqtt_host, services.mqtt_port, leaking(detector))
            # every login before the fuzzing: its wrong passwords soon throttle this address
            member, admin, auditor, approver = [
                await api.login(user) for user in (unit_head, "admin1", "auditor1", "approver1")
            ]
            member_spares = [await api.login(unit_head) for _ in range(SPARE_TOKENS)]
            admin_spares = [await api.login("admin1") for _ in range(SPARE_TOKENS)]
            async with api.client(member) as c:
                alert_ids = await _alert_ids(c)
                request_ids = []
                for purpose in ("contact the household", "check on the resident", "find a key"):
                    r = await c.post("/api/v1/reident/requests", json={
                        "pseudonym": pseudonym, "reason": "gas leak follow-up",
                        "purpose": purpose})  # fmt: skip
                    assert r.status_code == 201, r.text
                    request_ids.append(r.json()["id"])
            known = Known(
                alert_ids=alert_ids,
                device_ids=[detector.device_id, community.devices[-1].device_id],
                request_ids=request_ids[:2],
                to_deny=request_ids[2:],
                places=[unique, place_key(detector.location, PlaceLevel.BUILDING),
                        location_key(detector.location) or unique, other_building],
                members=[m.id for m in responsible],
                fields=[("safety", "gas_lel_pct"), ("safety", "detector")],
                span={"start": _iso(time.time() - 3600), "end": _iso(time.time() + 300)},
            )  # fmt: skip
            forged = "ggk_0123456789ab_" + "A" * 43  # shaped like a key, but none
            callers = [  # the approver decides the unit head's requests before they resolve
                Caller("approver", approver, only="/api/v1/reident/"),
                Caller("auditor", auditor, only="/api/v1/audit"),
                Caller("unit head", member, spares=member_spares),
                Caller("admin", admin, spares=admin_spares),
                Caller("anonymous", None, authenticated=False, examples=FEW),
                Caller("forged", forged, authenticated=False, examples=FEW),
            ]
            started = time.monotonic()
            report = await asyncio.to_thread(_fuzz, api.url, callers, known)
            took = time.monotonic() - started
    finally:
        drop_session(services.mqtt_host, services.mqtt_port, settings_.mqtt_client_id)
    print(f"\n{report.cases} cases in {took:.0f} s; statuses {sorted(report.by_status.items())}")
    for label, statuses in sorted(report.by_operation.items()):
        print(f"  {label:50} {dict(sorted(statuses.items()))}")
    assert not report.failures, f"{len(report.failures)} failures:\n{report.readable()}"
    assert report.cases >= 2000, report.cases
    assert len(report.by_operation) >= OPERATIONS, sorted(report.by_operation)
    successes = sum(n for status, n in report.by_status.items() if status < 300)
    assert successes > 300, report.by_status  # the fuzzing got past the door


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


async def _alert_ids(client: httpx.AsyncClient) -> list[int]:
    deadline = time.monotonic() + 30
    while True:
        r = await client.get("/api/v1/alerts", params={"kind": "gas_leak"})
        assert r.status_code == 200, r.text
        if ids := [a["id"] for a in r.json()["data"]]:
            return ids
        assert time.monotonic() < deadline, "no alert listed"
        await asyncio.sleep(0.1)


def _fuzz(url: str, callers: list[Caller], known: Known) -> Report:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= OPERATIONS, [op.label for op in operations]
    report = Report()
    with requests.Session() as session:
        for caller in callers:
            for op in operations:
                if op.path.startswith(caller.only):
                    _fuzz_operation(session, url, op, caller, known, report)
    return report


def _fuzz_operation(
    session: requests.Session, url: str, op: Any, caller: Caller, known: Known, report: Report
) -> None:
    method, path = op.method.upper(), op.path
    spares = list(caller.spares)
    secured = bool(op.definition.raw.get("security"))

    def credential() -> str | None:
        if (method, path) != LOGOUT or not caller.spares:
            return caller.credential
        # never the caller's own token: a fresh one while they last, then one already ended
        return spares.pop() if len(spares) > 1 else spares[0]

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategy = op.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE and (around := _known_strategies(op, known)):
            strategy = st.one_of(strategy, st.one_of(around))

        @settings(HYPOTHESIS, max_examples=caller.examples)
        @given(case=strategy)
        def send(case: Any) -> None:
            token = credential()
            if token is None:  # none at all, rather than the bearer schemathesis made up
                case.headers = {k: v for k, v in (case.headers or {}).items()
                                if k.lower() != "authorization"}  # fmt: skip
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = case.call(base_url=url, session=session, headers=headers, timeout=30)
            # a negative case may leave the credentials out (schemathesis drops the header)
            sent = response.request.headers.get("Authorization")
            authenticated = (
                caller.authenticated and token is not None and sent == headers.get("Authorization")
            )
            _judge(report, caller, case, response, unauthorised=secured and not authenticated)

        try:
            send()
        except Unsatisfiable:  # nothing to negate (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE, (method, path)


def _known_strategies(op: Any, known: Known) -> list[st.SearchStrategy[Any]]:
    """Cases for `op` with ids and places that exist; the rest generated."""
    path_params = {p.name for p in op.path_parameters}
    query_params = {p.name for p in op.query}
    fixed: list[dict[str, Any]] = []
    if "alert_id" in path_params:
        fixed += [{"path_parameters": {"alert_id": i}} for i in known.alert_ids]
    if "device_id" in path_params:
        fixed += [{"path_parameters": {"device_id": i}} for i in known.device_ids]
    if "request_id" in path_params:
        ids = known.to_deny if op.path.endswith("/deny") else known.request_ids
        fixed += [{"path_parameters": {"request_id": i}} for i in ids]
    if "place" in query_params:
        fixed += [{"query": {"place": p}} for p in known.places]
    if {"measurement", "field"} <= query_params:
        fixed += [
            {"query": {"measurement": m, "field": f, "fn": fn, **known.span}}
            for m, f in known.fields for fn in ("mean", "count", "last")
        ]  # fmt: skip
    elif op.path.startswith("/api/v1/aggregates/"):
        fixed += [{"query": known.span}]
    if op.path.endswith("/coordinate"):
        fixed += [
            {"path_parameters": {"alert_id": i}, "body": {"to_member": m, "mode": mode}}
            for i in known.alert_ids[:1] for m in known.members[:2] for mode in ("add", "handover")
        ]  # fmt: skip
    return [op.as_strategy(generation_mode=GenerationMode.POSITIVE, **f) for f in fixed]


def _judge(report: Report, caller: Caller, case: Any, response: Any, *, unauthorised: bool) -> None:
    """Count the answer; a failure if it is a 5xx, a success without credentials where the
    operation needs them or that is not as documented, or a 4xx that is not a problem with
    the same status."""
    op = case.operation
    path = op.path
    status: int = response.status_code
    report.cases += 1
    report.by_status[status] += 1
    report.by_operation.setdefault(f"{op.method.upper()} {path}", Counter())[status] += 1
    if status >= 500:
        report.fail(caller, response, path, "server error")
    elif status < 400:
        if unauthorised:
            report.fail(caller, response, path, "answered without credentials")
        try:
            case.validate_response(response, checks=CONFORMANCE)
        except FailureGroup as exc:
            titles = sorted({f.title for f in exc.exceptions})
            report.fail(caller, response, path, f"not as documented: {'; '.join(titles)}")
    elif not ",".join(response.headers.get("content-type", [])).startswith(PROBLEM):
        report.fail(caller, response, path, f"4xx as {response.headers.get('content-type')}")
    else:
        try:
            problem = json.loads(response.content)
        except ValueError:
            problem = None
        if not isinstance(problem, dict) or problem.get("status") != status:
            report.fail(caller, response, path, "not a problem whose status is the HTTP status")
