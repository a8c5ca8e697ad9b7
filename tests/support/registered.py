"""A simulated community registered as a gateway knows it: the community simulator's fleet file
imported into a fresh SQLite registry, residents pseudonymised under a real key."""

from __future__ import annotations

from pathlib import Path

from gateway.registry import Registry
from gateway.registry.importer import import_file
from privacy.keys import KeyRing
from simulators.community import Community, build_community


def key_file(tmp: Path) -> Path:
    """A real pseudonymisation key in `tmp` for the gateway (it refuses to start without)."""
    path = tmp / "pseudonym.key"
    if not path.exists():
        KeyRing.generate_file(path)
    return path


def registered_community(
    households: int,
    seed: int,
    code: str,
    tmp: Path,
    url: str | None = None,
    *,
    nbiot: float = 0.0,
    isapi: float = 0.0,
) -> tuple[Community, str, Path]:
    """`url`: the registry's database (default: a new SQLite file in `tmp`); `nbiot`: the
    share of smoke detectors and water meters pushed by carrier platforms; `isapi`: the share
    of gates and barriers that are Hikvision terminals."""
    community = build_community(households, seed, code, nbiot=nbiot, isapi=isapi)
    fleet = community.write_fleet(tmp / "fleet.yaml")
    url = url or f"sqlite:///{tmp / 'registry.sqlite3'}"
    with Registry.open(url) as registry:
        import_file(registry, fleet, keyring=KeyRing.from_file(key_file(tmp)))
    return community, url, fleet
