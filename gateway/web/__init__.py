"""The pages people look at (R6, R5.7): static files served by the API, no build step and no
CDN — everything a page needs ships with gridgate. `member/` is the grid member's phone page
(`/m/`)."""

from __future__ import annotations

from pathlib import Path

WEB_ROOT = Path(__file__).parent

__all__ = ["WEB_ROOT"]
