"""The one error tree of gridgate.

    GridgateError
    ├── RejectedInput      bad device input: carries a short machine `reason` code and a detail
    │                      that never contains payload bytes (it may hold personal data)
    ├── ConfigError        a settings/policy/rules file is wrong: refuse to start
    └── StorageError       InfluxDB or the spool failed; `retryable` says whether to try again

Libraries' exceptions are converted at the edge:
``raise StorageError(..., retryable=True) from exc``.
"""

from __future__ import annotations


class GridgateError(Exception):
    """Base of every error gridgate raises on purpose."""


class RejectedInput(GridgateError):
    """A device message that cannot be turned into readings.

    `reason` is a stable code used for counting and dead-lettering (``not_json``,
    ``missing_field`` …); `detail` is a human sentence that names fields, never values.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ConfigError(GridgateError):
    """A configuration file or setting is invalid; the gateway refuses to start."""


class StorageError(GridgateError):
    """Writing to or reading from storage failed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
