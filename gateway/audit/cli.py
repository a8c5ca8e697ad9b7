"""``gridgate audit verify [--anchor SEQ:HASH]`` and ``gridgate audit show [--last N]``.

Exit status: 0 the chain is intact (or shown); 1 the chain is broken, with the first broken
record named as ``audit: BROKEN at record #SEQ: <problem>``; 2 the log cannot be opened.
Both commands open the log read-only, so checking a copy handed to an auditor changes nothing.

`gridgate audit` (gateway.cli) runs it; ``python -m gateway.audit.cli`` runs it standalone against
``GRIDGATE_AUDIT_PATH``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit.store import DEFAULT_PATH, AuditLogError, AuditStore
from gateway.settings import environment
from privacy.audit import Anchor, canonical_json


def _anchor(text: str) -> Anchor:
    try:
        return Anchor.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit`` to the ``gridgate`` subcommands (`subparsers` from add_subparsers)."""
    audit = subparsers.add_parser("audit", help="the tamper-evident audit log (R3.6)")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="check the hash chain; name the first broken record")
    verify.add_argument(
        "--anchor",
        type=_anchor,
        help="SEQ:HASH of a record noted earlier (from `audit show`): also detects a cut tail",
    )
    show = sub.add_parser("show", help="print the newest records and the head hash")
    show.add_argument("--last", type=int, default=20, metavar="N", help="how many (default 20)")


def run(args: argparse.Namespace, audit_path: Path, registry_url: str | None = None) -> int:
    """`registry_url`: the database holding the alerts, to check that every alert record
    describes a step that happened (None: the chain only)."""
    try:
        store = AuditStore(audit_path, read_only=True)
    except AuditLogError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    try:
        if args.audit_command == "verify":
            return _verify(store, args.anchor, registry_url)
        return _show(store, args.last)
    except AuditLogError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _verify(store: AuditStore, anchor: Anchor | None, registry_url: str | None) -> int:
    result = store.verify(anchor)
    if not result.ok:
        print(f"audit: BROKEN at record #{result.first_bad_seq}: {result.problem}")
        return 1
    for trigger in store.missing_triggers():
        print(f"audit: warning: append-only trigger {trigger} is missing", file=sys.stderr)
    print(f"audit: {result.checked} records, chain intact")
    if registry_url is None or not _registry_exists(registry_url):
        return 0
    from gateway.alerts.store import unbacked_alert_records
    from gateway.registry import Registry

    with Registry.open(registry_url) as registry:
        bad = unbacked_alert_records(registry, store.records())
    if bad:
        shown = ", ".join(f"#{n}" for n in bad[:20]) + (" …" if len(bad) > 20 else "")
        print(f"audit: {len(bad)} alert records describe no alert step: {shown}")
        return 1
    print("audit: every alert record matches an alert step")
    return 0


def _registry_exists(url: str) -> bool:
    """A SQLite registry that was never created has no alerts to check (and is not created
    by looking); any other database is assumed to exist."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        return Path(url.removeprefix(prefix)).exists()
    return True


def _show(store: AuditStore, last: int) -> int:
    for r in store.last(last):
        when = datetime.fromtimestamp(r.at_ns / 1e9, UTC).isoformat(timespec="seconds")
        print(f"#{r.seq:<6} {when}  {r.actor:<16} {r.action.value:<18} {r.subject}  "
              f"{canonical_json(r.details)}")  # fmt: skip
    head = store.head()
    print(f"head: {head}" if head is not None else "head: (empty log)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gridgate")
    add_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    env = environment()
    return run(args, Path(env.get("GRIDGATE_AUDIT_PATH", str(DEFAULT_PATH))))


if __name__ == "__main__":
    sys.exit(main())
