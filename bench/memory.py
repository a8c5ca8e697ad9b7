"""Peak memory of `gridgate run` draining a large backlog, and during an InfluxDB outage with
1 MB junk messages mixed in (issue 14: target ≤ 250 MB).

Each case runs twice, one after the other: with the byte budget (the default
GRIDGATE_MQTT_MAX_HELD_MB) and without one (4096 MB: the gateway reads as fast as the broker
sends, as before the budget), so the figure comes with its baseline from the same run. The
peak is the kernel's VmHWM of the gateway process, read once at the end: nothing polls the
process while it works. A private Mosquitto (no message size limit, so the junk reaches the
gateway) and a private influxd (stopped for the outage case); every good reading must be in
InfluxDB at the end.

    .venv/bin/python -m bench.memory [--backlog 1000000] [--junk 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import POLL_S, influx_count, make_session, messages, peak_rss_mb
from privacy.keys import KeyRing
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.broker import PrivateBroker
from tests.support.influx_util import PrivateInflux
from tests.support.services import ROOT

MB = 1024 * 1024
SETTLED_S = 3.0  # a spool that has not grown this long: everything published is in it
NO_BUDGET_MB = "4096"


def gateway_env(
    work: Path, mqtt_port: int, influx_url: str, database: str, community: str, client_id: str
) -> dict[str, str]:
    """`gridgate run` against the benchmark's private broker and influxd, all its files in
    `work`, without registry or alerts (what is measured is ingestion)."""
    return {
        **os.environ,
        "GRIDGATE_MQTT_PORT": str(mqtt_port),
        "GRIDGATE_INFLUX_URL": influx_url,
        "GRIDGATE_INFLUX_DATABASE": database,
        "GRIDGATE_COMMUNITY": community,
        "GRIDGATE_MQTT_CLIENT_ID": client_id,
        "GRIDGATE_DEADLETTER_PATH": str(work / "dl.sqlite3"),
        "GRIDGATE_SPOOL_DIR": str(work / "spool"),
        "GRIDGATE_REQUIRE_REGISTRATION": "false",
        "GRIDGATE_ALERTS": "false",
        "GRIDGATE_PSEUDONYM_KEY_FILE": str(
            KeyRing.generate_file(work / "pseudonym.key") and work / "pseudonym.key"
        ),
        "GRIDGATE_REGISTRY_URL": f"sqlite:///{work / 'registry.sqlite3'}",
        "GRIDGATE_AUDIT_PATH": str(work / "audit.sqlite3"),
        "GRIDGATE_LOG_LEVEL": "INFO",
    }


def run_case(
    broker: PrivateBroker, influx: PrivateInflux, tmp: Path, name: str, budget_mb: str,
    good: list[tuple[str, bytes]], junk: int, outage: bool,
) -> tuple[float, float]:  # fmt: skip
    """(peak RSS MB, seconds) of one gateway draining `good` (+ `junk` 1 MB messages)."""
    community = good[0][0].split("/")[2]
    client_id = f"mem-{name}"
    database = f"mem_{name}"
    work = tmp / name
    work.mkdir()
    env = gateway_env(work, broker.port, influx.url, database, community, client_id) | {
        "GRIDGATE_MQTT_MAX_HELD_MB": budget_mb,
    }
    make_session_on(broker.port, client_id, f"gridgate/v1/{community}/+/+/+")
    junk_msgs = [
        (f"gridgate/v1/{community}/meter/junk-{i}/telemetry", b"\x00" * MB) for i in range(junk)
    ]
    mixed = good[: len(good) // 2] + junk_msgs + good[len(good) // 2 :]
    say = f"  {name}: publishing {len(good):,} readings + {junk} × 1 MB junk"
    if not outage:  # a backlog: published while the gateway is away
        print(say + " …", flush=True)
        publish_all("127.0.0.1", broker.port, mixed, max_inflight=1000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(work / "log").open("wb"),
    )  # fmt: skip
    started = time.monotonic()
    try:
        if outage:  # the gateway runs, InfluxDB is away: published, spooled, then replayed
            while "MQTT subscribed" not in (work / "log").read_text():
                time.sleep(0.2)
            influx.stop()
            print(say + ", InfluxDB stopped …", flush=True)
            publish_all("127.0.0.1", broker.port, mixed, max_inflight=1000)
            _until_spool_settles(work / "spool", proc, work / "log")
            influx.start()
        while (n := influx_count(database, influx.url)) < len(good):
            if proc.poll() is not None or time.monotonic() - started > 1800:
                raise RuntimeError(f"{n} of {len(good)}: " + (work / "log").read_text()[-2000:])
            time.sleep(POLL_S)  # one request on one client: it must not compete
        seconds = time.monotonic() - started
        peak = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        drop_session("127.0.0.1", broker.port, client_id)
    return peak, seconds


def _until_spool_settles(spool: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the spool has not grown for `SETTLED_S`: the gateway has caught up with the
    broker. File sizes only: reading the spool would compete with the gateway for the CPU."""
    last, changed = -1, time.monotonic()
    while time.monotonic() - changed < SETTLED_S:
        time.sleep(POLL_S)
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        size = sum(p.stat().st_size for p in spool.glob("*.spool"))
        if size != last:
            last, changed = size, time.monotonic()


