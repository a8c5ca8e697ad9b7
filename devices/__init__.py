"""The domain vocabulary of gridgate: pure, no I/O (stdlib + pydantic)."""

from devices.errors import ConfigError, GridgateError, RejectedInput, StorageError
from devices.families import Channel, Family
from devices.info import DeviceInfo
from devices.location import Location
from devices.reading import Reading, Value

__all__ = [
    "Channel",
    "ConfigError",
    "DeviceInfo",
    "Family",
    "GridgateError",
    "Location",
    "Reading",
    "RejectedInput",
    "StorageError",
    "Value",
]
