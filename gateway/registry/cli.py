"""``gridgate registry import FILE [--dry-run]``, ``gridgate registry rekey FILE [--dry-run]``
and ``gridgate registry show [DEVICE_ID]``.

A file with residents needs the pseudonym key ring (their ID numbers become pseudonyms);
``rekey`` adds pseudonyms under a key newly put into the ring (after a rotation). Consent and
vault changes go to the audit log when `run` is given its path.

After a good import (or dry run), places with devices where an alert would reach no member
are printed to stderr as ``FILE: warning: …``, checked against the routing policy
(``GRIDGATE_ROUTING_POLICY`` or the shipped one): who is told first of each severity.

Exit status: 0 done; 1 the file was refused (every problem is printed to stderr as
``FILE:LINE: reason``) or the device is unknown; 2 the file or the registry cannot be used.
Output names members by id, role and name only: contact targets (phone numbers, webhook URLs
that may carry secrets) are never printed. Problems never echo a refused value. ``show`` prints
``<redacted>`` for any id, code or name that holds a personal identifier (a registry written
before the importer refused them may hold one; rules in `gateway.registry.identifiers`).

`gridgate registry` (gateway.cli) runs it; ``python -m gateway.registry.cli`` runs it standalone
against ``GRIDGATE_REGISTRY_URL``, ``GRIDGATE_AUDIT_PATH`` and the key ring of
``GRIDGATE_PSEUDONYM_KEYS`` / ``GRIDGATE_PSEUDONYM_KEY_FILE``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from devices.errors import ConfigError
from gateway.alerts.routing import load_routing_policy
from gateway.audit.store import AuditLogError, AuditStore
from gateway.registry.coverage import Audience
from gateway.registry.identifiers import (
    shown_id,
    shown_place_name,
    shown_text,
)
from gateway.registry.importer import NEEDS_KEYRING, FleetFileError, import_file, rekey_file
from gateway.registry.records import ROLE_LABELS, Role
from gateway.registry.store import Registry
from gateway.settings import environment
from privacy.keys import ENV_VAR, FILE_ENV_VAR, KeyRing

DEFAULT_URL = "sqlite:///.run/gridgate/registry.sqlite3"


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``registry`` to the ``gridgate`` subcommands (`subparsers` from add_subparsers)."""
    registry = subparsers.add_parser("registry", help="device and grid-member registry")
    sub = registry.add_subparsers(dest="registry_command", required=True)
    imp = sub.add_parser(
        "import",
        help="import a property firm's fleet file (.yaml community; .csv devices, members or"
        " residents)",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument(
        "--dry-run", action="store_true", help="check everything and report, write nothing"
    )
    rekey = sub.add_parser(
        "rekey",
        help="after a key rotation: add residents' pseudonyms under every key of the ring",
    )
    rekey.add_argument("file", type=Path, help="the fleet file (or residents CSV) with residents")
    rekey.add_argument("--dry-run", action="store_true", help="check and count, write nothing")
    show = sub.add_parser("show", help="counts, or one device with its place and members")
    show.add_argument("device_id", nargs="?")


def run(
    args: argparse.Namespace,
    registry_url: str,
    *,
    keyring: KeyRing | Callable[[], KeyRing] | None = None,
    audit_path: Path | None = None,
    routing_policy: Path | None = None,
) -> int:
    """`keyring` (or a loader such as `KeyRing.load`, called only by import and rekey) for
    files with residents; `audit_path` to audit consent and vault changes; `routing_policy`
    (default: GRIDGATE_ROUTING_POLICY, else the shipped one) for the import's warnings."""
    ring: KeyRing | None = None
    ring_error = f"no key ring configured ({ENV_VAR} or {FILE_ENV_VAR})"
    if args.registry_command in ("import", "rekey"):
        try:
            ring = keyring() if callable(keyring) else keyring
        except ConfigError as exc:  # fine for a file without residents; said if it has some
            ring_error = str(exc)
        if ring is None and args.registry_command == "rekey":
            print(f"gridgate registry: rekey needs the pseudonym key ring: {ring_error}",
                  file=sys.stderr)  # fmt: skip
            return 2
    audit: AuditStore | None = None
    try:
        if audit_path is not None and args.registry_command in ("import", "rekey"):
            audit = AuditStore(audit_path)
        registry = Registry.open(registry_url, audit=audit)
    except (SQLAlchemyError, OSError, AuditLogError) as exc:
        print(f"gridgate registry: cannot open the registry: {exc}", file=sys.stderr)
        if audit is not None:
            audit.close()
        return 2
    try:
        if args.registry_command in ("import", "rekey"):
            rekey = args.registry_command == "rekey"
            audiences = [] if rekey else _audiences(routing_policy)
            return _import(
                registry, args.file, args.dry_run, ring, ring_error, rekey=rekey,
                audiences=audiences,
            )  # fmt: skip
        return _show(registry, args.device_id)
    except SQLAlchemyError as exc:
        print(f"gridgate registry: database error: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.close()
        if audit is not None:
            audit.close()


def _import(
    registry: Registry,
    path: Path,
    dry_run: bool,
    keyring: KeyRing | None,
    ring_error: str,
    *,
    rekey: bool,
    audiences: list[Audience],
) -> int:
    warnings: list[str] = []
    try:
        if rekey:
            assert keyring is not None
            summary = rekey_file(registry, path, keyring, dry_run=dry_run).summary()
            notices = []
        else:
            report = import_file(
                registry, path, dry_run=dry_run, keyring=keyring, audiences=audiences
            )
            summary, notices, warnings = report.summary(), report.notices, report.warnings
    except FleetFileError as exc:
        for problem in exc.problems:
            print(f"{path}:{problem.line}: {problem.message}", file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); nothing imported", file=sys.stderr)
        if keyring is None and any(NEEDS_KEYRING in p.message for p in exc.problems):
            print(f"gridgate registry: {ring_error}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gridgate registry: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for notice in notices:
        print(f"{path}:{notice.line}: note: {notice.message}", file=sys.stderr)
    for warning in warnings:  # imported all the same: the firm may add the members next
        print(f"{path}: warning: {warning}", file=sys.stderr)
    print(summary)
    return 0


def _audiences(path: Path | None) -> list[Audience]:
    """Who the routing policy tells first of which alerts; a policy that does not load is
    said, and then only places where nobody at all is responsible are warned about."""
    if path is None:
        configured = environment().get("GRIDGATE_ROUTING_POLICY")
        path = Path(configured) if configured else None
    try:
        return load_routing_policy(path).audiences()
    except ConfigError as exc:
        print(f"gridgate registry: note: the routing policy does not load, so only places"
              f" nobody at all is responsible for are checked: {exc}", file=sys.stderr)  # fmt: skip
        return []


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
        print(f"residents   {c.residents:>7}  (face consent {c.residents_face_consent})")
        return 0
    detail = registry.device_detail(device_id)
    if detail is None:
        print(f"gridgate registry: no device {shown_id(device_id)}", file=sys.stderr)
        return 1
    info, live = detail.info, detail.liveness
    loc = info.location
    codes = [c for c in (loc.community, loc.grid, loc.building, loc.unit, loc.room) if c]
    place = " / ".join(
        f"{shown_id(code)} {shown_place_name(name)}" if name and name != code else shown_id(code)
        for code, name in zip(codes, detail.place_names, strict=False)
    )
    if live.last_seen_ns is None:
        seen = "never"
    else:
        seen = datetime.fromtimestamp(live.last_seen_ns / 1e9, UTC).isoformat(timespec="seconds")
    state = {True: "online", False: "offline", None: "unknown"}[live.online]
    print(f"device      {shown_id(info.device_id)}")
    print(f"family      {info.family.value}   adapter {shown_id(info.adapter)}   "
          f"vendor {shown_text(info.vendor)}")  # fmt: skip
    print(f"place       {place}")
    print(f"household   {shown_id(info.household) if info.household else '-'}")
    print(f"power       {info.power}   installed {info.installed or '-'}")
    print(f"liveness    {state}, last seen {seen}")
    if info.family.value == "access":
        print(f"face gate   {'approved by owners' if detail.gate_approved else 'not approved'}")
    members = registry.members_for(loc)
    print(f"members     {len(members)} responsible")
    for m in members:
        kinds = ", ".join(sorted({c.kind.value for c in m.channels})) or "no channel"
        print(f"  {shown_id(m.id):<16} {m.role.value:<14} {m.role.label:<6} "
              f"{shown_text(m.name)}  [{kinds}]")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gridgate")
    add_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    env = environment()
    audit_env = env.get("GRIDGATE_AUDIT_PATH")  # standalone: audited when it is set
    audit_path = Path(audit_env) if audit_env else None
    return run(
        args,
        env.get("GRIDGATE_REGISTRY_URL", DEFAULT_URL),
        keyring=lambda: KeyRing.load(env),
        audit_path=audit_path,
    )


if __name__ == "__main__":
    sys.exit(main())
