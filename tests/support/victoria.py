"""A private VictoriaMetrics: the InfluxDB 2.x write API (`/api/v2/write`) for the v2 client's
tests, on a free 127.0.0.1 port with its data in the test's own directory. Debian's package,
installed by `scripts/services.sh victoria` when missing. It keeps each field as a series
`<measurement>_<field>` labelled with the tags, at millisecond precision, and reads back through
its export API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from tests.support.debian_server import debian_binary, start_server, stop_server
from tests.support.influx_util import HOST, free_port


class PrivateVictoria:
    def __init__(self, root: Path, *flags: str) -> None:
        """`flags`: more of victoria-metrics' own, e.g. `-httpAuth.username=…`."""
        self.root = root
        self.flags = flags
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = start_server(
            [debian_binary("victoria-metrics", "victoria"), f"-httpListenAddr={HOST}:{self.port}",
             f"-storageDataPath={self.root / 'data'}", "-retentionPeriod=100y",
             "-loggerLevel=WARN", *self.flags],
            self.root / "victoria.log", f"{self.url}/health",
        )  # fmt: skip

    def stop(self) -> None:
        stop_server(self.proc)
        self.proc = None

    def log(self) -> str:
        return (self.root / "victoria.log").read_text(errors="replace")

    def samples(self, metric: str, **labels: str) -> list[tuple[dict[str, str], int, float]]:
        """Every sample of `metric` with these labels: (labels, time in ms, value)."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10)  # recent rows searchable now
        selector = ",".join([f'__name__="{metric}"', *(f'{k}="{v}"' for k, v in labels.items())])
        r = httpx.post(f"{self.url}/api/v1/export", data={"match[]": "{" + selector + "}"})
        r.raise_for_status()
        out = []
        for line in r.text.splitlines():
            series = json.loads(line)
            for t, v in zip(series["timestamps"], series["values"], strict=True):
                out.append((series["metric"], t, v))
        return out
