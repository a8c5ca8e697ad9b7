"""`gridgate run` with the de-identifier replaced by identity — for `bench.ingest` only, to
measure what privacy costs. Production has no switch to turn privacy off; this module patches
it in its own process, against a throwaway benchmark database of fake data.
"""

from __future__ import annotations

import sys

from devices.info import DeviceInfo
from devices.reading import Reading
from gateway import cli, runtime


class NoPrivacy:
    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def apply(self, reading: Reading, device: DeviceInfo | None = None) -> Reading:
        return reading


if __name__ == "__main__":
    setattr(runtime, "Deidentifier", NoPrivacy)  # noqa: B010  (patching on purpose)
    sys.exit(cli.main(["run", "--no-progress"]))
