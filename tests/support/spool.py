"""What a running gateway has in its disk spool, read beside it without changing anything."""

from __future__ import annotations

from pathlib import Path

from gateway.storage.spool import read_segment


def spooled_readings(spool_dir: Path) -> int:
    """Readings (not the gateway's own liveness lines) in the spool's segments now."""
    return sum(
        1
        for path in spool_dir.glob("*.spool")
        for record in read_segment(path.read_bytes())
        for source in record.sources
        if source is not None
    )
