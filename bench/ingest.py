"""End-to-end ingest benchmark against the real services (run by `make bench`).

Method (same for both sides, as in the issue's baselines): N readings of all four families
are queued at QoS 1 in a persistent session while the consumer is away, then the consumer
connects and drains the backlog.

* raw broker rate: `mosquitto_sub` (a plain C subscriber, auto-ack) drains the N messages;
* gateway rate: `gridgate run` (separate process) drains them, decodes, validates,
  de-identifies, writes to InfluxDB and acks — timed until InfluxDB confirms N points.

Prints both rates and their ratio. Options: --messages N (default 200 000), --batch-size.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from adapters import gridgate_json
from devices.families import Channel, Family
from devices.location import Location
from devices.reading import Reading
from gateway.storage.retention import qualified
from privacy.keys import KeyRing
from simulators.mqtt_tools import drop_session, publish_all

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
MQTT_PORT = int(os.environ.get("GRIDGATE_MQTT_PORT", "18830"))
INFLUX_URL = f"http://{HOST}:{int(os.environ.get('GRIDGATE_INFLUX_PORT', '18086'))}"
RETENTION = os.environ.get("GRIDGATE_INFLUX_RETENTION", "true").lower() not in ("0", "false", "no")

SAMPLES: dict[Family, tuple[Channel, str, dict[str, object]]] = {
    Family.METER: (Channel.TELEMETRY, "telemetry", {"meter_type": "electricity", "energy_kwh": 1234.5, "voltage_v": 221.3, "current_a": 4.2, "power_kw": 0.93}),
    Family.SAFETY: (Channel.TELEMETRY, "telemetry", {"detector": "gas", "gas_lel_pct": 0.4, "co_ppm": 1.5, "temperature_c": 22.5, "battery_pct": 90.0}),
    Family.ELDER: (Channel.TELEMETRY, "telemetry", {"heart_rate_bpm": 71.0, "spo2_pct": 97.0, "steps": 1200, "worn": True, "latitude": 31.2, "longitude": 121.4}),
    Family.ACCESS: (Channel.EVENT, "entry_granted", {"method": "face", "direction": "in", "granted": True, "person_name": "张伟", "id_number": "11010519491231002X", "phone": "13812348000"}),
}  # fmt: skip


def messages(community: str, n: int) -> list[tuple[str, bytes]]:
    base_ms = int(time.time() * 1000) - 3_600_000
    families = list(SAMPLES)
    out = []
    for i in range(n):
        family = families[i % 4]
        channel, kind, values = SAMPLES[family]
        reading = Reading(
            device_id=f"{family.value[0]}-{i % 3000:04d}",
            family=family,
            channel=channel,
            kind=kind,
            time_ns=(base_ms + i) * 1_000_000,
            location=Location(
                community,
                f"g{i % 10:02d}",
                f"{i % 40 + 1}号楼",
                f"{i % 4 + 1}单元",
                f"{i % 3000:04d}",
            ),
            values=values,
        )
        out.append(gridgate_json.encode(reading))
    return out


def make_session(client_id: str, topic_filter: str) -> None:
    """Create a persistent QoS 1 subscription, then leave, so the broker queues for it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    client.connect(HOST, MQTT_PORT)
    client.loop_start()
    info = client.subscribe(topic_filter, qos=1)
    deadline = time.monotonic() + 10
    while not client.is_connected() or info[0] != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("could not subscribe")
        time.sleep(0.01)
    time.sleep(0.3)  # let SUBACK arrive before leaving
    client.disconnect()
    client.loop_stop()


