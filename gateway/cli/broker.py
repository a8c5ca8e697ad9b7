"""`gridgate broker-config`: the broker's accounts and ACL from the registry
(`gateway/mqtt/broker_config.py`), for `include`-ing into mosquitto.conf."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from devices.errors import ConfigError
from gateway.settings import Settings


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "broker-config",
        help="Mosquitto accounts and ACL from the registry: devices publish only their own topics",
    )
    cmd.add_argument("--out", type=Path, default=Path(".run/gridgate/broker"), help="directory")
    cmd.add_argument(
        "--concentrator",
        action="append",
        default=[],
        metavar="ID",
        help="an account for a meter concentrator (it publishes the raw DL/T 645/CJ/T 188 "
        "frames of its meters on gridgate/raw/…/<ID>); repeatable",
    )
    cmd.add_argument(
        "--reload",
        type=Path,
        metavar="PIDFILE",
        help="then SIGHUP the broker of this pid file (scripts/services.sh:"
        " .run/mosquitto/mosquitto.pid): new devices can connect at once",
    )


def reload_broker(pid_file: Path) -> int:
    """SIGHUP the Mosquitto of `pid_file`: it re-reads password file and ACL, and checks
    connected clients' subscriptions again on every delivery (2.0)."""
    pid = int(pid_file.read_text().strip())
    os.kill(pid, signal.SIGHUP)
    return pid


def run(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.registry import default_registry
    from gateway.audit.store import AuditStore
    from gateway.cli.lookup import registry_ready
    from gateway.mqtt.broker_config import (
        ALERTS_USER,
        GATEWAY_USER,
        accounts,
        write_config,
    )
    from gateway.registry import Registry

    if not registry_ready("broker-config", settings.registry_url):
        return 2
    filters = default_registry(settings.community).subscriptions()
    with (
        AuditStore(settings.audit_path) as audit,
        Registry.open(settings.registry_url, audit=audit) as registry,
    ):
        devices = [(d.device_id, d.adapter) for d in registry.all_devices()]
        members = [m.id for m in registry.members() if m.active]
    try:
        users = accounts(devices, members, args.concentrator)
        new = write_config(args.out, filters, users)
    except ConfigError as exc:
        print(f"gridgate broker-config: {exc}", file=sys.stderr)
        return 2
    out = args.out
    print(f"{len(users)} accounts ({new} new) in {out}/passwd, ACL in {out}/acl;"
          f" plain passwords for provisioning in {out}/credentials.csv (mode 0600)")  # fmt: skip
    if args.reload is None:
        print(f"append {out}/mosquitto-auth.conf to mosquitto.conf, then kill -HUP the broker"
              " (it re-reads accounts and ACL; connected clients are re-checked)")  # fmt: skip
    else:
        try:
            pid = reload_broker(args.reload)
        except (OSError, ValueError) as exc:
            print(f"gridgate broker-config: cannot reload the broker ({args.reload}): {exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"broker (pid {pid}) reloaded: it re-reads accounts and ACL")
    print(f"gateway: GRIDGATE_MQTT_USERNAME={GATEWAY_USER} GRIDGATE_MQTT_CLIENT_ID={GATEWAY_USER}")
    print(f"         GRIDGATE_ALERT_MQTT_USERNAME={ALERTS_USER}, passwords from the CSV")
    return 0
