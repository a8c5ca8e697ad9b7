"""Residents, the pseudonym vault and per-person consent (R3.3) in the registry.

ID numbers arrive in the fleet file and leave as pseudonyms, one per key of the ring; the raw
number is never written anywhere (checked on the database file's bytes).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from devices.location import Location
from gateway.audit.store import AuditStore
from gateway.registry import ConsentCache, FleetFileError, Registry, import_file
from gateway.registry.cli import main as registry_main
from gateway.registry.importer import rekey_file
from gateway.registry.records import AccessRole, Resident
from privacy.audit import AuditAction
from privacy.keys import KeyRing
from privacy.operators import pseudonymise
from tests.support.registry_files import FLEET, NUMBERS, OTHER, SMALL_YAML, write

RESIDENTS_LINE = SMALL_YAML.count("\n") + 1  # the line of "residents:"


def ring(*kids: str) -> KeyRing:
    return KeyRing([(kid, secrets.token_bytes(32)) for kid in kids])


def p(number: str, keyring: KeyRing, kid: str | None = None) -> str:
    return pseudonymise(number, "id_number", keyring, kid)


@pytest.fixture
def audit(tmp_path: Path) -> AuditStore:
    return AuditStore(tmp_path / "audit.sqlite3")


@pytest.fixture
def registry(tmp_path: Path, audit: AuditStore) -> Registry:
    return Registry.open(f"sqlite:///{tmp_path / 'registry.sqlite3'}", audit=audit)


@pytest.fixture
def k1() -> KeyRing:
    return ring("k1")


def imported(tmp_path: Path, registry: Registry, keyring: KeyRing, text: str = FLEET) -> Registry:
    import_file(registry, write(tmp_path, "fleet.yaml", text), keyring=keyring, now_ns=1_000)
    return registry


def test_residents_and_their_pseudonyms_are_stored(
    tmp_path: Path, registry: Registry, k1: KeyRing
) -> None:
    report = import_file(registry, write(tmp_path, "fleet.yaml", FLEET), keyring=k1, now_ns=1_000)
    assert (report.residents.total, report.residents.new) == (4, 4)
    assert report.vault is not None and report.vault.rows_added == 4
    assert "residents 4 (4 new, 0 updated)" in report.summary()
    assert registry.resident("r-1201-1") == Resident("r-1201-1", "h-b03-u2-1201", True, 1_000)
    assert registry.resident("r-0101-1") == Resident(
        "r-0101-1",
        "h-b03-u2-0101",
        True,
        1_709_222_400_000_000_000,  # 2024-03-01 00:00 +08
    )
    assert [r.id for r in registry.residents("h-b03-u2-0101")] == ["r-0101-1", "r-0101-2"]
    for rid, number in NUMBERS.items():
        assert registry.pseudonyms_of(rid) == {"k1": p(number, k1)}
        resident = registry.resident_for_pseudonym(p(number, k1))
        assert resident is not None and resident.id == rid
    assert registry.face_consent_by_pseudonym(p(NUMBERS["r-1201-1"], k1))
    assert not registry.face_consent_by_pseudonym(p(NUMBERS["r-0101-2"], k1))
    assert not registry.face_consent_by_pseudonym(p(NUMBERS["r-b05-1"], k1))  # unsaid: no
    assert not registry.face_consent_by_pseudonym(p(OTHER, k1))  # a visitor
    assert registry.resident_for_pseudonym(p(OTHER, k1)) is None
    assert registry.consent_snapshot() == {
        p(NUMBERS["r-1201-1"], k1): True,
        p(NUMBERS["r-0101-1"], k1): True,
        p(NUMBERS["r-0101-2"], k1): False,
        p(NUMBERS["r-b05-1"], k1): False,
    }
    counts = registry.counts()
    assert (counts.residents, counts.residents_face_consent) == (4, 2)
    # Household-level consent is kept as before.
    assert registry.face_consent("h-b03-u2-0101") and not registry.face_consent("h-b03-u2-1201")


def test_no_raw_id_number_reaches_any_file(
    tmp_path: Path, registry: Registry, audit: AuditStore, k1: KeyRing
) -> None:
    imported(tmp_path, registry, k1)
    registry.set_resident_face_consent("r-0101-1", False, 2_000, "staff-1", "resident asked")
    registry.close()
    audit.close()
    files = [f for f in tmp_path.iterdir() if f.name.startswith(("registry", "audit"))]
    assert any(f.name == "registry.sqlite3" for f in files)
    for f in files:
        data = f.read_bytes()
        for number in NUMBERS.values():
            for needle in (number, number[:17], number[6:14] + number[14:]):
                assert needle.encode() not in data, f"{f.name} holds an ID number"
                assert needle.encode("utf-16-le") not in data


def test_same_resident_same_pseudonym_other_key_unrelated(
    tmp_path: Path, registry: Registry, k1: KeyRing
) -> None:
    imported(tmp_path, registry, k1)
    first = registry.consent_snapshot()
    imported(tmp_path, registry, k1)  # re-import: the same pseudonyms, nothing new
    assert registry.consent_snapshot() == first
    number = NUMBERS["r-0101-1"]
    assert p(number, k1) == p(f" {number.lower()} ", k1) == registry.pseudonyms_of("r-0101-1")["k1"]
    other = ring("k1")  # same key id, another secret
    assert p(number, other) != p(number, k1)
    tokens = {p(n, k1).split(":", 1)[1] for n in NUMBERS.values()}
    assert len(tokens) == len(NUMBERS)
    assert all(number not in t and number[-6:] not in t for t in tokens)


def test_rotation_keeps_old_pseudonyms_matching(
    tmp_path: Path, registry: Registry, audit: AuditStore
) -> None:
    secret = secrets.token_bytes(32)
    k1 = KeyRing([("k1", secret)])
    imported(tmp_path, registry, k1)
    # Rotation: a new current key, the old one kept (same secret) to recognise old pseudonyms.
    rotated = KeyRing([("k2", secrets.token_bytes(32)), ("k1", secret)])
    report = rekey_file(registry, tmp_path / "fleet.yaml", rotated)
    assert report.vault.rows_added == 4 and report.vault.rotated == ["k2"]
    for rid, number in NUMBERS.items():
        by_kid = registry.pseudonyms_of(rid)
        assert set(by_kid) == {"k1", "k2"}
        assert by_kid["k1"] == p(number, k1) and by_kid["k2"] == p(number, rotated)
        assert by_kid["k1"].split(":")[1] != by_kid["k2"].split(":")[1]
        for pseudonym in by_kid.values():
            found = registry.resident_for_pseudonym(pseudonym)
            assert found is not None and found.id == rid
    assert len(registry.consent_snapshot()) == 8
    assert registry.vault_kids() == {"k1": 4, "k2": 4}
    # Rekeying again adds nothing; a re-import with the rotated ring neither.
    assert rekey_file(registry, tmp_path / "fleet.yaml", rotated).vault.rows_added == 0
    again = import_file(registry, tmp_path / "fleet.yaml", keyring=rotated)
    assert again.vault is not None and again.vault.rows_added == 0
    # The key rotation of the vault is on the audit record.
    rotations = [r for r in audit.records() if r.action is AuditAction.KEY_ROTATION]
    assert len(rotations) == 1 and rotations[0].details["new_kids"] == ["k2"]


def test_reimport_with_a_new_key_in_the_ring_adds_its_rows(
    tmp_path: Path, registry: Registry
) -> None:
    secret = secrets.token_bytes(32)
    imported(tmp_path, registry, KeyRing([("k1", secret)]))
    rotated = KeyRing([("k2", secrets.token_bytes(32)), ("k1", secret)])
    report = import_file(registry, tmp_path / "fleet.yaml", keyring=rotated)
    assert report.vault is not None and report.vault.rotated == ["k2"]
    assert report.vault.rows_added == 4 and report.vault.rows_removed == 0
    assert registry.vault_kids() == {"k1": 4, "k2": 4}


def test_corrected_id_number_replaces_the_old_pseudonyms(
    tmp_path: Path, registry: Registry, k1: KeyRing
) -> None:
    imported(tmp_path, registry, k1)
    seen: list[dict[str, bool]] = []
    registry.add_consent_listener(lambda changes: seen.append(dict(changes)))
    fixed = FLEET.replace(NUMBERS["r-0101-2"], OTHER)
    report = import_file(registry, write(tmp_path, "fleet.yaml", fixed), keyring=k1)
    assert report.vault is not None and report.vault.rows_removed == 1
    assert registry.resident_for_pseudonym(p(NUMBERS["r-0101-2"], k1)) is None
    found = registry.resident_for_pseudonym(p(OTHER, k1))
    assert found is not None and found.id == "r-0101-2"
    assert seen and seen[-1][p(NUMBERS["r-0101-2"], k1)] is False


def test_residents_need_the_key_ring(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "fleet.yaml", FLEET))
    (problem,) = caught.value.problems
    assert problem.line == RESIDENTS_LINE + 1
    assert "need the pseudonym key ring" in problem.message
    assert registry.counts().households == 0  # all or nothing


def test_bad_resident_rows_are_reported_without_echoing_numbers(
    tmp_path: Path, registry: Registry, k1: KeyRing
) -> None:
    bad_check = NUMBERS["r-1201-1"][:17] + ("1" if NUMBERS["r-1201-1"][17] != "1" else "2")
    text = (
        SMALL_YAML
        + f"""\
