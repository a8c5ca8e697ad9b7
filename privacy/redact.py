"""Topics of rejected messages are kept and logged, but a topic is device input too: a hostile
or misconfigured device can put a name, a phone or an ID number into a topic level. Such
levels are replaced before the topic is stored or logged (R3.2: "including malformed input").
"""

from __future__ import annotations

import re

from privacy.operators import is_mobile, is_plate

REDACTED = "<redacted>"
MAX_TOPIC = 256
# The 18-character resident ID shape, valid checksum or not: an invalid one is still an ID.
# (15-digit first-generation IDs are long withdrawn, and IMEIs — wearable ids — have 15 digits.)
_ID_SHAPE = re.compile(r"\d{17}[\dXx]")
_MOBILE_IN = re.compile(r"(?<!\d)(?:\+?86)?1[3-9]\d{9}(?!\d)")


def _personal(level: str) -> bool:
    if not level.isascii():  # names (张三), plates (京A12345) and other free text
        return True
    if _ID_SHAPE.fullmatch(level) or is_mobile(level) or is_plate(level):
        return True
    return _MOBILE_IN.search(level) is not None


def redact_topic(topic: str) -> str:
    """The topic with every level that may be personal data replaced by `<redacted>`."""
    topic = topic[:MAX_TOPIC]
    levels = topic.split("/")
    if not any(_personal(level) for level in levels):
        return topic
    return "/".join(REDACTED if _personal(level) else level for level in levels)
