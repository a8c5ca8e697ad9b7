"""A private Prometheus (Debian's package, installed by `scripts/services.sh prometheus` when
missing) scraping given targets every second and evaluating gridgate's shipped alerting rules
(deploy/prometheus/) every second, with every `for:` shortened to 0s so that a rule fires as
soon as its expression holds. Listens on a free 127.0.0.1 port; its data in the test's dir."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.debian_server import debian_binary, start_server, stop_server
from tests.support.influx_util import HOST, free_port
from tests.support.services import ROOT

RULES = ROOT / "deploy" / "prometheus" / "gridgate-rules.yml"


class PrivatePrometheus:
    def __init__(self, root: Path, targets: list[str]) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        rules = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 0s", RULES.read_text())
        (root / "rules.yml").write_text(rules)
        quoted = ", ".join(f"'{t}'" for t in targets)
        (root / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules.yml]\n"
            f"scrape_configs: [{{job_name: gridgate, static_configs: [{{targets: [{quoted}]}}]}}]\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_server(
            [debian_binary("prometheus", "prometheus"),
             f"--config.file={self.root / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.root / 'data'}",
             f"--web.listen-address={HOST}:{self.port}"],
            self.root / "prometheus.log", f"{self.url}/-/ready",
        )  # fmt: skip

    def stop(self) -> None:
        stop_server(self.proc)
        self.proc = None

    def firing(self) -> set[str]:
        """Names of the alerts firing now."""
        r = httpx.get(f"{self.url}/api/v1/alerts", timeout=5)
        r.raise_for_status()
        alerts: list[dict[str, Any]] = r.json()["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    def value(self, promql: str) -> float | None:
        """The single value `promql` has now (None: no series)."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def evaluated_after(self, at: float) -> bool:
        """Every rule group has been evaluated after `at` (a time.time() value)."""
        r = httpx.get(f"{self.url}/api/v1/rules", timeout=5)
        r.raise_for_status()
        groups = r.json()["data"]["groups"]
        return bool(groups) and all(
            datetime.fromisoformat(g["lastEvaluation"][:26].rstrip("Z"))
            .replace(tzinfo=UTC)
            .timestamp()
            > at
            for g in groups
        )

    def targets_up(self) -> bool:
        r = httpx.get(f"{self.url}/api/v1/targets", timeout=5)
        r.raise_for_status()
        active = r.json()["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)