residents:
  - {{id: r-a, household: h-b03-u2-1201, id_number: "{bad_check}"}}
  - {{id: r-b, household: h-b03-u2-1201, id_number: "110105194902300021"}}
  - {{id: r-c, household: h-nowhere, id_number: "{NUMBERS["r-0101-1"]}"}}
  - {{id: r-d, household: h-b03-u2-0101, id_number: "{NUMBERS["r-0101-1"]}"}}
  - {{id: r-e, household: h-b03-u2-0101}}
  - {{id: r-f, household: h-b03-u2-0101, id_number: 1.10105E+17, face_consent: maybe}}
  - {{id: r-c, household: h-b03-u2-0101, id_number: "{NUMBERS["r-b05-1"]}"}}
  - {{id: r-g, household: h-b05-u1-0101, id_number: "{NUMBERS["r-0101-2"]}", face_consent_at: 2024-01-01, name: 张三}}
"""
    )
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "bad.yaml", text), keyring=k1)
    got = [(pr.line - RESIDENTS_LINE, pr.message) for pr in caught.value.problems]
    messages = "\n".join(m for _, m in got)
    for number in (*NUMBERS.values(), bad_check, "110105194902300021", "1.10105E+17"):
        assert number not in messages
    assert "张三" not in messages
    expect = [
        (1, "resident r-a: id_number is not a valid resident ID number"),
        (2, "resident r-b: id_number is not a valid resident ID number"),  # 1949-02-30
        (3, "resident r-c: household h-nowhere not found"),
        (4, "resident r-d: same ID number as resident r-c (line"),
        (5, "resident r-e: missing id_number"),
        (6, "resident r-f: face_consent must be true or false"),
        (7, "duplicate resident id r-c (first at line"),
        (8, "resident #8: unknown key 'name'"),
        (8, "resident r-g: face_consent_at without face_consent"),
    ]
    for line, start in expect:
        assert any(g[0] == line and start in g[1] for g in got), (line, start, got)
    assert registry.counts().residents == 0


def test_one_person_registered_under_two_ids_is_refused(
    tmp_path: Path, registry: Registry, k1: KeyRing
) -> None:
    imported(tmp_path, registry, k1)
    text = f"""\
