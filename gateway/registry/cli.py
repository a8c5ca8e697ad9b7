"""``gridgate registry import FILE [--dry-run]`` and ``gridgate registry show [DEVICE_ID]``.

Exit status: 0 done; 1 the file was refused (every problem is printed to stderr as
``FILE:LINE: reason``) or the device is unknown; 2 the file or the registry cannot be used.
Output names members by id, role and name only: contact targets (phone numbers, webhook URLs
that may carry secrets) are never printed.

Until `gateway/cli.py` wires it in, ``python -m gateway.registry.cli`` runs it standalone
against ``GRIDGATE_REGISTRY_URL``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from gateway.registry.importer import FleetFileError, import_file
from gateway.registry.records import ROLE_LABELS, Role
from gateway.registry.store import Registry

DEFAULT_URL = "sqlite:///.run/gridgate/registry.sqlite3"


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``registry`` to the ``gridgate`` subcommands (`subparsers` from add_subparsers)."""
    registry = subparsers.add_parser("registry", help="device and grid-member registry")
    sub = registry.add_subparsers(dest="registry_command", required=True)
    imp = sub.add_parser(
        "import", help="import a property firm's fleet file (.yaml community, .csv devices/members)"
    )
    imp.add_argument("file", type=Path)
    imp.add_argument(
        "--dry-run", action="store_true", help="check everything and report, write nothing"
    )
    show = sub.add_parser("show", help="counts, or one device with its place and members")
    show.add_argument("device_id", nargs="?")


def run(args: argparse.Namespace, registry_url: str) -> int:
    try:
        registry = Registry.open(registry_url)
    except (SQLAlchemyError, OSError) as exc:
        print(f"gridgate registry: cannot open the registry: {exc}", file=sys.stderr)
        return 2
    try:
        if args.registry_command == "import":
            return _import(registry, args.file, args.dry_run)
        return _show(registry, args.device_id)
    except SQLAlchemyError as exc:
        print(f"gridgate registry: database error: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.close()


def _import(registry: Registry, path: Path, dry_run: bool) -> int:
    try:
        report = import_file(registry, path, dry_run=dry_run)
    except FleetFileError as exc:
        for problem in exc.problems:
            print(f"{path}:{problem.line}: {problem.message}", file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); nothing imported", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gridgate registry: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for notice in report.notices:
        print(f"{path}:{notice.line}: note: {notice.message}", file=sys.stderr)
    print(report.summary())
    return 0


def _show(registry: Registry, device_id: str | None) -> int:
    if device_id is None:
        c = registry.counts()

        def parts(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"

        print(f"places      {c.places:>7}  ({parts(c.places_by_level)})")
        print(f"households  {c.households:>7}  (elder living alone {c.elder_alone}, "
              f"face consent {c.face_consent})")  # fmt: skip
        print(f"devices     {c.devices:>7}  ({parts(c.devices_by_family)}; online "
              f"{c.devices_online}, offline {c.devices_offline})")  # fmt: skip
        roles = {f"{r} {ROLE_LABELS[Role(r)]}": n for r, n in sorted(c.members_by_role.items())}
        print(f"members     {c.members:>7}  ({parts(roles)})")
        return 0
    detail = registry.device_detail(device_id)
    if detail is None:
        print(f"gridgate registry: no device {device_id}", file=sys.stderr)
        return 1
    info, live = detail.info, detail.liveness
    loc = info.location
    codes = [c for c in (loc.community, loc.grid, loc.building, loc.unit, loc.room) if c]
    place = " / ".join(
        f"{code} {name}" if name and name != code else code
        for code, name in zip(codes, detail.place_names, strict=False)
    )
    if live.last_seen_ns is None:
        seen = "never"
    else:
        seen = datetime.fromtimestamp(live.last_seen_ns / 1e9, UTC).isoformat(timespec="seconds")
    state = {True: "online", False: "offline", None: "unknown"}[live.online]
    print(f"device      {info.device_id}")
    print(f"family      {info.family.value}   adapter {info.adapter}   vendor {info.vendor}")
    print(f"place       {place}")
    print(f"household   {info.household or '-'}")
    print(f"power       {info.power}   installed {info.installed or '-'}")
    print(f"liveness    {state}, last seen {seen}")
    if info.family.value == "access":
        print(f"face gate   {'approved by owners' if detail.gate_approved else 'not approved'}")
    members = registry.members_for(loc)
    print(f"members     {len(members)} responsible")
    for m in members:
        kinds = ", ".join(sorted({c.kind.value for c in m.channels})) or "no channel"
        print(f"  {m.id:<16} {m.role.value:<14} {m.role.label:<6} {m.name}  [{kinds}]")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gridgate")
    add_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run(args, os.environ.get("GRIDGATE_REGISTRY_URL", DEFAULT_URL))


if __name__ == "__main__":
    sys.exit(main())
