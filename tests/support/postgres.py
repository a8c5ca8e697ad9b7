"""A private PostgreSQL for the tests that share state between gateway processes.

Debian's server binaries (installed by `scripts/services.sh postgres` when missing), a fresh
cluster under the test session's own directory, listening on a free 127.0.0.1 port only (no
Unix socket outside that directory), trust authentication for its one role on loopback. Run as
the `postgres` user when the tests run as root: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.support.influx_util import HOST, free_port
from tests.support.services import ROOT

ROLE = "gridgate"


def _binaries() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        subprocess.run([str(ROOT / "scripts" / "services.sh"), "postgres"], check=True)
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


class PrivatePostgres:
    def __init__(self) -> None:
        """Its own directory in /tmp: pytest's are private to the test user, and PostgreSQL
        runs as `postgres`."""
        self.root = Path(tempfile.mkdtemp(prefix="gridgate-pg-"))
        self.port = free_port()
        self.bin = _binaries()
        self.data = self.root / "data"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> None:
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            [*self._as, str(self.bin / "initdb"), "-D", str(self.data), "-U", ROLE,
             "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        options = (
            f"-c listen_addresses={HOST} -p {self.port} -c unix_socket_directories={self.root}"
            " -c fsync=off -c max_connections=200"  # durability is not what these tests check
        )
        subprocess.run(
            [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
             str(self.root / "postgres.log"), "-o", options, "-w", "start"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
            check=False, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh database; its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host=HOST, port=self.port, user=ROLE, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{ROLE}@{HOST}:{self.port}/{name}"
