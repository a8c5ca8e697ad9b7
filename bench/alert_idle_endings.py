"""How long the alert engine takes to pass over "all fine" reports while another process holds
the registry's write lock.

Rules report an ending for every normal reading; `AlertEngine.handle` drops the endings of
conditions that have no open alert after one read, so they never wait for the write lock (the
unit test `test_endings_without_an_open_alert_take_no_write_lock` checks that no lock is asked
for; this script prints how long it takes). A regression shows as the registry's busy timeout
(10 s) or a "database is locked" error.

    .venv/bin/python -m bench.alert_idle_endings [--endings 600] [--rounds 20]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from devices.places import PlaceLevel, place_at
from gateway.alerts.engine import AlertEngine
from gateway.alerts.model import Condition, Severity
from gateway.audit.store import AuditStore
from gateway.registry import Registry
from simulators.community import CommunityDevice, Equipment
from tests.support.registered import registered_community


def gas_leak(device: CommunityDevice, key: str = "gas_lel", *, active: bool = True) -> Condition:
    """What the gas rule reports for `device`'s room (`active=False`: the reading was fine)."""
    return Condition(
        rule_id=f"rule-{key}",
        key=key,
        kind="gas_leak",
        severity=Severity.I,
        location=place_at(device.location, PlaceLevel.ROOM),
        level=PlaceLevel.ROOM,
        at_ns=time.time_ns(),
        active=active,
        device_id=device.device_id,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endings", type=int, default=600, help="idle endings per call")
    parser.add_argument("--rounds", type=int, default=20, help="calls measured")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        community, registry_url, _ = registered_community(60, 0, "idle", Path(tmp))
        detector = next(d for d in community.devices if d.equipment is Equipment.GAS_DETECTOR)
        registry = Registry.open(registry_url)
        audit = AuditStore(Path(tmp) / "audit.sqlite3")
        engine = AlertEngine(registry, audit)
        try:
            engine.handle([gas_leak(detector)])  # one open alert, so the read has something to find
            locker = sqlite3.connect(
                Path(tmp) / "registry.sqlite3", isolation_level=None, timeout=0
            )
            locker.execute("BEGIN IMMEDIATE")  # another process is writing
            endings = [gas_leak(detector, f"k{i}", active=False) for i in range(args.endings)]
            times = []
            try:
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    changes = engine.handle(endings)
                    times.append(time.perf_counter() - started)
                    assert changes == []
            finally:
                locker.execute("ROLLBACK")
                locker.close()
        finally:
            registry.close()
            audit.close()
    times.sort()
    print(
        f"{args.endings} idle endings with the write lock held elsewhere, {args.rounds} calls:"
        f" median {statistics.median(times) * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
