"""Which adapter decodes which topic: MQTT topic filters (with + and #) → adapter.

The routes come from a YAML file (`routes.yaml` in this package by default), so adding a
vendor is adding one module to `adapters` and one entry to the file — nothing else::

    routes:
      - filter: "vendor/gasdet/{community}/+/data"   # {community}: the gateway's setting
        adapter: vendor_gas                           # the module adapters.vendor_gas
        options: {lel_ppm: 21000}                     # → vendor_gas.configure(lel_ppm=21000)

The first matching filter wins, so put specific vendor filters before broad ones. A wrong
file stops the gateway (`ConfigError` naming the route): a typo must not silently drop a
vendor's traffic.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.base import Adapter
from adapters.nbiot import PLATFORMS, push_filter
from devices.errors import ConfigError, RejectedInput
from devices.reading import Reading
from devices.topics import is_valid_id

ROUTES_FILE = "routes.yaml"
COMMUNITY_PLACEHOLDER = "{community}"
# Every adapter, by the name routes.yaml gives it (its module in this package): registered by
# name in one list, as Telegraf registers its plugins. A new vendor is a module and a line here.
REGISTERED_ADAPTERS: tuple[str, ...] = (
    "gridgate_json",
    "dlt645",
    "cjt188",
    "vendor_access",
    "vendor_gas",
    "vendor_meter",
    "vendor_wearable",
    "onenet",
    "ctwing",
    "hikvision_isapi",
)
_ADAPTER_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_FILTER_BYTES = 65_535  # MQTT's limit for a topic filter


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


def filter_covers(broad: str, narrow: str) -> bool:
    """Whether every topic `narrow` matches is also matched by `broad`."""
    b_parts = broad.split("/")
    n_parts = narrow.split("/")
    for i, n in enumerate(n_parts):
        if i >= len(b_parts):
            return False
        b = b_parts[i]
        if b == "#":
            return True
        if n == "#" or (b != "+" and b != n):
            return False
    return len(b_parts) == len(n_parts) or b_parts[len(n_parts) :] == ["#"]


def filters_overlap(first: str, second: str) -> bool:
    """Whether some topic is matched by both filters."""
    a_parts = first.split("/")
    b_parts = second.split("/")
    for a, b in zip(a_parts, b_parts, strict=False):
        if a == "#" or b == "#":
            return True
        if a != "+" and b != "+" and a != b:
            return False
    rest = a_parts[len(b_parts) :] or b_parts[len(a_parts) :]
    return rest in ([], ["#"])


def check_filter(topic_filter: str) -> None:
    """Raise ValueError unless `topic_filter` is a filter the broker and the router agree on."""
    if not topic_filter:
        raise ValueError("filter is empty")
    if len(topic_filter.encode()) > _MAX_FILTER_BYTES:
        raise ValueError("filter is longer than MQTT allows")
    if "\x00" in topic_filter:
        raise ValueError("filter contains NUL")
    if topic_filter.startswith("$"):
        raise ValueError("filter starts with '$' (broker topics; the gateway adds $share itself)")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if not level:
            raise ValueError(f"filter level {i + 1} is empty")
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError("'#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level (level {i + 1})")


@dataclass(frozen=True)
class Route:
    topic_filter: str
    adapter: Adapter


def push_routes() -> list[Route]:
    """The carrier platforms' routes, always present: their `$push/…` topics are made by
    `gateway.push` after checking a platform's signature, never received over MQTT."""
    return [Route(push_filter(platform), adapter_module(platform)) for platform in PLATFORMS]


