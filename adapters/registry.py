"""Which adapter decodes which topic: MQTT topic filters (with + and #) → adapter.

The first matching filter wins, so put specific vendor filters before broad ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from adapters import gridgate_json
from adapters.base import Adapter
from devices.errors import RejectedInput
from devices.reading import Reading


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (spec §4.7): `+` is one level, a trailing `#` any remainder."""
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return True
        if i >= len(t_parts):
            return False
        if f != "+" and f != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)


@dataclass(frozen=True)
class Route:
    topic_filter: str
    adapter: Adapter


class AdapterRegistry:
    """Maps topics to adapters; caches the decision per topic prefix-free exact topic."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._cache: dict[str, Adapter | None] = {}

    def subscriptions(self) -> list[str]:
        return [r.topic_filter for r in self.routes]

    def adapter_for(self, topic: str) -> Adapter:
        try:
            adapter = self._cache[topic]
        except KeyError:
            adapter = next(
                (r.adapter for r in self.routes if topic_matches(r.topic_filter, topic)), None
            )
            if len(self._cache) < 100_000:  # bounded: topics are per device
                self._cache[topic] = adapter
        if adapter is None:
            raise RejectedInput("no_adapter", "no adapter is configured for this topic")
        return adapter

    def decode(self, topic: str, payload: bytes) -> list[Reading]:
        return self.adapter_for(topic).decode(topic, payload)


def default_registry(community: str = "+") -> AdapterRegistry:
    """The gateway's own format for one community's topics (``+`` = all communities)."""
    return AdapterRegistry([Route(f"gridgate/v1/{community}/+/+/+", gridgate_json)])


ADAPTERS: dict[str, Adapter] = {gridgate_json.name: gridgate_json}
