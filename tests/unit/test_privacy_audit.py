"""The audit chain, pure (R3.6): hashing, linking, and what `verify` catches."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from privacy.audit import (
    GENESIS_HASH,
    Anchor,
    AuditAction,
    AuditRecord,
    canonical_json,
    chain_append,
    check_details,
    record_hash,
    verify,
)


def chain(n: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        records.append(
            chain_append(
                records[-1] if records else None,
                at_ns=1_000 + i,
                actor=f"u{i % 3}",
                action=AuditAction.REIDENT_REQUEST,
                subject=f"rq-{i}",
                details={"pseudonym": f"k1:tok{i}", "n": i, "flags": [True, None, 1.5]},
            )
        )
    return records


def test_genesis_link_and_hash_over_canonical_json() -> None:
    records = chain(3)
    first = records[0]
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[1].prev_hash == first.hash and records[2].prev_hash == records[1].hash
    body = {
        "seq": 1,
        "at_ns": 1_000,
        "actor": "u0",
        "action": "reident_request",
        "subject": "rq-0",
        "details": {"flags": [True, None, 1.5], "n": 0, "pseudonym": "k1:tok0"},
        "prev_hash": GENESIS_HASH,
    }
    expected = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert first.hash == expected
    # Key order of details does not matter; content does.
    again = chain_append(
        None, at_ns=1_000, actor="u0", action=AuditAction.REIDENT_REQUEST, subject="rq-0",
        details={"pseudonym": "k1:tok0", "flags": [True, None, 1.5], "n": 0},
    )  # fmt: skip
    assert again.hash == first.hash


def test_a_clean_chain_verifies() -> None:
    result = verify(chain(50))
    assert result.ok and result.checked == 50 and result.first_bad_seq is None
    assert verify([]).ok


def test_an_edited_record_is_named() -> None:
    records = chain(6)
    records[3] = dataclasses.replace(records[3], actor="someone-else")
    result = verify(records)
    assert not result.ok and result.first_bad_seq == 4 and "altered" in result.problem
    records = chain(6)
    records[2] = dataclasses.replace(records[2], details={**records[2].details, "n": 99})
    assert verify(records).first_bad_seq == 3


def test_an_edited_and_rehashed_record_breaks_the_next_link() -> None:
    records = chain(6)
    forged = dataclasses.replace(records[2], subject="rq-forged")
    records[2] = dataclasses.replace(forged, hash=record_hash(forged.body()))
    result = verify(records)
    assert not result.ok and result.first_bad_seq == 4 and "prev_hash" in result.problem


def test_a_deleted_record_is_named() -> None:
    records = chain(6)
    del records[2]
    result = verify(records)
    assert not result.ok and result.first_bad_seq == 3 and "missing" in result.problem
    records = chain(6)
    del records[0]
    assert verify(records).first_bad_seq == 1


def test_a_deleted_and_renumbered_record_breaks_the_link() -> None:
    """An attacker who also renumbers the rest: the link to the removed record is gone."""
    records = chain(5)
    del records[1]
    renumbered = []
    for r in records[1:]:
        moved = dataclasses.replace(r, seq=r.seq - 1)
        renumbered.append(dataclasses.replace(moved, hash=record_hash(moved.body())))
    result = verify([records[0], *renumbered])
    assert not result.ok and result.first_bad_seq == 2 and "prev_hash" in result.problem


def test_reordered_records_are_named() -> None:
    records = chain(6)
    records[2], records[3] = records[3], records[2]
    result = verify(records)
    assert not result.ok and result.first_bad_seq == 3
    # Content swapped between two sequence numbers (the seq column stays in place).
    records = chain(6)
    a, b = records[2], records[3]
    records[2] = dataclasses.replace(b, seq=a.seq)
    records[3] = dataclasses.replace(a, seq=b.seq)
    result = verify(records)
    assert not result.ok and result.first_bad_seq == 3 and "altered" in result.problem


def test_a_repeated_record_is_named() -> None:
    records = chain(4)
    records.insert(2, records[1])
    result = verify(records)
    assert not result.ok and result.first_bad_seq == 2 and "reordered" in result.problem


def test_a_cut_tail_needs_an_anchor() -> None:
    records = chain(8)
    anchor = Anchor(records[-1].seq, records[-1].hash)
    assert verify(records, anchor=anchor).ok
    assert verify(records[:6]).ok  # without an anchor a shorter chain is a valid chain
    result = verify(records[:6], anchor=anchor)
    assert not result.ok and result.first_bad_seq == 7 and "removed from the end" in result.problem
    wrong = Anchor(4, "f" * 64)
    result = verify(records, anchor=wrong)
    assert not result.ok and result.first_bad_seq == 4 and "anchor" in result.problem
    assert Anchor.parse(str(anchor)) == anchor
    for bad in ("", "3", "x:" + "0" * 64, "3:abc", "0:" + "0" * 64):
        with pytest.raises(ValueError):
            Anchor.parse(bad)


@pytest.mark.parametrize(
    "details",
    [
        {"reason": "caller said 11010519491231002X"},
        {"reason": "call 13912345678 back"},
        {"nested": {"list": ["ok", "+8613912345678"]}},
        {"11010519491231002X": True},
    ],
)
def test_details_refuse_raw_identifiers(details: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="ID or phone"):
        check_details(details)
    with pytest.raises(ValueError):
        chain_append(None, at_ns=1, actor="u1", action=AuditAction.CONSENT_CHANGE,
                     subject="r-1", details=details)  # fmt: skip


def test_ids_that_merely_contain_digits_are_fine() -> None:
    check_details(
        {
            "device": "862345100000001",  # a 15-digit IMEI
            "meter": "123456789012",
            "pseudonym": "k1:a13912345678bcdefghijklmnop",
            "at_ns": 1_732_200_000_000_000_000,
            "text": "1732200000000000000",
        }
    )


@pytest.mark.parametrize(
    "details", [{"x": float("nan")}, {"x": object()}, {1: "int key"}, {"x": b"bytes"}]
)
def test_details_must_be_json(details: dict[object, object]) -> None:
    with pytest.raises(ValueError, match="JSON"):
        check_details(details)  # type: ignore[arg-type]


def test_actor_and_subject_may_not_be_raw_identifiers() -> None:
    with pytest.raises(ValueError, match="subject"):
        chain_append(None, at_ns=1, actor="u1", action=AuditAction.REIDENT_REQUEST,
                     subject="11010519491231002X")  # fmt: skip
    with pytest.raises(ValueError):
        chain_append(None, at_ns=1, actor="u1", action="not-an-action",  # type: ignore[arg-type]
                     subject="x")  # fmt: skip


def test_every_action_of_the_issue_exists() -> None:
    assert {a.value for a in AuditAction} >= {
        "reident_request", "reident_approve", "reident_deny", "reident_resolve",
        "consent_change", "policy_change", "key_rotation", "alert_action", "personal_data_read",
    }  # fmt: skip
    assert canonical_json({"b": 1, "a": "中"}) == '{"a":"中","b":1}'
