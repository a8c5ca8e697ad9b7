"""The persisted alert outbox (R5.6 "an alert is never lost"): one row per `Notification`.

The outbox lives in the registry's database (its own table, its own MetaData), so the engine
can enqueue in the same transaction in which it records the alert: an accepted alert has its
deliveries on disk before anyone is told it exists. A row is `pending` until its channel
confirmed it (PUBACK, HTTP 2xx), then `sent`; or `dead` when it failed for good. Because a row
is marked only after the confirmation, a crash in between sends it again after restart with the
same idempotency key: receivers deduplicate by that key (``delivery_id`` in every payload, the
``X-Gridgate-Delivery`` header on webhooks), which turns at-least-once into exactly-once for them.

Several gateway processes may share one outbox: `claim` leases due rows (pushes their
`next_attempt_ns` forward by the lease) inside a write transaction, so a row is handed to one
worker at a time; a worker that dies leaves the lease to run out, and the row is taken again.

Payloads carry only what a member needs to act (R3.2): `check_payload` refuses anything that
looks like raw personal data before it is stored. `last_error` holds short reasons of our own
(``HTTP 503``, ``timeout``), never a response body or a URL (webhook URLs may embed secrets).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    false,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from gateway.alerts.model import Notification
from privacy.audit import find_raw_identifier
from privacy.operators import PSEUDONYM_PATTERN, is_plate

CHANNELS = frozenset({"mqtt", "webhook", "websocket", "wecom", "dingtalk"})
MEMBER_TOPIC = "gridgate/alerts/member/{member}"
COMMUNITY_TOPIC = "gridgate/alerts/community/{community}"
KEY_LEN = 200
ERROR_LEN = 200

metadata = MetaData()

alert_outbox = Table(
    "alert_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(KEY_LEN), nullable=False, unique=True),
    Column("alert_id", BigInteger, nullable=False, index=True),
    Column("member_id", String(128), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("target", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("state", String(8), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_ns", BigInteger, nullable=False),
    Column("last_error", String(ERROR_LEN), nullable=False, default=""),
    Column("created_ns", BigInteger, nullable=False),
    Column("sent_ns", BigInteger),
    Column("dead_ns", BigInteger),
    # on_dead has run for a dead row (so a crash between "dead" and the report re-reports it)
    Column("dead_reported", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_alert_outbox_due", "state", "next_attempt_ns"),
)


class OutboxState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class PayloadRejected(ValueError):
    """A payload that looks like it carries raw personal data; the message names the path."""


class DeliveryError(Exception):
    """A send that did not get its confirmation. `permanent`: retrying cannot help (HTTP 4xx,
    no secret for the webhook, unknown channel). The message is stored as `last_error`, so it
    must never hold a URL, a response body or personal data."""

    def __init__(
        self, reason: str, *, permanent: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason[:ERROR_LEN]
        self.permanent = permanent
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class OutboxItem:
    idempotency_key: str
    alert_id: int
    member_id: str
    channel: str
    target: str = field(repr=False)  # a webhook URL may embed a secret
    payload: Mapping[str, Any] = field(repr=False)
    state: OutboxState
    attempts: int  # attempts started (a claim counts: a crash mid-send used one)
    next_attempt_ns: int
    last_error: str
    created_ns: int
    sent_ns: int | None = None
    dead_ns: int | None = None

    def wire_payload(self) -> dict[str, Any]:
        """What goes out: the payload plus ``delivery_id`` (the idempotency key) and
        ``alert_id``; receivers deduplicate by ``delivery_id``."""
        body = dict(self.payload)
        body.setdefault("alert_id", self.alert_id)
        body["delivery_id"] = self.idempotency_key
        return body

    def wire_body(self) -> bytes:
        """`wire_payload` as canonical JSON: byte-identical on every attempt."""
        return canonical_bytes(self.wire_payload())


def canonical_bytes(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def member_topic(member_id: str) -> str:
    return MEMBER_TOPIC.format(member=member_id)


def community_topic(community: str) -> str:
    return COMMUNITY_TOPIC.format(community=community)


# -- payload hygiene ---------------------------------------------------------------------------

# A mobile number written with spaces or hyphens (find_raw_identifier catches the plain form).
_SPACED_MOBILE = re.compile(r"(?<!\d)(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d){8}(?!\d)")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
# Keys that name a person: a CJK value under them is a name (a device or place has a code).
_PERSON_KEYS = frozenset(
    {
        "name", "person", "resident", "patient", "elder", "owner", "contact", "occupant",
        "fullname", "realname", "username", "姓名", "名字", "住户", "老人", "联系人", "业主",
    }
)  # fmt: skip
_PERSON_PREFIXES = (
    "person", "resident", "patient", "elder", "owner", "contact", "occupant", "member", "real",
    "full", "user", "first", "last", "given", "family",
)  # fmt: skip
# Keys whose mere presence (non-empty) is personal data or health history, whatever the shape.
_FORBIDDEN_KEYS = frozenset(
    {
        "idnumber", "idcard", "idno", "identitycard", "citizenid", "phone", "mobile", "tel",
        "telephone", "cellphone", "phonenumber", "plate", "licenseplate", "platenumber",
        "healthhistory", "medicalhistory", "history", "healthrecords", "medicalrecords",
        "diagnosis", "身份证", "身份证号", "手机", "手机号", "电话", "车牌", "病史", "健康档案",
        "病历",
    }
)  # fmt: skip
_SUBJECT_KEYS = frozenset({"subject", "subjectref", "subjectreference"})


def _norm_key(key: str) -> str:
    return re.sub(r"[\s_\-.]", "", key).lower()


def _person_key(norm: str) -> bool:
    if norm in _PERSON_KEYS:
        return True
    return norm.endswith("name") and norm.removesuffix("name").startswith(_PERSON_PREFIXES)


def _walk(value: Any, where: str) -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every mapping entry in a JSON-like tree, depth first."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, str(key), sub
            yield from _walk(sub, path)
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            yield from _walk(sub, f"{where}[{i}]")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for sub in value.values():
            yield from _strings(sub)
    elif isinstance(value, list | tuple):
        for sub in value:
            yield from _strings(sub)


def check_payload(payload: Mapping[str, Any]) -> None:
    """Refuse a payload that looks like it carries raw personal data (R3.2): belt and braces
    behind routing, which should only ever put kind, severity, place, time, device and a
    pseudonymous subject reference in. Raises `PayloadRejected` naming the path (never the
    value); also refuses what is not JSON."""
    if not isinstance(payload, Mapping):
        raise PayloadRejected("a payload is a JSON object")
    try:
        canonical_bytes(payload)
    except (TypeError, ValueError) as exc:
        raise PayloadRejected(f"payload is not JSON: {type(exc).__name__}") from None
    if (where := find_raw_identifier(payload)) is not None:
        raise PayloadRejected(f"raw ID or mobile number at {where!r}")
    for path, key, value in _walk(payload, ""):
        norm = _norm_key(key)
        empty = value is None or value == "" or value == [] or value == {}
        if norm in _FORBIDDEN_KEYS and not empty:
            raise PayloadRejected(f"personal data or health history key at {path!r}")
        if _person_key(norm) and any(_CJK.search(s) for s in _strings(value)):
            raise PayloadRejected(f"a person's name at {path!r}")
        if (
            norm in _SUBJECT_KEYS
            and not empty
            and (not isinstance(value, str) or not PSEUDONYM_PATTERN.fullmatch(value))
        ):
            raise PayloadRejected(f"subject at {path!r} is not a pseudonym (kid:token)")
    for s in _strings(payload):
        if _SPACED_MOBILE.search(s):
            raise PayloadRejected("a mobile number in the payload")
        if is_plate(s):
            raise PayloadRejected("a licence plate in the payload")


# -- the outbox --------------------------------------------------------------------------------


def _item(row: Any) -> OutboxItem:
    m = row._mapping
    return OutboxItem(
        idempotency_key=m["idempotency_key"],
        alert_id=int(m["alert_id"]),
        member_id=m["member_id"],
        channel=m["channel"],
        target=m["target"],
        payload=m["payload"],
        state=OutboxState(m["state"]),
        attempts=int(m["attempts"]),
        next_attempt_ns=int(m["next_attempt_ns"]),
        last_error=m["last_error"],
        created_ns=int(m["created_ns"]),
        sent_ns=m["sent_ns"],
        dead_ns=m["dead_ns"],
    )


_COLUMNS = [c for c in alert_outbox.c if c.name not in ("id", "dead_reported")]


class Outbox:
    """The `alert_outbox` table; every method is one short transaction (or joins the caller's
    connection for `enqueue`). Thread-safe as far as the engine is (the worker calls it from
    `asyncio.to_thread`)."""

    def __init__(self, engine: Engine, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._engine = engine
        self._clock_ns = clock_ns
        metadata.create_all(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        # gridgate_write: BEGIN IMMEDIATE on the registry's SQLite engine (see registry.store)
        with self._engine.connect().execution_options(gridgate_write=True) as conn, conn.begin():
            yield conn

    # -- writing ----------------------------------------------------------------------------

    def _insert_ignoring_duplicates(self, conn: Connection) -> Any:
        name = conn.dialect.name
        if name == "sqlite":
            return sqlite.insert(alert_outbox).on_conflict_do_nothing(
                index_elements=["idempotency_key"]
            )
        if name == "postgresql":
            return postgresql.insert(alert_outbox).on_conflict_do_nothing(
                index_elements=["idempotency_key"]
            )
        return None

    def enqueue(
        self,
        notifications: Iterable[Notification],
        *,
        conn: Connection | None = None,
        now_ns: int | None = None,
    ) -> int:
        """Store notifications as pending, due now; duplicates by idempotency key are ignored.
        Returns how many were new. All or nothing: one bad payload (`PayloadRejected`) or an
        unknown channel (ValueError) stores none. Pass `conn` to join the caller's transaction
        (the engine's, which records the alert): then the caller commits."""
        rows = []
        now = self._clock_ns() if now_ns is None else now_ns
        for n in notifications:
            if n.channel not in CHANNELS:
                raise ValueError(f"unknown channel {n.channel!r} (expected {sorted(CHANNELS)})")
            if not n.idempotency_key or len(n.idempotency_key) > KEY_LEN:
                raise ValueError("an idempotency key is 1..200 characters")
            if not n.target:
                raise ValueError(f"notification {n.idempotency_key} has no target")
            check_payload(n.payload)
            rows.append(
                {
                    "idempotency_key": n.idempotency_key,
                    "alert_id": n.alert_id,
                    "member_id": n.member_id,
                    "channel": n.channel,
                    "target": n.target,
                    "payload": json.loads(canonical_bytes(n.payload)),
                    "state": OutboxState.PENDING.value,
                    "attempts": 0,
                    "next_attempt_ns": now,
                    "last_error": "",
                    "created_ns": now,
                    "dead_reported": False,
                }
            )
        if not rows:
            return 0
        if conn is not None:
            return self._insert(conn, rows)
        with self._writing() as own:
            return self._insert(own, rows)

    def _insert(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
        stmt = self._insert_ignoring_duplicates(conn)
        added = 0
        if stmt is None:  # other databases: look first (inside the same transaction)
            keys = [r["idempotency_key"] for r in rows]
            have = set(
                conn.scalars(
                    select(alert_outbox.c.idempotency_key).where(
                        alert_outbox.c.idempotency_key.in_(keys)
                    )
                )
            )
            for row in rows:
                if row["idempotency_key"] not in have:
                    conn.execute(insert(alert_outbox), row)
                    have.add(row["idempotency_key"])
                    added += 1
            return added
        for row in rows:  # one by one: rowcount of an executemany is not portable
            added += conn.execute(stmt, row).rowcount
        return added

    def claim(
        self,
        now_ns: int,
        limit: int,
        *,
        lease_ns: int,
        exclude: Collection[str] = (),
        channels: Collection[str] | None = None,
        skip_channels: Collection[str] = (),
    ) -> list[OutboxItem]:
        """Take up to `limit` due pending items for sending: each gets one more attempt and is
        not due again for `lease_ns` (so another worker does not send it meanwhile). The items
        returned carry the new attempt count. `exclude`: keys this worker already has;
        `channels` / `skip_channels`: only these channels / not these (a worker of its own
        for group robots, whose items may wait for a robot's rate window)."""
        if limit <= 0:
            return []
        c = alert_outbox.c
        with self._writing() as conn:
            query = (
                select(c.idempotency_key)
                .where(c.state == OutboxState.PENDING.value, c.next_attempt_ns <= now_ns)
                .order_by(c.next_attempt_ns, c.id)
                .limit(limit + len(exclude))
            )
            if channels is not None:
                query = query.where(c.channel.in_(sorted(channels)))
            if skip_channels:
                query = query.where(c.channel.not_in(sorted(skip_channels)))
            keys = [k for k in conn.scalars(query) if k not in exclude][:limit]
            claimed = []
            for key in keys:
                # Re-check in the UPDATE: on PostgreSQL a concurrent claimer may have won.
                done = conn.execute(
                    update(alert_outbox)
                    .where(
                        c.idempotency_key == key,
                        c.state == OutboxState.PENDING.value,
                        c.next_attempt_ns <= now_ns,
                    )
                    .values(attempts=c.attempts + 1, next_attempt_ns=now_ns + lease_ns)
                )
                if done.rowcount == 1:
                    claimed.append(key)
            if not claimed:
                return []
            rows = conn.execute(
                select(*_COLUMNS).where(c.idempotency_key.in_(claimed)).order_by(c.id)
            ).all()
        return [_item(r) for r in rows]

    def mark_sent(self, key: str, at_ns: int) -> bool:
        """The channel confirmed it. False if the item is not pending (already sent or dead)."""
        c = alert_outbox.c
        with self._writing() as conn:
            done = conn.execute(
                update(alert_outbox)
                .where(c.idempotency_key == key, c.state == OutboxState.PENDING.value)
                .values(state=OutboxState.SENT.value, sent_ns=at_ns, last_error="")
            )
        return bool(done.rowcount)

    def mark_failed(
        self,
        key: str,
        at_ns: int,
        error: str,
        *,
        retry_at_ns: int | None = None,
        dead: bool = False,
    ) -> bool:
        """An attempt failed: try again at `retry_at_ns`, or (`dead=True`) give up. Exactly one
        of the two. `error` is a short reason of ours, no personal data, no URL. False if the
        item is not pending."""
        if dead == (retry_at_ns is not None):
            raise ValueError("mark_failed needs exactly one of retry_at_ns and dead=True")
        c = alert_outbox.c
        values: dict[str, Any] = {"last_error": error[:ERROR_LEN]}
        if dead:
            values |= {"state": OutboxState.DEAD.value, "dead_ns": at_ns, "dead_reported": False}
        else:
            values["next_attempt_ns"] = retry_at_ns
        with self._writing() as conn:
            done = conn.execute(
                update(alert_outbox)
                .where(c.idempotency_key == key, c.state == OutboxState.PENDING.value)
                .values(**values)
            )
        return bool(done.rowcount)

    def mark_dead_reported(self, key: str) -> None:
        c = alert_outbox.c
        with self._writing() as conn:
            conn.execute(
                update(alert_outbox).where(c.idempotency_key == key).values(dead_reported=True)
            )

    def prune(self, before_ns: int) -> int:
        """Delete sent items sent before `before_ns` (dead ones stay for inspection). A pruned
        key could be enqueued again, so keep items longer than any alert can be re-routed."""
        c = alert_outbox.c
        with self._writing() as conn:
            done = conn.execute(
                delete(alert_outbox).where(c.state == OutboxState.SENT.value, c.sent_ns < before_ns)
            )
        return int(done.rowcount)

    # -- reading ----------------------------------------------------------------------------

    def due(self, now_ns: int, limit: int) -> list[OutboxItem]:
        """Pending items due at `now_ns`, oldest first (a look; `claim` is what workers use)."""
        c = alert_outbox.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(*_COLUMNS)
                .where(c.state == OutboxState.PENDING.value, c.next_attempt_ns <= now_ns)
                .order_by(c.next_attempt_ns, c.id)
                .limit(limit)
            ).all()
        return [_item(r) for r in rows]

    def get(self, key: str) -> OutboxItem | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(*_COLUMNS).where(alert_outbox.c.idempotency_key == key)
            ).one_or_none()
        return None if row is None else _item(row)

    def items(
        self, *, state: OutboxState | None = None, alert_id: int | None = None
    ) -> list[OutboxItem]:
        c = alert_outbox.c
        query = select(*_COLUMNS).order_by(c.id)
        if state is not None:
            query = query.where(c.state == state.value)
        if alert_id is not None:
            query = query.where(c.alert_id == alert_id)
        with self._engine.connect() as conn:
            return [_item(r) for r in conn.execute(query)]

    def dead_unreported(self, limit: int = 100) -> list[OutboxItem]:
        """Dead items whose `on_dead` may not have run (the process died in between)."""
        c = alert_outbox.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(*_COLUMNS)
                .where(c.state == OutboxState.DEAD.value, c.dead_reported == false())
                .order_by(c.id)
                .limit(limit)
            ).all()
        return [_item(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Items per state (every state present, zero if none): for metrics and health."""
        c = alert_outbox.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(c.state, func.count()).group_by(c.state)).all()
        out = {s.value: 0 for s in OutboxState}
        out.update({str(state): int(n) for state, n in rows})
        return out


__all__ = [
    "CHANNELS",
    "COMMUNITY_TOPIC",
    "MEMBER_TOPIC",
    "DeliveryError",
    "Outbox",
    "OutboxItem",
    "OutboxState",
    "PayloadRejected",
    "alert_outbox",
    "canonical_bytes",
    "check_payload",
    "community_topic",
    "member_topic",
]
