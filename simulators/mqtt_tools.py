"""Small MQTT tools for driving a real broker (paho-mqtt 2.x): publish a list of messages and
wait for every PUBACK, end a persistent session. Used by the integration tests and benchmarks;
`publisher` is the simulator's own rate-controlled, fully accounted publishing."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def publish_all(
    host: str, port: int, messages: Iterable[tuple[str, bytes]], *, max_inflight: int = 500
) -> int:
    """Publish at QoS 1 and return once the broker has acknowledged every message."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(max_inflight)
    slots = threading.Semaphore(max_inflight)
    done = threading.Condition()
    acked = 0

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        nonlocal acked
        with done:
            acked += 1
            done.notify_all()
        slots.release()

    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    sent = 0
    try:
        for topic, payload in messages:
            slots.acquire()
            client.publish(topic, payload, qos=1)
            sent += 1
        with done:
            if not done.wait_for(lambda: acked >= sent, timeout=120):
                raise TimeoutError(f"broker acknowledged {acked} of {sent}")
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


def drop_session(host: str, port: int, client_id: str) -> None:
    """End a persistent session (and its queue) by connecting once with clean_session."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311
    )
    client.connect(host, port)
    client.loop_start()
    client.disconnect()
    client.loop_stop()
