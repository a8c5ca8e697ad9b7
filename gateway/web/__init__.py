"""The pages people look at (R6, R5.7): static files served by the API, no build step and no
CDN — everything a page needs ships with gridgate. `screen/` is the property firm's monitoring
screen (`/`), `member/` the grid member's phone page (`/m/`), `vendor/` the libraries they use
(ECharts, with its licence; see vendor/README.md)."""

from __future__ import annotations

from pathlib import Path

WEB_ROOT = Path(__file__).parent

__all__ = ["WEB_ROOT"]
