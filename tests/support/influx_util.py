"""A throwaway influxd for tests that stop InfluxDB: the shared one (scripts/services.sh) serves
every other test in parallel and must never go down.

Configured as scripts/services.sh configures the shared instance (InfluxDB 1.6, every listener
on 127.0.0.1, every optional service off), on free loopback ports, with all its state under
the test's own directory, so a stop and a start keep what was written.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class PrivateInflux:
    def __init__(
        self, root: Path, *, https: tuple[Path, Path] | None = None, auth: bool = False
    ) -> None:
        """`https`: (certificate, key) to serve https instead of http; `auth`: users and
        passwords required (influxd lets the first admin be created without)."""
        self.root = root
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.url = f"{'https' if https else 'http'}://{HOST}:{self.http_port}"
        tls = (
            f'https-enabled = true\n  https-certificate = "{https[0]}"\n'
            f'  https-private-key = "{https[1]}"'
            if https
            else "https-enabled = false"
        )
        self.log_path = root / "influxd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("meta", "data", "wal"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "influxdb.conf").write_text(
            f"""reporting-disabled = true
bind-address = "{HOST}:{self.rpc_port}"

[meta]
  dir = "{root / "meta"}"
  logging-enabled = false

[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = true

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{self.http_port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  {tls}

[ifql]
  enabled = false
  bind-address = "{HOST}:{free_port()}"

[logging]
  level = "warn"
  suppress-logo = true

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""
        )

    def start(self, timeout_s: float = 30.0) -> None:
        """Start influxd and return once it answers /ping."""
        assert self.proc is None, "already running"
        binary = shutil.which("influxd") or "/usr/bin/influxd"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "run", "-config", str(self.root / "influxdb.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                ping = httpx.get(f"{self.url}/ping", timeout=1, trust_env=False, verify=False)
                if ping.status_code == 204:  # (verify=False: only "is it up yet")
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"influxd not answering on {self.url} after {timeout_s} s")
            time.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (influxd closes its shards and WAL cleanly) and wait; SIGKILL if it hangs."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise

    def freeze(self) -> None:
        """SIGSTOP: influxd keeps its sockets open and answers nothing (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