def make_session_on(port: int, client_id: str, topic_filter: str) -> None:
    import bench.ingest as ingest

    ingest.MQTT_PORT = port
    make_session(client_id, topic_filter)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=1_000_000, help="readings in the backlog")
    parser.add_argument("--junk", type=int, default=1000, help="1 MB junk messages in the outage")
    parser.add_argument("--outage-readings", type=int, default=50_000)
    parser.add_argument("--budget-mb", default="16", help="GRIDGATE_MQTT_MAX_HELD_MB measured")
    parser.add_argument("--cases", default="backlog,outage", help="which cases, comma-separated")
    parser.add_argument(
        "--broker-queue", type=int, default=10_000_000,
        help="max_queued_messages (production's 1,000,000: an outage beyond it is the spool's)",
    )  # fmt: skip
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gridgate-mem-"))
    # no message size limit (the junk must reach the gateway), no snapshots while it works
    broker = PrivateBroker(
        tmp / "mq", queued=args.broker_queue, autosave="autosave_interval 3600\n"
    )
    influx = PrivateInflux(tmp / "influxd")
    broker.start()
    influx.start()
    results: list[tuple[str, float, float, float, float]] = []
    try:
        backlog = messages("membacklog", args.backlog if "backlog" in args.cases else 1)
        outage = messages("memoutage", args.outage_readings if "outage" in args.cases else 1)
        for tag, case, good, junk, down in (
            ("backlog", f"backlog of {args.backlog:,}", backlog, 0, False),
            ("outage", f"outage, {args.outage_readings:,} + {args.junk} × 1 MB junk", outage,
             args.junk, True),
        ):  # fmt: skip
            if tag not in args.cases.split(","):
                continue
            base_peak, base_s = run_case(
                broker, influx, tmp, f"{tag}_nobudget", NO_BUDGET_MB, good, junk, down
            )
            peak, secs = run_case(
                broker, influx, tmp, f"{tag}_budget", args.budget_mb, good, junk, down
            )
            results.append((case, peak, base_peak, secs, base_s))
    finally:
        broker.stop()
        influx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nbudget {args.budget_mb} MB vs none (4096 MB); time ratio: drain time vs none")
    print(f"{'case':<44} {'peak RSS':>9} {'no budget':>10} {'ratio':>6} {'time ratio':>10}")
    for case, peak, base, secs, base_s in results:
        print(
            f"{case:<44} {peak:>6.0f} MB {base:>7.0f} MB {peak / base:>6.2f} {secs / base_s:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
