"""The audit log on disk: append-only SQLite, and `gridgate audit verify` naming the first
broken record after each kind of tampering (edit, delete, reorder) by someone with the file."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from gateway.audit.cli import main as audit_main
from gateway.audit.store import AuditLogError, AuditStore
from privacy.audit import AuditAction


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


def filled(path: Path, n: int = 10) -> AuditStore:
    store = AuditStore(path, clock_ns=FakeClock())
    actions = list(AuditAction)
    for i in range(n):
        store.append(
            f"staff-{i % 3}",
            actions[i % len(actions)],
            f"rq-{i:04d}",
            {"pseudonym": f"k1:tok{i}", "reason": "gas alarm, door locked", "i": i},
        )
    return store


def attacker(path: Path) -> sqlite3.Connection:
    """Someone with write access to the file: drops the triggers, then edits at will."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    return conn


def cli(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDGATE_AUDIT_PATH", str(path))
        code = audit_main(["audit", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit" / "audit.sqlite3"
    filled(path).close()
    return path


def test_append_read_back_and_verify(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditStore(log) as store:
        records = list(store.records())
        assert [r.seq for r in records] == list(range(1, 11))
        assert records[0].details == {"pseudonym": "k1:tok0", "reason": "gas alarm, door locked",
                                      "i": 0}  # fmt: skip
        assert [r.seq for r in store.records(from_seq=8)] == [8, 9, 10]
        assert [r.seq for r in store.last(3)] == [8, 9, 10]
        assert store.count() == 10
        head = store.head()
        assert head is not None and head.seq == 10 and head.hash == records[-1].hash
        result = store.verify()
        assert result.ok and result.checked == 10
        nxt = store.append("u1", AuditAction.POLICY_CHANGE, "policy.yaml", {"version": 2})
        assert nxt.seq == 11 and nxt.prev_hash == records[-1].hash
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    code, out = cli(log, capsys, "verify")
    assert code == 0 and out.strip() == "audit: 11 records, chain intact"
    code, out = cli(log, capsys, "show", "--last", "2")
    assert code == 0 and "#10" in out and "#11" in out and "#9 " not in out
    assert f"head: 11:{nxt.hash}" in out


def test_triggers_refuse_update_and_delete(log: Path) -> None:
    conn = sqlite3.connect(log)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 2")
    conn.close()
    with AuditStore(log) as store:
        assert store.verify().ok and store.missing_triggers() == []


def test_edit_is_detected_and_named(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = attacker(log)
    conn.execute("""UPDATE audit_log SET details = '{"i":4,"pseudonym":"k1:tokX","reason":"x"}'
                    WHERE seq = 5""")  # fmt: skip
    conn.close()
    with AuditStore(log, read_only=True) as store:
        result = store.verify()
        assert not result.ok and result.first_bad_seq == 5 and "altered" in result.problem
        assert store.missing_triggers() == ["audit_log_no_update", "audit_log_no_delete"]
    code, out = cli(log, capsys, "verify")
    assert code == 1
    assert out.startswith("audit: BROKEN at record #5: contents do not match its hash")


def test_edit_of_a_plain_column_and_of_the_type(log: Path) -> None:
    conn = attacker(log)
    conn.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 3")
    conn.execute("UPDATE audit_log SET at_ns = 'yesterday' WHERE seq = 7")
    conn.close()
    with AuditStore(log, read_only=True) as store:
        assert store.verify().first_bad_seq == 3
    conn = sqlite3.connect(log, isolation_level=None)
    conn.execute("UPDATE audit_log SET actor = 'staff-2' WHERE seq = 3")  # put it back
    conn.close()
    with AuditStore(log, read_only=True) as store:
        result = store.verify()
        assert result.first_bad_seq == 7 and "cannot be read" in result.problem


def test_delete_is_detected_and_named(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = attacker(log)
    conn.execute("DELETE FROM audit_log WHERE seq = 4")
    conn.close()
    code, out = cli(log, capsys, "verify")
    assert code == 1 and out.startswith("audit: BROKEN at record #4: record #4 missing")


def test_delete_and_renumber_is_detected(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = attacker(log)
    conn.execute("DELETE FROM audit_log WHERE seq = 4")
    conn.execute("UPDATE audit_log SET seq = seq - 1 WHERE seq > 4")
    conn.close()
    code, out = cli(log, capsys, "verify")
    # Record #4 now holds what was #5: its seq is part of its hash.
    assert code == 1 and out.startswith("audit: BROKEN at record #4:")


def test_reorder_is_detected_and_named(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Swap the contents of #6 and #7 (each row keeps its seq)."""
    conn = attacker(log)
    cols = "at_ns, actor, action, subject, details, prev_hash, hash"
    six = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = 6").fetchone()
    seven = conn.execute(f"SELECT {cols} FROM audit_log WHERE seq = 7").fetchone()
    assign = ", ".join(f"{c} = ?" for c in cols.split(", "))
    conn.execute(f"UPDATE audit_log SET {assign} WHERE seq = 6", seven)
    conn.execute(f"UPDATE audit_log SET {assign} WHERE seq = 7", six)
    conn.close()
    code, out = cli(log, capsys, "verify")
    assert code == 1 and out.startswith("audit: BROKEN at record #6:")


def test_cut_tail_is_detected_with_an_anchor(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditStore(log) as store:
        anchor = store.head()
    assert anchor is not None
    conn = attacker(log)
    conn.execute("DELETE FROM audit_log WHERE seq >= 9")
    conn.close()
    code, out = cli(log, capsys, "verify")
    assert code == 0  # a shorter chain is a valid chain …
    code, out = cli(log, capsys, "verify", "--anchor", str(anchor))
    assert code == 1  # … unless someone noted the head
    assert out.startswith("audit: BROKEN at record #9: log ends at #8")


def test_a_dropped_table_or_a_rebuilt_log(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditStore(log) as store:
        anchor = store.head()
    log.unlink()
    for extra in log.parent.glob(log.name + "-*"):
        extra.unlink()
    with AuditStore(log) as forged:  # a forger rebuilds a valid chain from scratch …
        for i in range(12):
            forged.append("staff-0", AuditAction.POLICY_CHANGE, f"rq-{i:04d}", {"i": i})
    code, out = cli(log, capsys, "verify")
    assert code == 0
    code, out = cli(log, capsys, "verify", "--anchor", str(anchor))
    assert code == 1 and "BROKEN at record #10: hash differs from the anchor" in out  # … caught
    conn = attacker(log)
    conn.execute("DROP TABLE audit_log")
    conn.close()
    code, out = cli(log, capsys, "verify")
    assert code == 1 and out.startswith("audit: BROKEN at record #1:") and "audit_log" in out


def test_missing_log_and_bad_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(tmp_path / "none.sqlite3", capsys, "verify")
    assert code == 2 and "no audit log" in out
    assert not (tmp_path / "none.sqlite3").exists()  # verify never creates a log
    with pytest.raises(AuditLogError):
        AuditStore(tmp_path / "none.sqlite3", read_only=True)
    with pytest.raises(SystemExit):
        audit_main(["audit", "verify", "--anchor", "nonsense"])


def test_bad_details_write_nothing(tmp_path: Path) -> None:
    with AuditStore(tmp_path / "a.sqlite3") as store:
        store.append("u1", AuditAction.CONSENT_CHANGE, "r-1", {"consent": False})
        with pytest.raises(ValueError):
            store.append("u1", AuditAction.CONSENT_CHANGE, "r-1", {"reason": "13912345678"})
        with pytest.raises(ValueError):
            store.append("u1", AuditAction.CONSENT_CHANGE, "r-1", {"x": {1, 2}})  # type: ignore[dict-item]
        assert store.count() == 1
        assert store.append("u1", AuditAction.CONSENT_CHANGE, "r-1").seq == 2
        reader = AuditStore(tmp_path / "a.sqlite3", read_only=True)
        with pytest.raises(AuditLogError):
            reader.append("u1", AuditAction.CONSENT_CHANGE, "r-1")
        reader.close()


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    """Threads sharing one store, and a second store on the same file (another process)."""
    path = tmp_path / "a.sqlite3"
    first, second = AuditStore(path), AuditStore(path)

    def work(store: AuditStore, who: str) -> None:
        for i in range(40):
            store.append(who, AuditAction.PERSONAL_DATA_READ, f"req-{i}", {"i": i})

    threads = [
        threading.Thread(target=work, args=(store, f"w{n}"))
        for n, store in enumerate((first, first, second, second))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = first.verify()
    assert result.ok and result.checked == 160
    first.close()
    second.close()