class AdapterRegistry:
    """Maps topics to adapters; caches the decision per topic prefix-free exact topic."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = [*routes, *push_routes()]
        self._cache: dict[str, Adapter | None] = {}

    def subscriptions(self) -> list[str]:
        """The MQTT filters: every route but the push routes."""
        return [r.topic_filter for r in self.routes if not r.topic_filter.startswith("$")]

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


# -- the routes file ------------------------------------------------------------------------


class RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    filter: str = Field(min_length=1)
    adapter: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    routes: list[RouteSpec] = Field(min_length=1)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load keeps the last of two equal keys; a duplicated `options` would hide a typo."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: let the model refuse it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_routes(path: str | Path | None = None, *, community: str = "+") -> AdapterRegistry:
    """The registry a routes file describes (the shipped `routes.yaml` if `path` is None).

    `{community}` in filters becomes `community` (``+`` = every community). Raises
    ConfigError, naming the route, for anything wrong.
    """
    source = str(path) if path is not None else f"adapters/{ROUTES_FILE}"
    try:
        if path is None:
            text = resources.files("adapters").joinpath(ROUTES_FILE).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the routes file ({exc})") from None
    return routes_from_text(text, community=community, source=source)


def routes_from_text(text: str, *, community: str = "+", source: str = "routes") -> AdapterRegistry:
    """`load_routes` for a file already read (tests, settings embedding the routes)."""
    if community != "+" and not is_valid_id(community):
        raise ConfigError("community must be '+' or an id of [A-Za-z0-9_.:-]")
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    if document is None:
        raise ConfigError(f"{source}: file is empty; expected a `routes:` list")
    try:
        spec = RoutesFile.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    routes: list[Route] = []
    for index, entry in enumerate(spec.routes):
        where = f"{source}: routes[{index}] (adapter {entry.adapter!r})"
        try:
            routes.append(_build_route(entry, community))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        for earlier, route in enumerate(routes[:-1]):
            if filter_covers(route.topic_filter, routes[-1].topic_filter):
                raise ConfigError(
                    f"{where}: filter is unreachable, routes[{earlier}] already takes its topics"
                )
    return AdapterRegistry(routes)


def _describe(exc: ValidationError) -> str:
    """Name the route and the key; the file is ours, but keep the message short."""
    parts = []
    for error in exc.errors(include_url=False, include_context=False)[:5]:
        loc = list(error["loc"])
        where = "file"
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            where = f"routes[{loc[1]}]"
            loc = loc[2:]
        elif loc:
            where = str(loc[0])
            loc = loc[1:]
        key = ".".join(str(p) for p in loc)
        parts.append(f"{where}{': ' + key if key else ''}: {error['msg']}")
    return "; ".join(parts)


def _build_route(entry: RouteSpec, community: str) -> Route:
    topic_filter = entry.filter.replace(COMMUNITY_PLACEHOLDER, community)
    if "{" in topic_filter or "}" in topic_filter:
        raise ConfigError("filter has a placeholder other than {community}")
    try:
        check_filter(topic_filter)
    except ValueError as exc:
        raise ConfigError(f"invalid filter: {exc}") from None
    module = adapter_module(entry.adapter)
    own = getattr(module, "SUBSCRIPTION", None)
    if isinstance(own, str) and not filters_overlap(own, topic_filter):
        raise ConfigError(f"filter shares no topic with the adapter's own {own!r}")
    return Route(topic_filter, _configured(module, entry.options))


def adapter_module(adapter: str) -> ModuleType:
    """The module `adapters.<adapter>`, checked to be an adapter; ConfigError otherwise."""
    if not _ADAPTER_NAME.fullmatch(adapter):
        raise ConfigError("not an adapter name")
    if adapter not in REGISTERED_ADAPTERS:
        known = ", ".join(REGISTERED_ADAPTERS)
        raise ConfigError(f"unknown adapter: not one of {known} (adapters.registry)")
    qualified = f"{__package__}.{adapter}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            raise ConfigError(f"unknown adapter: there is no module {qualified}") from None
        raise ConfigError(f"adapter module failed to import ({exc})") from None
    except ImportError as exc:
        raise ConfigError(f"adapter module failed to import ({exc})") from None
    if not _is_adapter(module):
        raise ConfigError(f"module {qualified} is not an adapter (needs `name` and `decode`)")
    return module


def _configured(module: ModuleType, options: Mapping[str, Any]) -> Adapter:
    if not options:
        return module  # an Adapter: checked by _is_adapter
    configure = getattr(module, "configure", None)
    if not callable(configure):
        raise ConfigError("this adapter takes no options")
    bad = [key for key in options if not isinstance(key, str) or not _OPTION_NAME.fullmatch(key)]
    if bad:
        raise ConfigError("option names must be identifiers")
    try:
        adapter = configure(**options)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"options rejected: {exc}") from None
    if not _is_adapter(adapter):
        raise ConfigError("configure() did not return an adapter (needs `name` and `decode`)")
    return adapter  # type: ignore[no-any-return]


def _is_adapter(candidate: object) -> bool:
    return isinstance(getattr(candidate, "name", None), str) and callable(
        getattr(candidate, "decode", None)
    )


def default_registry(community: str = "+") -> AdapterRegistry:
    """The shipped routes (`routes.yaml`) for one community's topics (``+`` = all)."""
    return load_routes(None, community=community)


class _AdapterCatalog(Mapping[str, Adapter]):
    """Every registered adapter by name, imported on first use (importing the registry does
    not import every vendor)."""

    def __init__(self) -> None:
        self._found: dict[str, Adapter] | None = None

    def _adapters(self) -> dict[str, Adapter]:
        if self._found is None:
            self._found = {name: adapter_module(name) for name in REGISTERED_ADAPTERS}
        return self._found

    def __getitem__(self, key: str) -> Adapter:
        return self._adapters()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._adapters())

    def __len__(self) -> int:
        return len(self._adapters())

    def __repr__(self) -> str:
        return f"ADAPTERS({', '.join(self._adapters())})"


ADAPTERS: Mapping[str, Adapter] = _AdapterCatalog()
"""Every adapter by module name (gridgate_json, dlt645, cjt188, vendor_* …), unconfigured."""
