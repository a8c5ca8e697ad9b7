"""Topics of rejected messages are kept and logged, but a topic is device input too: a hostile
or misconfigured device can put a name, a phone or an ID number into a topic level — whole
(``13812345678``), glued to other text (``id-13812345678``, ``11010519491231002x-room``),
hyphenated (``330106-19491231-002X``) or behind a stray digit (``913812345678``). Such levels
are replaced before the topic is stored or logged (R3.2: "including malformed input").

Two rules, strictest first:

* a topic of the gateway's own grammar, ``gridgate/v1/{community}/{family}/{device}/{channel}``
  (`devices.topics`), keeps only the levels that fit it: the fixed words where the grammar has
  fixed words, a family or channel that exists, and ids that match `devices.topics.ID_PATTERN`
  and hold no identifier-shaped run; every other level (and any level past the sixth) is
  replaced;
* any other topic (vendor topics, raw concentrator topics) keeps a level only if it is empty or
  id-shaped and holds no identifier-shaped run.

"Holds no identifier-shaped run" is `privacy.identifiers.find_identifier(level, loose=True)`:
the loose check, because nobody needs a dead letter's topic whole. 15-digit IMEIs and 12/14-digit
DL/T 645 / CJ/T 188 meter addresses stay readable — unless their digits happen to hold a
mobile-shaped run (``135000000123`` does): then that level is redacted in the dead-letter topic
and the log line too. That is accepted: a false alarm costs a less readable dead letter (the
device is still found by its payload digest and time), a miss would leak a person.
"""

from __future__ import annotations

from collections.abc import Callable

from devices.families import Channel, Family
from devices.topics import PREFIX, is_valid_id
from privacy.identifiers import find_identifier

REDACTED = "<redacted>"
MAX_TOPIC = 256
CUT = "..."  # ends a topic cut at MAX_TOPIC (always at a level boundary, never inside a level)

_HEAD, _VERSION = PREFIX.split("/")
_FAMILIES = frozenset(f.value for f in Family)
_CHANNELS = frozenset(c.value for c in Channel)


def _safe_id(level: str) -> bool:
    return is_valid_id(level) and find_identifier(level, loose=True) is None


# The gateway's own grammar, level by level: gridgate/v1/{community}/{family}/{device}/{channel}.
_GRAMMAR: tuple[Callable[[str], bool], ...] = (
    _HEAD.__eq__,
    _VERSION.__eq__,
    _safe_id,
    _FAMILIES.__contains__,
    _safe_id,
    _CHANNELS.__contains__,
)


def _safe_level(level: str) -> bool:
    """A level of any other topic: empty (``a//b``) or an id holding no identifier."""
    return not level or _safe_id(level)


def redact_topic(topic: str) -> str:
    """The topic with every level that may be personal data replaced by `<redacted>`, cut to
    `MAX_TOPIC` characters at a level boundary."""
    # Enough levels to fill MAX_TOPIC even if all are empty; the rest stays one (redacted) level.
    levels = topic.split("/", MAX_TOPIC + 1)
    if levels[0] == _HEAD and len(levels) > 1 and levels[1] == _VERSION:
        last = len(_GRAMMAR)
        kept = [
            level if i < last and _GRAMMAR[i](level) else REDACTED for i, level in enumerate(levels)
        ]
    else:
        kept = [level if _safe_level(level) else REDACTED for level in levels]
    out = "/".join(kept)
    if len(out) <= MAX_TOPIC:
        return out
    # Cut between levels: half a kept level could look like an identifier on its own (the
    # first 11 digits of an IMEI can be mobile-shaped), so never cut inside one.
    size = 0
    parts: list[str] = []
    for level in kept:
        size += len(level) + 1
        if size + len(CUT) > MAX_TOPIC:
            break
        parts.append(level)
    parts.append(CUT)
    return "/".join(parts)
