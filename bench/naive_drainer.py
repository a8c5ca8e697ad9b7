"""The naive peer of `make bench-peers`: what a developer writes in an afternoon.

paho-mqtt (auto-ack on receipt) → orjson → an f-string of line protocol → POST every 5,000
lines to InfluxDB's /write. No validation, no privacy, no registry, no alerts, and a message
is acknowledged before its point is stored (a crash loses what was in hand).

    python -m bench.naive_drainer HOST PORT CLIENT_ID TOPIC INFLUX_URL DATABASE
"""

from __future__ import annotations

import sys
import time

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

BATCH = 5000


def main(argv: list[str]) -> int:
    host, port, client_id, topic, influx_url, database = argv
    lines: list[str] = []
    http = httpx.Client()

    def flush() -> None:  # one thread only: paho's loop calls everything here
        body, lines[:] = "\n".join(lines), []
        if body:
            http.post(
                f"{influx_url}/write", params={"db": database, "precision": "ms"}, content=body
            ).raise_for_status()

    def on_connect(client: mqtt.Client, *_: object) -> None:
        print("naive: connected", file=sys.stderr, flush=True)
        client.subscribe(topic, qos=1)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        m = orjson.loads(msg.payload)
        family = msg.topic.split("/")[3]
        loc = m["loc"]
        fields = ",".join(
            f"{k}={v}"
            for k, v in m["data"].items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        )
        lines.append(
            f"{family},building={loc['building']},unit={loc['unit']},device={m['device_id']}"
            f" n=1i{',' + fields if fields else ''} {m['ts']}"
        )
        if len(lines) >= BATCH:
            flush()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
        protocol=mqtt.MQTTv311,
    )  # fmt: skip
    client.max_inflight_messages_set(1000)
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, int(port))
    flushed = time.monotonic()
    try:
        while True:
            client.loop(0.1)
            if lines and time.monotonic() - flushed > 0.5:  # the backlog's tail
                flush()
                flushed = time.monotonic()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
