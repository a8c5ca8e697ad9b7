"""What the private servers of the tests share (Prometheus, VictoriaMetrics): Debian's binary,
installed by `scripts/services.sh <subcommand>` when missing, started with its output in a log
file, and waited for until its HTTP endpoint answers."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.services import ROOT


def debian_binary(name: str, subcommand: str) -> str:
    found = shutil.which(name)
    if found is None:
        subprocess.run([str(ROOT / "scripts" / "services.sh"), subcommand], check=True)
        found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed")
    return found


def start_server(argv: list[str], log_path: Path, ready_url: str) -> subprocess.Popen[bytes]:
    """Start `argv` and return once `ready_url` answers 2xx (30 s at most)."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(ready_url, timeout=1).is_success:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            text = log_path.read_text(errors="replace")
            raise RuntimeError(f"{Path(argv[0]).name} did not start:\n{text[-2000:]}")
        time.sleep(0.05)


def stop_server(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(30)