def raw_broker_rate(msgs: list[tuple[str, bytes]], topic_filter: str) -> float:
    client_id = f"bench-raw-{uuid.uuid4().hex[:8]}"
    make_session(client_id, topic_filter)
    publish_all(HOST, MQTT_PORT, msgs, max_inflight=1000)
    started = time.perf_counter()
    subprocess.run(
        ["mosquitto_sub", "-h", HOST, "-p", str(MQTT_PORT), "-i", client_id, "-c", "-q", "1",
         "-t", topic_filter, "-C", str(len(msgs))],
        check=True, stdout=subprocess.DEVNULL, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    drop_session(HOST, MQTT_PORT, client_id)
    return len(msgs) / elapsed


POLL_S = 0.25  # the poller's pace: it must not compete with what it measures


@functools.cache
def _poller() -> httpx.Client:
    return httpx.Client()


def influx_count(database: str, url: str = INFLUX_URL) -> int:
    """Points of the four measurements: one request with four statements, on one client kept
    for the run (a new client per request built an SSL context each time: a tenth of the
    machine at the old 50 ms pace, issue 15)."""
    client = _poller()
    sources = [
        qualified(m) if RETENTION else f'"{m}"' for m in ("access", "safety", "meter", "elder")
    ]
    query = ";".join(f'SELECT count("schema") FROM {source}' for source in sources)
    r = client.post(f"{url}/query", params={"db": database, "q": query}, timeout=60)
    total = 0
    for res in r.json().get("results", []):
        for s in res.get("series", []):
            total += int(s["values"][0][1])
    return total


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def bench_gateway_env(community: str, tmp: Path) -> dict[str, str]:
    """A throwaway gateway for `community`: its own database, session, stores and key in `tmp`,
    unregistered devices admitted (these benches measure ingest, not the registry)."""
    KeyRing.generate_file(tmp / "pseudonym.key")
    return {
        "GRIDGATE_MQTT_PORT": str(MQTT_PORT),
        "GRIDGATE_INFLUX_URL": INFLUX_URL,
        "GRIDGATE_INFLUX_DATABASE": f"bench_{community}",
        "GRIDGATE_COMMUNITY": community,
        "GRIDGATE_MQTT_CLIENT_ID": f"gw-{community}",
        "GRIDGATE_DEADLETTER_PATH": str(tmp / "dl.sqlite3"),
        "GRIDGATE_SPOOL_DIR": str(tmp / "spool"),
        "GRIDGATE_AUDIT_PATH": str(tmp / "audit.sqlite3"),
        "GRIDGATE_REQUIRE_REGISTRATION": "false",
        "GRIDGATE_PSEUDONYM_KEY_FILE": str(tmp / "pseudonym.key"),
        "GRIDGATE_REGISTRY_URL": f"sqlite:///{tmp / 'registry.sqlite3'}",
        "GRIDGATE_LOG_LEVEL": "INFO",
    }


def gateway_rate(
    msgs: list[tuple[str, bytes]], community: str, args: argparse.Namespace, *, privacy: bool = True
) -> tuple[float, dict[str, str]]:
    database = f"bench_{community}"
    client_id = f"gw-{community}"
    tmp = Path(tempfile.mkdtemp(prefix="gridgate-bench-"))
    env = {
        **os.environ,
        **bench_gateway_env(community, tmp),
        "GRIDGATE_BATCH_SIZE": str(args.batch_size),
    }
    httpx.post(f"{INFLUX_URL}/query", params={"q": f'CREATE DATABASE "{database}"'})
    make_session(client_id, f"gridgate/v1/{community}/+/+/+")
    publish_all(HOST, MQTT_PORT, msgs, max_inflight=1000)
    entry = (
        ["-m", "gateway.cli", "run", "--no-progress"]
        if privacy
        else ["-m", "bench.gateway_without_privacy"]
    )
    proc = subprocess.Popen(
        [sys.executable, *entry],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # The clock starts when the gateway is connected (the broker then sends the backlog),
        # as mosquitto_sub's does: Python's start-up is not ingest speed.
        assert proc.stderr is not None
        for line in proc.stderr:
            if "MQTT connected" in line:
                break
        else:
            raise RuntimeError("gateway exited before connecting")
        started = time.perf_counter()
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
        deadline = started + 600
        while (n := influx_count(database)) < len(msgs):
            if time.perf_counter() > deadline or proc.poll() is not None:
                raise RuntimeError(f"gateway stopped or timed out with {n} of {len(msgs)} points")
            time.sleep(POLL_S)
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(30)
        drop_session(HOST, MQTT_PORT, client_id)
        httpx.post(f"{INFLUX_URL}/query", params={"q": f'DROP DATABASE "{database}"'})
        shutil.rmtree(tmp, ignore_errors=True)
    return len(msgs) / elapsed, env


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per side; the median is reported"
    )
    parser.add_argument(
        "--no-privacy-run", action="store_true", help="skip the run without privacy"
    )
    args = parser.parse_args()
    print(
        f"bench: {args.repeat} runs of {args.messages:,} messages of all four families",
        file=sys.stderr,
    )
    raws, gws, bares = [], [], []
    for run in range(1, args.repeat + 1):
        community = f"bench{uuid.uuid4().hex[:6]}"
        msgs = messages(community, args.messages)
        raws.append(raw_broker_rate(msgs, f"gridgate/v1/{community}/+/+/+"))
        gws.append(gateway_rate(msgs, community, args)[0])
        line = f"bench: run {run}: raw {raws[-1]:,.0f} msg/s, gateway {gws[-1]:,.0f} readings/s"
        if not args.no_privacy_run:
            community = f"bench{uuid.uuid4().hex[:6]}"
            bares.append(
                gateway_rate(messages(community, args.messages), community, args, privacy=False)[0]
            )
            line += f", without privacy {bares[-1]:,.0f}"
        print(line, file=sys.stderr)
    raw, gw = statistics.median(raws), statistics.median(gws)
    print(
        f"raw broker delivery : {raw:>10,.0f} msg/s (mosquitto_sub, QoS 1; median of {args.repeat})"
    )
    print(
        f"gateway end-to-end  : {gw:>10,.0f} readings/s (received → decoded → de-identified → in InfluxDB → acked; median)"
    )
    print(f"ratio gateway / raw : {gw / raw:>10.2f}")
    if bares:
        bare = statistics.median(bares)
        print(
            f"without privacy     : {bare:>10,.0f} readings/s (same pipeline, de-identifier replaced by identity)"
        )
        print(f"privacy keeps       : {gw / bare:>10.0%} of the throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
