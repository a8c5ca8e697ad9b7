"""Counters the gateway keeps, as plain integers: cheap on the hot path, read by the CLI and API.

Nothing here ever holds a payload or a field value; rejection counts are keyed by reason code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# upper bounds (seconds) of the batch write latency histogram's buckets
WRITE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """Counts per upper bound, a sum and a count: what Prometheus needs, nothing per sample."""

    bounds: tuple[float, ...] = WRITE_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(WRITE_BUCKETS_S) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        i = 0
        while i < len(self.bounds) and value > self.bounds[i]:
            i += 1
        self.counts[i] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) per bucket, "+Inf" last."""
        out, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


COMMUNITY_LABELS = 1000


@dataclass
class GatewayMetrics:
    received: int = 0  # MQTT messages handed to the pipeline
    acked: int = 0  # messages acknowledged to the broker (after the durable hand-off)
    readings: int = 0  # canonical readings accepted
    written: int = 0  # points confirmed written to InfluxDB
    dead_lettered: int = 0  # messages stored in the dead-letter store
    batches: int = 0
    write_retries: int = 0
    liveness_changes: int = 0  # devices going online/offline
    conditions: int = 0  # rule conditions handed to the alert engine
    rule_errors: int = 0  # rule evaluations that raised (a bug: logged, ingestion goes on)
    alerts_refused: int = 0  # conditions the alert store would not take (dead-lettered)
    spooled: int = 0  # readings put in the disk spool while InfluxDB was down
    replayed: int = 0  # spooled readings written to InfluxDB since (also in `written`)
    spool_bytes: int = 0  # what the spool holds now
    spool_batches: int = 0
    spool_full: int = 0  # 1 while the spool refuses batches (the broker holds them)
    spool_corrupt_bytes: int = 0  # torn or corrupt tails cut off at start-up
    # readings accepted per community code: Prometheus' "no readings from a community" rule
    readings_by_community: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)  # by reason code
    # carrier-platform pushes by (platform, outcome): accepted, unauthorized, replayed, busy …
    push_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    dropped_fields: Counter[str] = field(default_factory=Counter)  # by reason, from privacy
    write_seconds: Histogram = field(default_factory=Histogram)  # InfluxDB batch writes

    def count_community(self, community: str) -> None:
        """One accepted reading of `community`; past COMMUNITY_LABELS codes (devices without
        registration may name any) the rest count as "other", so the label stays bounded."""
        counts = self.readings_by_community
        if community not in counts and len(counts) >= COMMUNITY_LABELS:
            community = "other"
        counts[community] += 1

    @property
    def backlog(self) -> int:
        """Messages received but not yet acknowledged (in the pipeline or being written)."""
        return self.received - self.acked

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "acked": self.acked,
            "readings": self.readings,
            "written": self.written,
            "dead_lettered": self.dead_lettered,
            "backlog": self.backlog,
            "batches": self.batches,
            "write_retries": self.write_retries,
            "liveness_changes": self.liveness_changes,
            "conditions": self.conditions,
            "rule_errors": self.rule_errors,
            "alerts_refused": self.alerts_refused,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "spool_bytes": self.spool_bytes,
            "spool_batches": self.spool_batches,
            "spool_full": self.spool_full,
            "spool_corrupt_bytes": self.spool_corrupt_bytes,
            "rejected": dict(self.rejected),
            "push_requests": {f"{p}:{o}": n for (p, o), n in sorted(self.push_requests.items())},
            "dropped_fields": dict(self.dropped_fields),
        }

    def prometheus(self) -> str:
        """The Prometheus text exposition of these counters."""
        lines = []
        for name in (
            "received",
            "acked",
            "readings",
            "written",
            "dead_lettered",
            "batches",
            "liveness_changes",
            "conditions",
            "rule_errors",
            "alerts_refused",
            "spooled",
            "replayed",
        ):
            lines.append(f"# TYPE gridgate_{name}_total counter")
            lines.append(f"gridgate_{name}_total {getattr(self, name)}")
        lines.append("# TYPE gridgate_write_retries_total counter")
        lines.append(f"gridgate_write_retries_total {self.write_retries}")
        lines.append("# TYPE gridgate_backlog gauge")
        lines.append(f"gridgate_backlog {self.backlog}")
        for name in ("spool_bytes", "spool_batches", "spool_full", "spool_corrupt_bytes"):
            lines.append(f"# TYPE gridgate_{name} gauge")
            lines.append(f"gridgate_{name} {getattr(self, name)}")
        lines.append("# TYPE gridgate_rejected_total counter")
        for reason, n in sorted(self.rejected.items()):
            lines.append(f'gridgate_rejected_total{{reason="{reason}"}} {n}')
        lines.append("# TYPE gridgate_push_requests_total counter")
        for (platform, outcome), n in sorted(self.push_requests.items()):
            lines.append(
                f'gridgate_push_requests_total{{platform="{platform}",outcome="{outcome}"}} {n}'
            )
        lines.append("# TYPE gridgate_dropped_fields_total counter")
        for reason, n in sorted(self.dropped_fields.items()):
            lines.append(f'gridgate_dropped_fields_total{{reason="{reason}"}} {n}')
        return "\n".join(lines) + "\n"
