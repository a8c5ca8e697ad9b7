"""gridgate beside the tools a property firm would pick instead (`make bench-peers`).

One run, one after another, each draining the same backlog (N messages of all four families,
QoS 1, queued in a persistent session while the drainer is away, as in `make bench`):

* `mosquitto_sub`: the broker's raw delivery, no work at all;
* naive: paho → orjson → f-string line protocol → POST 5,000 (`bench/naive_drainer.py`);
* Node-RED 4 with node-red-contrib-influxdb, its best flow (a function node maps the JSON to a
  point, a join node batches 1,000, the influxdb batch node writes), installed from npm into
  `.run/node-red` by `make bench-peers`;
* gridgate: `gridgate run`, everything on (decode, validate, de-identify, rules, InfluxDB,
  ack after the write), with `--workers 1` and `--workers 2`.

Each clock starts when the drainer says it is connected (start-up is not ingest speed) and
stops when InfluxDB holds N points, polled every 250 ms on one kept HTTP client. CPU seconds
per 100k readings are read from /proc for the drainer (and its children), the broker and
influxd. Both peers ack on receipt; gridgate acks after the durable write.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.ingest import (
    HOST,
    INFLUX_URL,
    MQTT_PORT,
    POLL_S,
    bench_gateway_env,
    make_session,
    messages,
    peak_rss_mb,
)
from simulators.mqtt_tools import drop_session, publish_all

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run"
NODE_RED = RUN / "node-red"
TICKS = os.sysconf("SC_CLK_TCK")
FAMILIES = ("access", "safety", "meter", "elder")


@dataclass
class Result:
    name: str
    rate: float  # readings/s
    cpu: dict[str, float]  # process → CPU seconds per 100k readings
    rss_mb: float | None  # the drainer's peak resident memory (its largest process)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def family(pid: int) -> list[int]:
    """`pid` and its live children (a supervisor's workers)."""
    out = [pid]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int(_stat(int(proc.name))[1]) == pid:  # [1]: the parent's pid
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its live children."""
    total = 0.0
    for member in family(pid):
        try:
            fields = _stat(member)
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def service_pid(pidfile: str) -> int:
    """A service scripts/services.sh started, by its pid file under .run/."""
    return int((RUN / pidfile).read_text())


_poller = httpx.Client()


def points(database: str, field: str) -> int:
    """Points of the four families in `database`'s default policy, one request."""
    query = ";".join(f'SELECT count("{field}") FROM "{m}"' for m in FAMILIES)
    r = _poller.post(f"{INFLUX_URL}/query", params={"db": database, "q": query}, timeout=60)
    return sum(
        int(s["values"][0][1]) for res in r.json().get("results", []) for s in res.get("series", [])
    )


def influx(q: str) -> None:
    httpx.post(f"{INFLUX_URL}/query", params={"q": q}, timeout=30).raise_for_status()


def drain(
    name: str,
    n: int,
    command: list[str],
    *,
    marker: str,
    count: Callable[[], int],
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> Result:
    """Start the drainer, wait for `marker` in its output, time it until `count()` reaches n."""
    log_path = Path(tempfile.mkstemp(prefix=f"peer-{name}-", suffix=".log")[1])
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while marker not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not connect:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.01)
        broker, influxd = (
            service_pid("mosquitto/mosquitto.pid"),
            service_pid("influxdb/influxd.pid"),
        )
        before = {"drainer": cpu_s(proc.pid), "broker": cpu_s(broker), "influxd": cpu_s(influxd)}
        started = time.perf_counter()
        deadline = time.monotonic() + 900
        while (done := count()) < n:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text()[-2000:]
                raise RuntimeError(f"{name} stopped or timed out at {done} of {n}:\n{tail}")
            time.sleep(POLL_S)
        elapsed = time.perf_counter() - started
        after = {"drainer": cpu_s(proc.pid), "broker": cpu_s(broker), "influxd": cpu_s(influxd)}
        rss = max(peak_rss_mb(pid) for pid in family(proc.pid))
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    log_path.unlink()
    per_100k = {k: (after[k] - before[k]) * 100_000 / n for k in before}
    return Result(name, n / elapsed, per_100k, rss)


def backlog(community: str, client_id: str, n: int) -> None:
    """N messages queued for `client_id`'s persistent session."""
    make_session(client_id, f"gridgate/v1/{community}/+/+/+")
    publish_all(HOST, MQTT_PORT, messages(community, n), max_inflight=1000)


def mosquitto_sub(n: int) -> Result:
    """Timed from its start (a C program is connected within milliseconds) to its exit after
    n messages; its CPU from the kernel's account of the exited child."""
    community, client_id = _fresh()
    backlog(community, client_id, n)
    broker, influxd = service_pid("mosquitto/mosquitto.pid"), service_pid("influxdb/influxd.pid")
    before = {"broker": cpu_s(broker), "influxd": cpu_s(influxd)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["mosquitto_sub", "-h", HOST, "-p", str(MQTT_PORT), "-i", client_id, "-c", "-q", "1",
         "-t", f"gridgate/v1/{community}/+/+/+", "-C", str(n)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)  # its own CPU, as the kernel counted it
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"mosquitto_sub exited {proc.returncode}")
    drop_session(HOST, MQTT_PORT, client_id)
    cpu = {
        "drainer": usage.ru_utime + usage.ru_stime,
        "broker": cpu_s(broker) - before["broker"],
        "influxd": cpu_s(influxd) - before["influxd"],
    }
    per_100k = {k: v * 100_000 / n for k, v in cpu.items()}
    # no RSS: the child's ru_maxrss counts this process's pages copied at fork, before exec
    return Result("mosquitto_sub", n / elapsed, per_100k, None)


def _fresh() -> tuple[str, str]:
    community = f"peer{uuid.uuid4().hex[:6]}"
    return community, f"bench-{community}"


def naive(n: int) -> Result:
    community, client_id = _fresh()
    database = f"bench_{community}"
    influx(f'CREATE DATABASE "{database}"')
    backlog(community, client_id, n)
    try:
        command = [sys.executable, "-m", "bench.naive_drainer", HOST, str(MQTT_PORT), client_id,
                   f"gridgate/v1/{community}/+/+/+", INFLUX_URL, database]  # fmt: skip
        return drain(
            "naive paho", n, command, marker="naive: connected", count=lambda: points(database, "n")
        )
    finally:
        drop_session(HOST, MQTT_PORT, client_id)
        influx(f'DROP DATABASE "{database}"')


NODE_RED_FUNCTION = """
const m = msg.payload;
const fields = {n: 1};
for (const [k, v] of Object.entries(m.data)) {
    if (typeof v === 'number') fields[k] = v;
}
msg.payload = {
    measurement: msg.topic.split('/')[3],
    tags: {building: m.loc.building, unit: m.loc.unit, device: m.device_id},
    fields: fields,
    timestamp: m.ts,
};
return msg;
"""


# Node ids are prefixed: Node-RED reads any property equal to a node id as a reference to it
# (a node "join" of type "join" is a "circular config node dependency").
def node_red_flow(client_id: str, community: str, database: str) -> list[dict[str, object]]:
    return [
        {"id": "n-tab", "type": "tab", "label": "bench"},
        {"id": "n-broker", "type": "mqtt-broker", "broker": HOST, "port": str(MQTT_PORT),
         "clientid": client_id, "usetls": False, "protocolVersion": "4", "keepalive": "60",
         "cleansession": False, "autoConnect": True},
        {"id": "n-in", "type": "mqtt in", "z": "n-tab", "topic": f"gridgate/v1/{community}/+/+/+",
         "qos": "1", "datatype": "json", "broker": "n-broker", "nl": False, "rap": True,
         "inputs": 0, "wires": [["n-map"]]},
        {"id": "n-map", "type": "function", "z": "n-tab", "func": NODE_RED_FUNCTION, "outputs": 1,
         "wires": [["n-join"]]},
        {"id": "n-join", "type": "join", "z": "n-tab", "mode": "custom", "build": "array",
         "property": "payload", "propertyType": "msg", "count": "1000", "timeout": "0.2",
         "joiner": "\\n", "joinerType": "str", "accumulate": False, "wires": [["n-out"]]},
        {"id": "n-db", "type": "influxdb", "hostname": HOST, "port": INFLUX_URL.rsplit(":", 1)[1],
         "protocol": "http", "database": database, "influxdbVersion": "1.x", "usetls": False},
        {"id": "n-out", "type": "influxdb batch", "z": "n-tab", "influxdb": "n-db", "precision": "ms",
         "retentionPolicy": "", "wires": []},
    ]  # fmt: skip


def node_red(n: int) -> Result:
    binary = NODE_RED / "node_modules" / ".bin" / "node-red"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: `make bench-peers` installs it from npm")
    community, client_id = _fresh()
    database = f"bench_{community}"
    influx(f'CREATE DATABASE "{database}"')
    user_dir = Path(tempfile.mkdtemp(prefix="peer-node-red-"))
    (user_dir / "flows.json").write_text(json.dumps(node_red_flow(client_id, community, database)))
    (user_dir / "settings.js").write_text(
        "module.exports = { uiHost: '127.0.0.1', uiPort: 0, httpAdminRoot: false,"
        " httpNodeRoot: false, flowFile: 'flows.json', credentialSecret: false,"
        " logging: { console: { level: 'info' } } };\n"
    )
    backlog(community, client_id, n)
    try:
        command = [str(binary), "--userDir", str(user_dir), "--settings",
                   str(user_dir / "settings.js")]  # fmt: skip
        return drain(
            "Node-RED",
            n,
            command,
            marker="Connected to broker",
            count=lambda: points(database, "n"),
        )
    finally:
        drop_session(HOST, MQTT_PORT, client_id)
        influx(f'DROP DATABASE "{database}"')
        shutil.rmtree(user_dir, ignore_errors=True)


def gridgate(n: int, workers: int) -> Result:
    community = f"peer{uuid.uuid4().hex[:6]}"
    database = f"bench_{community}"
    client_id = f"gw-{community}"
    tmp = Path(tempfile.mkdtemp(prefix="peer-gridgate-"))
    env = bench_gateway_env(community, tmp) | {
        "GRIDGATE_INFLUX_RETENTION": "false",  # the default policy, as the peers write
        "GRIDGATE_MQTT_SHARED_GROUP": f"g-{community}",
    }
    influx(f'CREATE DATABASE "{database}"')
    # every worker's session queued before the backlog: `$share` rotates over them
    topic = f"$share/g-{community}/gridgate/v1/{community}/+/+/+"
    sessions = [f"{client_id}-w{k}" for k in range(1, workers + 1)] if workers > 1 else []
    for session in sessions or [client_id]:
        make_session(session, topic if sessions else f"gridgate/v1/{community}/+/+/+")
    publish_all(HOST, MQTT_PORT, messages(community, n), max_inflight=1000)
    try:
        command = [sys.executable, "-m", "gateway.cli", "run", "--no-progress",
                   "--workers", str(workers)]  # fmt: skip
        marker = "MQTT connected" if workers == 1 else f"w{workers} gateway.mqtt.source: MQTT con"
        name = "gridgate" + (f" ×{workers}" if workers > 1 else "")
        return drain(
            name, n, command, marker=marker, count=lambda: points(database, "schema"), env=env
        )
    finally:
        for session in sessions or [client_id]:
            drop_session(HOST, MQTT_PORT, session)
        influx(f'DROP DATABASE "{database}"')
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument(
        "--only", nargs="*", choices=["sub", "naive", "node-red", "gridgate", "gridgate2"],
        help="run these drainers only (default: all)",
    )  # fmt: skip
    args = parser.parse_args()
    n = args.messages
    runs: dict[str, Callable[[], Result]] = {
        "sub": lambda: mosquitto_sub(n),
        "naive": lambda: naive(n),
        "node-red": lambda: node_red(n),
        "gridgate": lambda: gridgate(n, 1),
        "gridgate2": lambda: gridgate(n, 2),
    }
    results = []
    for key, run in runs.items():
        if args.only and key not in args.only:
            continue
        print(f"peers: draining {n:,} messages with {key} …", file=sys.stderr, flush=True)
        results.append(run())
        r = results[-1]
        print(f"peers: {r.name}: {r.rate:,.0f} readings/s", file=sys.stderr, flush=True)
    print(f"\n{n:,} queued QoS 1 messages of four families, drained one drainer at a time\n")
    print(
        f"{'drainer':<16}{'readings/s':>12}  {'peak RSS':>9}   CPU s per 100k readings:"
        " drainer  broker  influxd"
    )
    for r in results:
        c = r.cpu
        rss = "—" if r.rss_mb is None else f"{r.rss_mb:,.0f} MB"
        print(
            f"{r.name:<16}{r.rate:>12,.0f}  {rss:>9}   {'':>24}{c['drainer']:>7.1f}"
            f" {c['broker']:>7.1f} {c['influxd']:>8.1f}"
        )
    best = {r.name: r.rate for r in results}
    for r in results:
        if r.name.startswith("gridgate"):
            ratios = ", ".join(
                f"{r.rate / rate:.2f}× {name}"
                for name, rate in best.items()
                if not name.startswith("gridgate")
            )
            print(f"{r.name}: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
