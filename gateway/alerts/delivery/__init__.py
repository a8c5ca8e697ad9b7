"""Alert delivery (R5.6): a persisted outbox and the channels that empty it.

    engine ──enqueue (same transaction as the alert)──▶ Outbox (alert_outbox table)
                                                          │ claim (leased)
                                                          ▼
                             DeliveryWorker ──▶ MQTT (QoS 1, PUBACK) / webhook (signed, 2xx)
                                                          / Hub (WebSocket screens)
                             a worker of its own ──▶ WeCom / DingTalk group robots (robots.py:
                                                     rate-limited, bursts merged into digests)
                                                          │ mark_sent | retry | dead → on_dead

At-least-once on the wire, exactly-once for receivers that deduplicate by ``delivery_id``
(the idempotency key, in every payload and in ``X-Gridgate-Delivery``).
"""

from gateway.alerts.delivery.mqtt import MqttPublisher
from gateway.alerts.delivery.outbox import (
    COMMUNITY_TOPIC,
    MEMBER_TOPIC,
    DeliveryError,
    Outbox,
    OutboxItem,
    OutboxState,
    PayloadRejected,
    check_payload,
    community_topic,
    member_topic,
)
from gateway.alerts.delivery.webhook import (
    WebhookSecrets,
    WebhookSender,
    sign,
    verify_signature,
)
from gateway.alerts.delivery.websocket import Hub
from gateway.alerts.delivery.worker import DeliveryStats, DeliveryWorker, RetryPolicy

__all__ = [
    "COMMUNITY_TOPIC",
    "MEMBER_TOPIC",
    "DeliveryError",
    "DeliveryStats",
    "DeliveryWorker",
    "Hub",
    "MqttPublisher",
    "Outbox",
    "OutboxItem",
    "OutboxState",
    "PayloadRejected",
    "RetryPolicy",
    "WebhookSecrets",
    "WebhookSender",
    "check_payload",
    "community_topic",
    "member_topic",
    "sign",
    "verify_signature",
]
