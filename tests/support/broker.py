"""A throwaway Mosquitto for tests that stop, restart or lock down their broker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    """A Mosquitto on a free loopback port with its own persistence directory.
    `allow_anonymous=False` with no password file refuses every client (CONNACK "not
    authorized"), as a broker does with wrong credentials."""

    def __init__(
        self,
        root: Path,
        *,
        allow_anonymous: bool = True,
        auth: str = "",
        autosave: str = "autosave_interval 1\n",
        listener: str = "",
    ) -> None:
        """`auth`: access lines (`gridgate broker-config`'s mosquitto-auth.conf) in place of
        `allow_anonymous`; `autosave`: the persistence lines; `listener`: lines for the
        listener (its TLS files)."""
        self.port = free_port()
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        user = "root" if os.geteuid() == 0 else ""
        access = auth or f"allow_anonymous {'true' if allow_anonymous else 'false'}\n"
        (root / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n{listener}"
            f"{access}persistence true\n"
            f"persistence_location {root / 'data'}/\nmax_inflight_messages 10000\n"
            f"max_queued_messages 1000000\n{autosave}" + (f"user {user}\n" if user else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.root / "mosquitto.conf")])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # Mosquitto saves its persistence file on SIGTERM
            self.proc.wait(10)
            self.proc = None
