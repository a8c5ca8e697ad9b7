"""Alert delivery without a network: the outbox (idempotent, transactional, leased, persisted),
the retry schedule, webhook signatures, payload hygiene and the screens' hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from gateway.alerts.delivery import (
    Hub,
    Outbox,
    OutboxState,
    PayloadRejected,
    RetryPolicy,
    WebhookSecrets,
    WebhookSender,
    check_payload,
    community_topic,
    member_topic,
    sign,
    verify_signature,
)
from gateway.alerts.delivery.outbox import DeliveryError, alert_outbox
from gateway.alerts.delivery.webhook import (
    DELIVERY_HEADER,
    SECRETS_ENV,
    SECRETS_FILE_ENV,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from gateway.alerts.model import Notification
from gateway.registry.store import Registry

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
PSEUDONYM = "k1:abcdefghijklmnopqrstuvwxyz"  # kid:26 base32 characters


def payload(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "gas_leak",
        "severity": "I",
        "colour": "red",
        "place": {"community": "xf", "grid": "g01", "building": "b03", "unit": "u2", "room": ""},
        "time_ns": T0,
        "device": "gas-b03-u2-0101",
        "subject": PSEUDONYM,
        **extra,
    }


def note(member: str, *, alert: int = 7, seq: int = 1, channel: str = "mqtt") -> Notification:
    target = member_topic(member) if channel == "mqtt" else f"http://127.0.0.1:9/hook/{member}"
    return Notification(
        idempotency_key=f"{alert}:{seq}:{member}:{channel}",
        alert_id=alert,
        member_id=member,
        channel=channel,
        target=target,
        payload=payload(),
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.sqlite3'}"


@pytest.fixture
def outbox(db_url: str) -> Iterator[Outbox]:
    registry = Registry.open(db_url)
    yield Outbox(registry.engine, clock_ns=lambda: T0)
    registry.engine.dispose()


# -- outbox ------------------------------------------------------------------------------------


def test_enqueue_twice_keeps_one_row(outbox: Outbox) -> None:
    notes = [note("m1"), note("m2"), note("m1")]  # a duplicate inside the batch too
    assert outbox.enqueue(notes) == 2
    assert outbox.enqueue(notes) == 0
    assert outbox.enqueue([note("m1", seq=2)]) == 1  # a later event of the alert is new
    items = outbox.items()
    assert [i.idempotency_key for i in items] == ["7:1:m1:mqtt", "7:1:m2:mqtt", "7:2:m1:mqtt"]
    assert {i.state for i in items} == {OutboxState.PENDING}
    assert items[0].target == "gridgate/alerts/member/m1"
    assert items[0].payload == payload()
    assert outbox.counts() == {"pending": 3, "sent": 0, "dead": 0}


def test_enqueue_joins_the_callers_transaction(outbox: Outbox) -> None:
    """The engine records the alert and its deliveries in one transaction: all or nothing."""
    with outbox.engine.connect() as conn:
        with conn.begin() as tx:
            assert outbox.enqueue([note("m1")], conn=conn) == 1
            tx.rollback()  # the alert was not recorded: its deliveries go too
        assert outbox.items() == []
        with conn.begin():
            outbox.enqueue([note("m1"), note("m2")], conn=conn)
    assert len(outbox.items()) == 2


def test_enqueue_is_all_or_nothing(outbox: Outbox) -> None:
    bad = Notification("7:1:m3:mqtt", 7, "m3", "mqtt", member_topic("m3"), payload(name="张三"))
    with pytest.raises(PayloadRejected):
        outbox.enqueue([note("m1"), bad])
    with pytest.raises(ValueError, match="unknown channel"):
        outbox.enqueue([note("m1"), Notification("k", 7, "m1", "sms", "x", payload())])
    assert outbox.items() == []


def test_claim_leases_counts_attempts_and_marks(outbox: Outbox) -> None:
    outbox.enqueue([note("m1"), note("m2"), note("m3")], now_ns=T0)
    first = outbox.claim(T0, 2, lease_ns=30 * S)
    assert [i.member_id for i in first] == ["m1", "m2"]
    assert all(i.attempts == 1 and i.next_attempt_ns == T0 + 30 * S for i in first)
    # Leased: neither due nor claimable again until the lease runs out.
    assert [i.member_id for i in outbox.due(T0 + S, 10)] == ["m3"]
    assert [i.member_id for i in outbox.claim(T0 + S, 10, lease_ns=30 * S)] == ["m3"]
    assert outbox.claim(T0 + S, 10, lease_ns=30 * S) == []
    # A worker that died: after the lease, the same item again, one more attempt on record.
    again = outbox.claim(T0 + 31 * S, 10, lease_ns=30 * S)
    assert [(i.member_id, i.attempts) for i in again] == [("m1", 2), ("m2", 2), ("m3", 2)]
    # exclude: keys this worker already holds.
    assert outbox.claim(T0 + 99 * S, 10, lease_ns=S, exclude={"7:1:m1:mqtt"})[0].member_id == "m2"

    assert outbox.mark_sent("7:1:m1:mqtt", T0 + 100 * S)
    assert not outbox.mark_sent("7:1:m1:mqtt", T0 + 101 * S)  # already sent
    assert outbox.mark_failed("7:1:m2:mqtt", T0, "HTTP 503", retry_at_ns=T0 + 500 * S)
    assert outbox.mark_failed("7:1:m3:mqtt", T0, "HTTP 404", dead=True)
    assert not outbox.mark_failed("7:1:m3:mqtt", T0, "again", dead=True)  # dead stays dead
    with pytest.raises(ValueError, match="exactly one"):
        outbox.mark_failed("7:1:m2:mqtt", T0, "x")
    m1, m2, m3 = (outbox.get(f"7:1:{m}:mqtt") for m in ("m1", "m2", "m3"))
    assert m1 is not None and m1.state is OutboxState.SENT and m1.sent_ns == T0 + 100 * S
    assert m2 is not None and m2.state is OutboxState.PENDING and m2.last_error == "HTTP 503"
    assert m2.next_attempt_ns == T0 + 500 * S
    assert m3 is not None and m3.state is OutboxState.DEAD and m3.dead_ns == T0
    assert [i.idempotency_key for i in outbox.dead_unreported()] == ["7:1:m3:mqtt"]
    outbox.mark_dead_reported("7:1:m3:mqtt")
    assert outbox.dead_unreported() == []
    assert outbox.prune(T0 + 101 * S) == 1
    assert outbox.get("7:1:m1:mqtt") is None


def test_outbox_survives_a_restart(db_url: str) -> None:
    """It is the database: a new process (new engine) sees what the old one accepted."""
    first = Registry.open(db_url)
    Outbox(first.engine).enqueue([note("m1"), note("m2")])
    first.engine.dispose()
    second = Registry.open(db_url)
    items = Outbox(second.engine).items()
    assert [i.member_id for i in items] == ["m1", "m2"]
    with second.engine.connect() as conn:
        assert conn.scalar(select(alert_outbox.c.payload)) == payload()
    second.engine.dispose()


def test_wire_body_carries_the_delivery_id(outbox: Outbox) -> None:
    outbox.enqueue([note("m1")])
    (item,) = outbox.items()
    body = json.loads(item.wire_body())
    assert body["delivery_id"] == "7:1:m1:mqtt" and body["alert_id"] == 7
    assert body["kind"] == "gas_leak"
    assert item.wire_body() == item.wire_body()  # byte-identical on every attempt
    assert "target" not in repr(item) and "gridgate/alerts" not in repr(item)
    assert community_topic("xf") == "gridgate/alerts/community/xf"


# -- retry schedule ----------------------------------------------------------------------------


def test_retry_schedule_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=8, base_s=2.0, factor=2.0, max_s=100.0, jitter=0.25)
    assert [policy.delay_s(n) for n in range(1, 9)] == [2, 4, 8, 16, 32, 64, 100, 100]
    for n in range(1, 9):
        full = policy.delay_s(n, 0.0)
        assert full * 0.75 <= policy.delay_s(n, 0.999) <= full
    assert [policy.exhausted(n) for n in (1, 7, 8, 9)] == [False, False, True, True]
    assert not RetryPolicy(max_attempts=None).exhausted(10_000)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# -- webhook signatures ------------------------------------------------------------------------

SECRET = "s3cret-for-the-desk-webhook"
BODY = b'{"delivery_id":"7:1:m1:webhook","kind":"gas_leak"}'


def test_signature_header_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    header = sign(SECRET, 1_700_000_000, BODY)
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"sha256={expected}"
    assert verify_signature(SECRET, "1700000000", BODY, header, now_s=1_700_000_010)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "now"),
    [
        ("another-secret", "1700000000", BODY, 1_700_000_000),  # wrong secret
        (SECRET, "1700000000", BODY.replace(b"gas", b"gaz"), 1_700_000_000),  # tampered body
        (SECRET, "1700000001", BODY, 1_700_000_000),  # tampered timestamp
        (SECRET, "1700000000", BODY, 1_700_000_301),  # stale: replayed after 5 minutes
        (SECRET, "1700000000", BODY, 1_699_999_699),  # from the future
        (SECRET, "17e8", BODY, 1_700_000_000),  # not an integer
        (SECRET, "", BODY, 1_700_000_000),
    ],
)
def test_verify_signature_refuses(secret: str, timestamp: str, body: bytes, now: int) -> None:
    header = sign(SECRET, 1_700_000_000, BODY)
    assert not verify_signature(secret, timestamp, body, header, now_s=now)


def test_verify_signature_refuses_malformed_headers_and_empty_secrets() -> None:
    good = sign(SECRET, 1_700_000_000, BODY)
    for header in ("", "sha256=", good.removeprefix("sha256="), "sha1=" + good[7:], good + "0"):
        assert not verify_signature(SECRET, 1_700_000_000, BODY, header, now_s=1_700_000_000)
    with pytest.raises(ValueError, match="empty"):
        sign("", 1, BODY)
    with pytest.raises(ValueError, match="empty"):
        verify_signature("  ", 1, BODY, good)


def test_webhook_secrets_per_webhook_from_env(tmp_path: Path) -> None:
    file = tmp_path / "secrets.json"
    file.write_text(
        json.dumps({"http://127.0.0.1:9000": "origin-wide", "https://a.example/x": "x"})
    )
    env = {SECRETS_FILE_ENV: str(file), SECRETS_ENV: json.dumps({"https://a.example/x": "own"})}
    secrets = WebhookSecrets.from_env(env)
    assert secrets.for_url("https://a.example/x") == b"own"  # the variable wins
    assert secrets.for_url("http://127.0.0.1:9000/hook/m1") == b"origin-wide"
    assert secrets.for_url("HTTP://127.0.0.1:9000/other?q=1") == b"origin-wide"
    assert secrets.for_url("https://a.example/y") is None
    assert "own" not in repr(secrets) and "a.example" not in repr(secrets)
    with pytest.raises(ValueError, match="empty"):
        WebhookSecrets({"https://b.example/hook": ""})
    with pytest.raises(ValueError):
        WebhookSecrets.from_json('["not", "a", "mapping"]')
    assert len(WebhookSecrets.from_env({})) == 0


def sender_with(handler: Any, secrets: WebhookSecrets | None = None) -> WebhookSender:
    secrets = secrets or WebhookSecrets({"https://desk.example": SECRET})
    return WebhookSender(secrets, transport=httpx.MockTransport(handler), clock_s=lambda: 1.7e9)


async def test_webhook_sender_signs_every_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with sender_with(handler) as sender:
        await sender.send("https://desk.example/hook", BODY, delivery_id="7:1:m1:webhook")
    (request,) = seen
    assert request.method == "POST" and request.content == BODY
    assert request.headers[DELIVERY_HEADER] == "7:1:m1:webhook"
    assert request.headers[TIMESTAMP_HEADER] == "1700000000"
    assert request.headers["content-type"].startswith("application/json")
    assert verify_signature(
        SECRET,
        request.headers[TIMESTAMP_HEADER],
        request.content,
        request.headers[SIGNATURE_HEADER],
        now_s=1.7e9,
    )


@pytest.mark.parametrize(
    ("status", "permanent", "retry_after"),
    [
        (500, False, None),
        (503, False, 120.0),
        (408, False, None),
        (429, False, 120.0),
        (400, True, None),
        (401, True, None),
        (404, True, None),
        (410, True, None),
        (302, True, None),  # redirects are not followed
    ],
)
async def test_webhook_sender_classifies_answers(
    status: int, permanent: bool, retry_after: float | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": "120", "Location": "https://elsewhere.example/"}
        return httpx.Response(status, headers=headers, text="secret stuff 13800138000")

    async with sender_with(handler) as sender:
        with pytest.raises(DeliveryError) as caught:
            await sender.send("https://desk.example/hook", BODY, delivery_id="d")
    assert caught.value.permanent is permanent
    assert caught.value.reason == f"HTTP {status}"  # no body, no URL in what is stored
    if status in (503, 429):
        assert caught.value.retry_after_s == retry_after


async def test_webhook_sender_errors_are_retryable_and_say_no_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused to https://desk.example/hook?token=abc")

    async with sender_with(handler) as sender:
        with pytest.raises(DeliveryError) as caught:
            await sender.send("https://desk.example/hook?token=abc", BODY, delivery_id="d")
    assert not caught.value.permanent
    assert "desk.example" not in caught.value.reason and "token" not in caught.value.reason

    async with sender_with(handler) as sender:  # no secret for this webhook: never unsigned
        with pytest.raises(DeliveryError, match="no webhook secret") as caught:
            await sender.send("https://other.example/hook", BODY, delivery_id="d")
    assert caught.value.permanent


# -- payload hygiene ---------------------------------------------------------------------------


def test_check_payload_accepts_what_a_member_needs() -> None:
    check_payload(payload())
    check_payload(payload(subject="", detail={"lel_percent": 35.5, "count": 3}))
    check_payload(payload(place={"building": "3号楼", "unit": "2单元", "room": "0101"}))


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"note": "resident 11010519491231002X"}, "note"),  # ID number, checksum or not
        ({"note": "call 138 0013 8000"}, None),  # mobile number, with separators
        ({"detail": {"callback": "+8613800138000"}}, "detail.callback"),
        ({"name": "张三"}, "name"),
        ({"person": {"display": "李建国"}}, "person"),
        ({"resident_name": "王秀英"}, "resident_name"),
        ({"ElderName": "赵桂兰"}, "ElderName"),
        ({"health_history": [{"hr": 41}]}, "health_history"),
        ({"medical-history": "hypertension"}, "medical-history"),
        ({"phone": "0755-1234567"}, "phone"),
        ({"id_card": "ends 002X"}, "id_card"),
        ({"subject": "Zhang San"}, "subject"),  # a subject is a pseudonym or nothing
        ({"subject_ref": "110105194912310026"}, None),
        ({"vehicle": "京A12345"}, None),  # a licence plate
    ],
)
def test_check_payload_refuses_raw_personal_data(extra: dict[str, Any], where: str | None) -> None:
    with pytest.raises(PayloadRejected) as caught:
        check_payload(payload(**extra))
    message = str(caught.value)
    if where is not None:
        assert repr(where) in message
    for value in ("张三", "李建国", "13800138000", "110105", "京A12345", "Zhang San"):
        assert value not in message  # the refusal never echoes the data


def test_check_payload_refuses_what_is_not_json() -> None:
    with pytest.raises(PayloadRejected):
        check_payload(payload(value=float("nan")))
    with pytest.raises(PayloadRejected):
        check_payload(payload(when=object()))


# -- hub ---------------------------------------------------------------------------------------


async def test_hub_fans_out_and_a_slow_screen_loses_old_items_counted() -> None:
    hub = Hub(queue_size=3)
    fast, slow = hub.subscribe(), hub.subscribe(maxsize=2)
    got: list[int] = []
    for i in range(5):
        assert hub.publish({"i": i}) == 2
        got.append((await fast.get())["i"]) if i < 2 else None
    assert got == [0, 1]
    assert [fast.get_nowait()["i"] for _ in range(fast.qsize())] == [2, 3, 4]
    assert [slow.get_nowait()["i"] for _ in range(slow.qsize())] == [3, 4]  # newest kept
    assert hub.dropped_for(slow) == 3 and hub.dropped_for(fast) == 0 and hub.dropped == 3
    hub.unsubscribe(slow)
    assert hub.publish({"i": 5}) == 1 and hub.subscribers == 1
    hub.publish_threadsafe({"i": 6})
    await asyncio.sleep(0)
    assert [fast.get_nowait()["i"] for _ in range(fast.qsize())] == [5, 6]
