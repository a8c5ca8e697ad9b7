"""decode → validate → privacy → storage + alerts, with everything the hot path keeps beside
it: dead letters, the device snapshot, liveness, the counters, the backoff of its hand-offs."""

from gateway.pipeline.core import AlertSink, Pipeline, PipelineConfig

__all__ = ["AlertSink", "Pipeline", "PipelineConfig"]
