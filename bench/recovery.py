"""How long the gateway stays idle after InfluxDB comes back (issue 14: up to 29 s before the
spool's probe, when a writer slept out its doubling backoff).

`gridgate run` against a private influxd; InfluxDB is stopped for `--outage` seconds while
readings arrive, then started again. Printed: seconds from InfluxDB answering to the first
reading stored, and to the last, per round; first without the spool (the writers retry with a
backoff doubling to 30 s: the baseline, as before the spool), then with it (its probe every
GRIDGATE_SPOOL_PROBE_S wakes everything).

    .venv/bin/python -m bench.recovery [--rounds 2] [--outage 40]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import influx_count, make_session, messages
from bench.memory import gateway_env
from simulators.mqtt_tools import drop_session, publish_all
from tests.support.broker import PrivateBroker
from tests.support.influx_util import PrivateInflux
from tests.support.services import ROOT


def measure(
    broker: PrivateBroker, influx: PrivateInflux, tmp: Path, spool: bool, args: argparse.Namespace
) -> list[tuple[float, float]]:
    """(first, last) seconds per round for one gateway, with the spool on or off."""
    name = "spool" if spool else "nospool"
    work = tmp / name
    work.mkdir()
    import bench.ingest as ingest

    ingest.MQTT_PORT = broker.port
    community = f"rec{name}"
    make_session(name, f"gridgate/v1/{community}/+/+/+")
    env = gateway_env(work, broker.port, influx.url, name, community, name) | {
        "GRIDGATE_SPOOL": "true" if spool else "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(work / "log").open("wb"),
    )  # fmt: skip
    rows = []
    try:
        while "MQTT subscribed" not in (work / "log").read_text():
            time.sleep(0.2)
        batch = messages(community, args.readings * args.rounds)
        for r in range(args.rounds):
            before = influx_count(name, influx.url) if r else 0
            influx.stop()
            chunk = batch[r * args.readings : (r + 1) * args.readings]
            publish_all("127.0.0.1", broker.port, chunk, max_inflight=1000)
            time.sleep(args.outage)
            influx.start()  # returns once it answers
            up = time.monotonic()
            first = last = None
            while last is None:
                n = influx_count(name, influx.url) - before
                now = time.monotonic() - up
                if n > 0 and first is None:
                    first = now
                if n >= len(chunk):
                    last = now
                if now > 120:
                    raise RuntimeError(f"round {r}: {n} of {len(chunk)} after 120 s")
                time.sleep(0.1)
            rows.append((first or 0.0, last))
            print(f"  {name} round {r + 1}: first reading {first:.2f} s, all {last:.2f} s",
                  flush=True)  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        drop_session("127.0.0.1", broker.port, name)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--outage", type=float, default=40.0, help="seconds InfluxDB is away")
    parser.add_argument("--readings", type=int, default=2000, help="per round")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gridgate-recovery-"))
    broker, influx = PrivateBroker(tmp / "mq"), PrivateInflux(tmp / "influxd")
    broker.start()
    influx.start()
    try:
        baseline = measure(broker, influx, tmp, False, args)
        spooled = measure(broker, influx, tmp, True, args)
    finally:
        broker.stop()
        influx.stop()
    worst_base = max(last for _, last in baseline)
    worst = max(last for _, last in spooled)
    print(f"\nworst time until all stored after InfluxDB answers: {worst:.2f} s with the spool"
          f" and its probe, {worst_base:.2f} s without (writers' backoff):"
          f" ratio {worst / worst_base:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