resident_id,household,id_number,face_consent
r-new,h-b05-u1-0101,{NUMBERS["r-0101-1"]},true
"""
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "residents.csv", text), keyring=k1)
    assert "same person (ID number) is registered as resident r-0101-1" in str(
        caught.value.problems
    )


def test_residents_csv(tmp_path: Path, registry: Registry, k1: KeyRing) -> None:
    import_file(registry, write(tmp_path, "small.yaml", SMALL_YAML), now_ns=1_000)
    text = f"""\
resident_id,household,id_number,face_consent,face_consent_at
r-c1,h-b01-u1-0101,{NUMBERS["r-0101-1"].lower()},是,2024-05-01
r-c2,h-b01-u1-0101,{OTHER},no,
"""
    report = import_file(registry, write(tmp_path, "residents.csv", text), keyring=k1)
    assert report.kind == "residents_csv" and report.residents.new == 2
    assert registry.face_consent_by_pseudonym(p(NUMBERS["r-0101-1"], k1))
    assert not registry.face_consent_by_pseudonym(p(OTHER, k1))


def test_withdrawal_applies_at_once_and_is_audited(
    tmp_path: Path, registry: Registry, audit: AuditStore, k1: KeyRing
) -> None:
    imported(tmp_path, registry, k1)
    cache = registry.consent_snapshot()
    registry.add_consent_listener(cache.update)
    pseudonym = p(NUMBERS["r-1201-1"], k1)
    assert registry.face_consent_by_pseudonym(pseudonym) and cache[pseudonym]
    before = audit.count()
    # A withdrawal stamped earlier than the grant still applies, at once.
    assert not registry.set_resident_face_consent("r-1201-1", False, 500, "app:r-1201-1", "app")
    assert not registry.face_consent_by_pseudonym(pseudonym) and not cache[pseudonym]
    # A grant older than the withdrawal is stale: ignored, but on record.
    assert not registry.set_resident_face_consent("r-1201-1", True, 400, "desk-1", "form")
    assert registry.set_resident_face_consent("r-1201-1", True, 600, "desk-1", "signed form")
    assert registry.face_consent_by_pseudonym(pseudonym) and cache[pseudonym]
    records = list(audit.records(from_seq=before + 1))
    assert [r.action for r in records] == [AuditAction.CONSENT_CHANGE] * 3
    assert [(r.actor, r.subject) for r in records] == [
        ("app:r-1201-1", "r-1201-1"), ("desk-1", "r-1201-1"), ("desk-1", "r-1201-1"),
    ]  # fmt: skip
    assert records[0].details["in_force"] is False and records[0].details["reason"] == "app"
    assert records[1].details["ignored_as_stale"] is True
    assert records[2].details["before"] is False and records[2].details["in_force"] is True
    assert audit.verify().ok
    with pytest.raises(KeyError):
        registry.set_resident_face_consent("r-nobody", False, 1, "desk-1", "x")
    with pytest.raises(ValueError):
        registry.set_resident_face_consent("r-1201-1", False, 1, "desk-1", " ")


def test_consent_cache_for_the_hot_path(
    tmp_path: Path, registry: Registry, audit: AuditStore, k1: KeyRing
) -> None:
    imported(tmp_path, registry, k1)
    now = [0.0]
    cache = ConsentCache(registry, max_age_s=30, clock=lambda: now[0])
    pseudonym = p(NUMBERS["r-1201-1"], k1)
    assert cache(pseudonym) and not cache(p(OTHER, k1)) and len(cache) == 4
    registry.set_resident_face_consent("r-1201-1", False, 5, "app:r-1201-1", "withdrawn in app")
    assert not cache(pseudonym)  # this process's change: at once
    # Another process (its own Registry on the same database) grants it again …
    other = Registry.open(f"sqlite:///{tmp_path / 'registry.sqlite3'}", audit=audit)
    other.set_resident_face_consent("r-1201-1", True, 10, "desk-1", "signed form")
    other.close()
    assert not cache(pseudonym)
    now[0] = 31.0  # … seen after at most max_age_s
    assert cache(pseudonym)


def test_consent_changes_need_an_audit_log(tmp_path: Path, k1: KeyRing) -> None:
    registry = Registry.open(f"sqlite:///{tmp_path / 'plain.sqlite3'}")
    imported(tmp_path, registry, k1)
    from devices.errors import ConfigError

    with pytest.raises(ConfigError, match="audit"):
        registry.set_resident_face_consent("r-1201-1", False, 1, "desk-1", "asked")
    assert registry.resident("r-1201-1") == Resident("r-1201-1", "h-b03-u2-1201", True, 1_000)


def test_file_cannot_regrant_a_direct_withdrawal_and_import_is_audited(
    tmp_path: Path, registry: Registry, audit: AuditStore, k1: KeyRing
) -> None:
    imported(tmp_path, registry, k1)
    first = [r for r in audit.records() if r.action is AuditAction.CONSENT_CHANGE]
    assert len(first) == 1 and first[0].details["new_residents_with_consent"] == 2
    registry.set_resident_face_consent("r-0101-1", False, 1_800_000_000_000_000_000, "app", "no")
    report = import_file(registry, tmp_path / "fleet.yaml", keyring=k1)
    assert any("resident r-0101-1: the file grants face consent" in n.message
               for n in report.notices)  # fmt: skip
    assert not registry.face_consent_by_pseudonym(p(NUMBERS["r-0101-1"], k1))
    # The file withdraws a consent: applies, and the import's audit record lists it.
    import_file(
        registry,
        write(tmp_path, "fleet.yaml", FLEET.replace(
            f'"{NUMBERS["r-1201-1"]}", face_consent: true', f'"{NUMBERS["r-1201-1"]}", face_consent: false'
        )),
        keyring=k1,
    )  # fmt: skip
    assert not registry.face_consent_by_pseudonym(p(NUMBERS["r-1201-1"], k1))
    last = [r for r in audit.records() if r.action is AuditAction.CONSENT_CHANGE][-1]
    assert last.details["withdrawn"] == ["r-1201-1"] and last.subject == "fleet-import"
    assert audit.verify().ok


def test_dry_run_writes_no_resident(tmp_path: Path, registry: Registry, k1: KeyRing) -> None:
    path = write(tmp_path, "fleet.yaml", FLEET)
    report = import_file(registry, path, keyring=k1, dry_run=True)
    assert report.residents.new == 4 and not report.audited
    assert registry.counts().residents == 0 and registry.consent_snapshot() == {}


def test_devices_carry_gate_approval(tmp_path: Path, registry: Registry, k1: KeyRing) -> None:
    imported(tmp_path, registry, k1)
    approved = {d.device_id for d in registry.all_devices() if d.gate_approved}
    assert approved == {"gate-main"}
    gate = registry.device("gate-main")
    assert gate is not None and gate.gate_approved and gate.location == Location("xf")


def test_approver_role_is_granted_and_revoked_on_the_record(
    registry: Registry, audit: AuditStore
) -> None:
    assert not registry.has_role("lead-1", AccessRole.APPROVER)
    assert registry.grant_role("lead-1", AccessRole.APPROVER, actor="admin", at_ns=1)
    assert not registry.grant_role("lead-1", AccessRole.APPROVER, actor="admin", at_ns=2)
    assert registry.has_role("lead-1", AccessRole.APPROVER)
    assert registry.users_with_role(AccessRole.APPROVER) == ["lead-1"]
    assert registry.revoke_role("lead-1", AccessRole.APPROVER, actor="admin")
    assert not registry.revoke_role("lead-1", AccessRole.APPROVER, actor="admin")
    records = list(audit.records())
    assert [(r.action, r.subject, r.details["granted"]) for r in records] == [
        (AuditAction.POLICY_CHANGE, "lead-1", True),
        (AuditAction.POLICY_CHANGE, "lead-1", False),
    ]


def test_registry_cli_import_and_rekey(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRIDGATE_REGISTRY_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("GRIDGATE_AUDIT_PATH", str(tmp_path / "cli-audit.sqlite3"))
    monkeypatch.delenv("GRIDGATE_PSEUDONYM_KEYS", raising=False)
    monkeypatch.setenv("GRIDGATE_PSEUDONYM_KEY_FILE", str(tmp_path / "none.key"))
    path = write(tmp_path, "fleet.yaml", FLEET)
    assert registry_main(["registry", "import", str(path)]) == 1  # the key file is missing
    err = capsys.readouterr().err
    assert "need the pseudonym key ring" in err and "none.key does not exist" in err
    assert registry_main(["registry", "rekey", str(path)]) == 2
    assert "rekey needs the pseudonym key ring" in capsys.readouterr().err
    devices_only = write(tmp_path, "devices.yaml", SMALL_YAML)  # no residents: no key needed
    assert registry_main(["registry", "import", str(devices_only)]) == 0
    capsys.readouterr()
    one, two = secrets.token_hex(32), secrets.token_hex(32)
    monkeypatch.setenv("GRIDGATE_PSEUDONYM_KEYS", f"k1:{one}")
    assert registry_main(["registry", "import", str(path)]) == 0
    assert "residents 4 (4 new, 0 updated)" in capsys.readouterr().out
    monkeypatch.setenv("GRIDGATE_PSEUDONYM_KEYS", f"k2:{two},k1:{one}")
    assert registry_main(["registry", "rekey", str(path)]) == 0
    assert "pseudonym vault +4 rows under k2, k1" in capsys.readouterr().out
    assert registry_main(["registry", "show"]) == 0
    assert "residents         4  (face consent 2)" in capsys.readouterr().out
    with AuditStore(tmp_path / "cli-audit.sqlite3") as audit:
        assert [r.action for r in audit.records()] == [
            AuditAction.CONSENT_CHANGE, AuditAction.KEY_ROTATION,
        ]  # fmt: skip


def test_a_residents_car_is_kept_as_its_plates_pseudonym_under_every_key(
    tmp_path: Path, registry: Registry
) -> None:
    from gateway.registry import RegisteredVehicles

    with_car = FLEET.replace(
        'r-0101-2, household: h-b03-u2-0101, id_number: "' + NUMBERS["r-0101-2"] + '", face_consent: false}',
        'r-0101-2, household: h-b03-u2-0101, id_number: "' + NUMBERS["r-0101-2"] + '", face_consent: false, plate: "沪AD12345"}',
    )  # fmt: skip
    assert "plate:" in with_car
    k1_secret, k2_secret = secrets.token_bytes(32), secrets.token_bytes(32)
    old = KeyRing([("k1", k1_secret)])
    import_file(registry, write(tmp_path, "fleet.yaml", with_car), keyring=old, now_ns=1_000)
    vehicles = RegisteredVehicles(registry, old)
    assert vehicles("沪AD12345") == pseudonymise("沪AD12345", "plate", old)
    assert vehicles("沪 A-D12345") == vehicles("沪AD12345")  # one car however a camera spells it
    assert vehicles("京A12345") is None  # a visitor
    raw = (tmp_path / "registry.sqlite3").read_bytes()
    assert "沪AD12345".encode() not in raw
    # after a rotation, rekey adds the new key's pseudonym: the car is still known
    rotated = KeyRing([("k2", k2_secret), ("k1", k1_secret)])
    rekey_file(registry, write(tmp_path, "fleet.yaml", with_car), rotated)
    assert RegisteredVehicles(registry, rotated)("沪AD12345") == pseudonymise(
        "沪AD12345", "plate", rotated
    )
    # a bad plate is refused by name, never echoed
    bad = with_car.replace('plate: "沪AD12345"', 'plate: "not a plate"')
    with pytest.raises(FleetFileError) as caught:
        import_file(registry, write(tmp_path, "bad.yaml", bad), keyring=old, now_ns=2_000)
    [problem] = [str(p) for p in caught.value.problems]
    assert "plate is not a vehicle plate" in problem and "not a plate" not in problem
