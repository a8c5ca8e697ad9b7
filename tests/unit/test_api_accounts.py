"""API accounts, keys and tokens (R3.4) on a real SQLite registry with a fake clock: a member's
roles and places follow the registry, staff accounts need a role and a place, tokens expire
and die with a password change or a disabled account, keys are shown once and stored hashed,
and failed logins are throttled per account without telling which user names exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from gateway.api.accounts import (
    AccountError,
    AccountRow,
    Accounts,
    ApiKeyRow,
    LoginLimits,
    LoginRefused,
    LoginThrottled,
    Principal,
)
from gateway.registry import AccessRole
from privacy.audit import AuditAction
from tests.support.alert_world import Clock, World, build_world

PASSWORD = "correct horse battery"
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # tests only: fast hashes


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path)
    yield w
    w.registry.close()
    w.audit.close()


def accounts(w: World, **limits: float) -> Accounts:
    w.registry.audit = w.audit  # granting the approver role is audited
    return Accounts(w.registry, w.audit, clock_ns=w.clock, hasher=FAST,
                    limits=LoginLimits(**limits))  # type: ignore[arg-type]  # fmt: skip


def principal(a: Accounts, token: str) -> Principal:
    found = a.principal(token)
    assert found is not None
    return found


def test_a_members_account_takes_role_and_places_from_the_registry(world: World) -> None:
    a = accounts(world)
    a.add_user("m-bh-b03", PASSWORD, actor="test")
    token, expires = a.login("m-bh-b03", PASSWORD, "127.0.0.1")
    me = principal(a, token)
    assert (me.roles, me.scopes, me.kind) == (frozenset({"building_head"}), ("xf/g01/b03",), "user")
    assert me.member_role is not None and me.member_role.value == "building_head"
    assert me.sees("xf/g01/b03/u2/1201") and not me.sees("xf/g01/b05")
    assert not me.sees("xf/g01/b0")  # a prefix of a code is not inside
    assert me.covers("xf/g01") and not me.covers("xf/g02")
    assert expires == world.clock() + 8 * 3600 * 1_000_000_000
    with pytest.raises(AccountError, match="places come from the registry"):
        a.add_user("m-bh-b05", PASSWORD, scope="xf", actor="test")
    with pytest.raises(AccountError, match="already has an account"):
        a.add_user("m-bh-b03", PASSWORD, actor="test")


def test_staff_accounts_need_a_staff_role_and_a_known_place(world: World) -> None:
    a = accounts(world)
    with pytest.raises(AccountError, match="needs --role and --scope"):
        a.add_user("ops1", PASSWORD, actor="test")
    with pytest.raises(AccountError, match="role must be one of"):
        a.add_user("ops1", PASSWORD, role="building_head", scope="xf", actor="test")
    with pytest.raises(AccountError, match="no place"):
        a.add_user("ops1", PASSWORD, role="operator", scope="xf/g09", actor="test")
    with pytest.raises(AccountError, match="at least 10"):
        a.add_user("ops1", "short", role="operator", scope="xf", actor="test")
    with pytest.raises(AccountError, match="phone, ID or plate"):
        a.add_user("13812345678", PASSWORD, role="operator", scope="xf", actor="test")
    a.add_user("appr1", PASSWORD, role="approver", scope="xf", actor="test")
    assert world.registry.users_with_role(AccessRole.APPROVER) == ["appr1"]  # re-identification
    me = principal(a, a.login("appr1", PASSWORD, "c")[0])
    assert me.roles == {"approver"} and me.scopes == ("xf",) and me.member_role is None


def test_tokens_expire_and_end_with_a_new_password_or_a_disabled_account(world: World) -> None:
    a = accounts(world, token_ttl_s=60)
    a.add_user("m-uh-b03u2", PASSWORD, actor="test")
    token, _ = a.login("m-uh-b03u2", PASSWORD, "c")
    world.clock.advance(59)
    assert a.principal(token) is not None
    world.clock.advance(2)
    assert a.principal(token) is None  # expired
    token, _ = a.login("m-uh-b03u2", PASSWORD, "c")
    a.set_password("m-uh-b03u2", "another long one", actor="test")
    assert a.principal(token) is None
    with pytest.raises(LoginRefused):
        a.login("m-uh-b03u2", PASSWORD, "c")
    token, _ = a.login("m-uh-b03u2", "another long one", "c")
    a.disable("m-uh-b03u2", actor="test")
    assert a.principal(token) is None
    with pytest.raises(LoginRefused, match="wrong user name or password"):
        a.login("m-uh-b03u2", "another long one", "c")
    with world.registry.reading() as s:  # only hashes are stored
        stored = s.scalars(select(AccountRow.password_hash)).one()
    assert stored.startswith("$argon2id$") and "another" not in stored


def test_keys_are_shown_once_stored_hashed_and_revocable(world: World) -> None:
    a = accounts(world)
    text, info = a.create_key("operator", "xf/g01/b05", name="lobby", actor="test")
    assert text.startswith(f"ggk_{info.id}_")
    me = principal(a, text)
    assert (me.kind, me.roles, me.scopes) == ("key", frozenset({"operator"}), ("xf/g01/b05",))
    assert me.member_role is None  # a key never acts on alerts
    with world.registry.reading() as s:
        row = s.scalars(select(ApiKeyRow)).one()
    assert text.split("_", 2)[2] not in row.secret_sha256
    assert a.principal(text[:-1] + ("A" if text[-1] != "A" else "B")) is None
    with pytest.raises(AccountError, match="member roles belong to people"):
        a.create_key("unit_head", "xf", actor="test")
    a.revoke_key(info.id, actor="test")
    assert a.principal(text) is None
    assert [k.revoked_ns is not None for k in a.api_keys()] == [True]


def test_failed_logins_are_throttled_audited_and_never_name_the_user(world: World) -> None:
    a = accounts(world, per_account=3, per_client=5, window_s=600)
    a.add_user("m-gw-g01", PASSWORD, actor="test")
    answers = set()
    for user in ("m-gw-g01", "m-gw-g01", "no-such-user", "13812345678"):
        with pytest.raises(LoginRefused) as refused:
            a.login(user, "wrong password", "10.0.0.1")
        answers.add(str(refused.value))
    assert len(answers) == 1
    with pytest.raises(LoginRefused):
        a.login("m-gw-g01", "wrong again", "10.0.0.2")
    with pytest.raises(LoginThrottled):  # three failures for the account, from anywhere
        a.login("m-gw-g01", PASSWORD, "10.0.0.3")
    for _ in range(5):  # five failures from one client, whatever the user names …
        with pytest.raises(LoginRefused):
            a.login("nobody", "wrong password", "10.9.9.9")
    with pytest.raises(LoginThrottled):  # … and that client waits, even with a good password
        a.login("m-gw-g01", PASSWORD, "10.9.9.9")
    world.clock.advance(601)  # the window passed
    assert a.login("m-gw-g01", PASSWORD, "10.0.0.3")[0].startswith("ggt_")
    logins = [r for r in world.audit.records() if r.action is AuditAction.LOGIN]
    outcomes = [(r.subject, r.details["outcome"]) for r in logins]
    assert outcomes[:4] == [("user:m-gw-g01", "refused")] * 2 + [("user:unknown", "refused")] * 2
    assert ("user:m-gw-g01", "throttled") in outcomes and outcomes[-1] == ("user:m-gw-g01", "ok")
    assert "13812345678" not in repr([r.body() for r in logins])


def test_audit_records_account_changes_without_secrets(tmp_path: Path) -> None:
    w = build_world(tmp_path, Clock())
    try:
        a = accounts(w)
        a.add_user("m-bh-b05", PASSWORD, actor="cli")
        text, _ = a.create_key("admin", "xf", actor="cli")
        changes = [r for r in w.audit.records() if r.action is AuditAction.ACCOUNT_CHANGE]
        assert [r.subject.split(":")[0] for r in changes] == ["user", "apikey"]
        assert PASSWORD not in repr([r.body() for r in changes])
        assert text not in repr([r.body() for r in changes])
    finally:
        w.registry.close()
        w.audit.close()
