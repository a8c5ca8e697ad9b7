"""Strict loading of gridgate's YAML configuration files (privacy policy, alert rules, routing):
one place for the rules every such file follows — duplicate keys refused, a mapping at the
top, and every validation problem reported at once with its path, never half a file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from devices.errors import ConfigError

MAX_SHOWN = 20


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a configuration file must not."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def read_text(path: Path, what: str) -> str:
    """The file's text; ConfigError (naming `what`, e.g. "routing policy") if unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from None


def load_mapping(text: str, source: str, what: str, shape: str) -> dict[Any, Any]:
    """Parse YAML that must be a mapping; `shape` says what it should hold."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {source} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {source} must be a mapping with {shape}")
    return raw


def validation_problems(
    exc: ValidationError, where: Callable[[Sequence[Any]], str] | None = None
) -> list[str]:
    """One line per pydantic error: its path (or `where(loc)`) and message, never the input."""
    return [
        f"{where(err['loc']) if where else '.'.join(map(str, err['loc'])) or '(top)'}: "
        f"{err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors(include_input=False, include_url=False)
    ]


def invalid(what: str, source: str, problems: list[str]) -> ConfigError:
    shown = problems[:MAX_SHOWN]
    more = f"\n  … and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
    return ConfigError(f"{what} {source} is invalid:\n  " + "\n  ".join(shown) + more)
