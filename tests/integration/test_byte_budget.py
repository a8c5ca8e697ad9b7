"""The byte budget of what is received but not yet acked, against a real Mosquitto: past it
the source stops reading (the broker keeps the rest), acks let the rest flow, nothing is lost —
also for payloads far above the budget's share, and with the broker's in-flight window wide
open (it sends far past 10,000 once acks flow)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.mqtt.source import MESSAGE_OVERHEAD, Message, PahoSource
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.broker import PrivateBroker

pytestmark = pytest.mark.integration

BUDGET = 256 * 1024


async def take_all_available(source: PahoSource, settle_s: float = 0.2) -> list[Message]:
    """Everything the source hands out until nothing more comes for `settle_s`."""
    out: list[Message] = []
    while batch := await source.next_batch(10_000, settle_s):
        out += batch
    return out


@pytest.mark.parametrize("size", [1_000, 100_000], ids=["1kB", "100kB"])
async def test_the_source_reads_no_further_than_its_budget(
    tmp_path: Path, unique: str, size: int
) -> None:
    broker = PrivateBroker(tmp_path / "mq")
    broker.start()
    client_id = f"budget-{unique}"
    topic = f"budget/{unique}"
    n = 12 * BUDGET // size  # twelve budgets' worth
    try:
        async with PahoSource(
            "127.0.0.1", broker.port, [topic], client_id=client_id, max_held_bytes=BUDGET
        ) as source:
            assert await source.wait_subscribed()
            await asyncio.to_thread(
                publish_all, "127.0.0.1", broker.port,
                [(topic, i.to_bytes(4, "big") + b"x" * (size - 4)) for i in range(n)],
            )  # fmt: skip
            received: list[Message] = []
            rounds = 0
            while len(received) < n:
                held = await take_all_available(source)
                assert held, f"stalled after {len(received)} of {n}"
                cost = size + len(topic) + MESSAGE_OVERHEAD
                # at most one message past the budget, read before the check said stop —
                # and one more now and then to keep the connection alive
                assert len(held) * cost <= BUDGET + 2 * cost, (len(held), rounds)
                assert source.held_bytes == len(held) * cost
                received += held
                source.ack(held)
                rounds += 1
            assert rounds >= 10  # it really paused, again and again
            numbers = sorted(int.from_bytes(m.payload[:4], "big") for m in received)
            assert numbers == list(range(n))  # every message, once
            assert source.held_bytes == 0
    finally:
        drop_session("127.0.0.1", broker.port, client_id)
        broker.stop()
