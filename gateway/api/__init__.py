"""The HTTP API (R6): people act on alerts, screens read the community. `create_app`."""

from gateway.api.app import create_app

__all__ = ["create_app"]
