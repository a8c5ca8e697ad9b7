"""Byte-level helpers shared by the binary meter protocols (DL/T 645-2007, CJ/T 188).

Both protocols frame alike — optional ``FE`` wake-up bytes, ``68``, a fixed header ending in
the length byte L, L data bytes, a mod-256 checksum from the first ``68`` through the data,
then ``16`` — and both reach the gateway through concentrators that forward raw bytes or hex
text, sometimes several frames per message. Everything here raises only `RejectedInput`
on device input (encoders raise `ValueError` on caller mistakes), and never puts payload
bytes in a detail: a meter address identifies a household.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.base import check_size
from devices.errors import RejectedInput
from devices.location import Location
from devices.topics import is_valid_id

START = 0x68
END = 0x16
WAKE = 0xFE
RAW_PREFIX = "gridgate/raw"

_HEX_AND_SPACE = b"0123456789abcdefABCDEF \t\r\n\v\f"
_SPACE = b" \t\r\n\v\f"


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """Where a protocol's header puts things, counted from the first ``68``."""

    protocol: str
    header_len: int  # bytes from the first 68 through L
    second_start: int | None = None  # DL/T 645 repeats 68 after the address

    @property
    def length_at(self) -> int:
        return self.header_len - 1

    @property
    def min_len(self) -> int:
        return self.header_len + 2


def payload_bytes(payload: bytes) -> bytes:
    """Binary frames as they are; hex text ("68 12 90…", any case and spacing) as its bytes.

    Text is recognised by holding nothing but hex digits and whitespace: a binary frame
    always holds 0x68 ('h'), so the two cannot be confused.
    """
    check_size(payload)
    if payload.translate(None, _HEX_AND_SPACE):
        return payload
    digits = payload.translate(None, _SPACE)
    if len(digits) % 2:
        raise RejectedInput("bad_hex", "hex text has an odd number of digits")
    return bytes.fromhex(digits.decode("ascii"))


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def split_frames(data: bytes, spec: FrameSpec) -> list[bytes]:
    """Every frame in `data` (``68`` through ``16``), in order, or the reason there is none.

    One bad frame rejects the whole payload: a concentrator batch is one message, and the
    dead-letter store keeps it whole for whoever investigates.
    """
    frames: list[bytes] = []
    i = 0
    n = len(data)
    while True:
        while i < n and data[i] == WAKE:
            i += 1
        if i >= n:
            break
        if data[i] != START:
            if frames:
                raise RejectedInput("garbage", f"bytes after frame {len(frames)} are not a frame")
            raise RejectedInput("no_frame", f"payload does not start with a {spec.protocol} frame")
        end = _frame_end(data, i, spec)
        frames.append(data[i:end])
        i = end
    if not frames:
        raise RejectedInput("no_frame", f"payload holds no {spec.protocol} frame")
    return frames


def _frame_end(data: bytes, s: int, spec: FrameSpec) -> int:
    """The index after the frame starting at `s`, or the most specific reason it is broken."""
    n = len(data)
    second = spec.second_start
    if second is not None and s + second < n and data[s + second] != START:
        raise RejectedInput("no_frame", f"{spec.protocol} header lacks its second 68")
    if n - s < spec.header_len:
        raise RejectedInput("truncated", f"{spec.protocol} frame ends inside its header")
    length = data[s + spec.length_at]
    end = s + spec.header_len + length + 2
    if end <= n and data[end - 1] == END and checksum(data[s : end - 2]) == data[end - 2]:
        return end
    if _consistent_length(data, s, spec, length):
        raise RejectedInput("bad_length", "L disagrees with where the frame ends")
    if end - 1 > n:
        raise RejectedInput("truncated", f"{spec.protocol} frame is shorter than L says")
    if checksum(data[s : end - 2]) != data[end - 2]:
        raise RejectedInput("bad_checksum", f"{spec.protocol} frame checksum does not match")
    raise RejectedInput("bad_frame_end", f"{spec.protocol} frame does not end with 16")


def _consistent_length(data: bytes, s: int, spec: FrameSpec, length: int) -> bool:
    """Whether another L would make a checksum-valid frame ending in 16 here.

    That tells a corrupted L (the frame is intact, its length byte is not) apart from a
    truncated or garbled frame, which no other length explains.
    """
    n = len(data)
    first_cs = s + spec.header_len  # where CS sits when L = 0
    total = checksum(data[s:first_cs]) - length  # header sum without the L byte
    last_cs = min(n - 2, first_cs + 255)
    for cs_at in range(first_cs, last_cs + 1):
        other = cs_at - first_cs
        if other != length and data[cs_at + 1] == END and (total + other) & 0xFF == data[cs_at]:
            return True
        total += data[cs_at]
    return False


def bcd_digits(raw: bytes) -> str:
    """BCD bytes sent low byte first, as the decimal digit string printed on the meter."""
    digits = raw[::-1].hex()
    if not digits.isdigit():
        raise RejectedInput("bad_bcd", "a BCD field holds a nibble above 9")
    return digits


def bcd_int(raw: bytes) -> int:
    return int(bcd_digits(raw))


def to_bcd(value: int, width: int) -> bytes:
    """`value` as `width` BCD bytes, low byte first (encoders: ValueError when it cannot fit)."""
    if not 0 <= value < 10 ** (2 * width):
        raise ValueError(f"{value} does not fit in {width} BCD bytes")
    return bytes.fromhex(f"{value:0{2 * width}d}")[::-1]


def address_bytes(address: str, width: int) -> bytes:
    """A printed address (hex digits allowed, for wildcards like AA…) on the wire, A0 first."""
    if len(address) != 2 * width:
        raise ValueError(f"address must be {2 * width} digits")
    try:
        return bytes.fromhex(address)[::-1]
    except ValueError:
        raise ValueError("address must be hex digits") from None


def finish(body: bytes, wake: int) -> bytes:
    """Add checksum, ``16`` and `wake` ``FE`` bytes to a frame body that starts with 68."""
    if not 0 <= wake <= 16:
        raise ValueError("wake must be 0..16 FE bytes")
    return bytes([WAKE] * wake) + body + bytes([checksum(body), END])


def bcd_fields(raw: bytes) -> tuple[int, ...]:
    """BCD fields sent low byte first (ss mm hh DD MM YY YY …) as ints, high field first."""
    digits = bcd_digits(raw)
    return tuple(int(digits[i : i + 2]) for i in range(0, len(digits), 2))


# --- topics -------------------------------------------------------------------------------

_CACHE_LIMIT = 100_000
_communities: dict[tuple[str, str], str] = {}
_locations: dict[str, Location] = {}


def raw_topic(community: str, protocol: str, concentrator_id: str) -> str:
    if not (is_valid_id(community) and is_valid_id(concentrator_id)):
        raise ValueError("community and concentrator ids must match devices.topics.ID_PATTERN")
    return f"{RAW_PREFIX}/{community}/{protocol}/{concentrator_id}"


def raw_subscription(protocol: str, community: str = "+") -> str:
    return f"{RAW_PREFIX}/{community}/{protocol}/+"


def community_of(topic: str, protocol: str) -> str:
    """The community of a ``gridgate/raw/{community}/{protocol}/{concentrator}`` topic."""
    key = (protocol, topic)
    community = _communities.get(key)
    if community is not None:
        return community
    parts = topic.split("/")
    if (
        len(parts) != 5
        or f"{parts[0]}/{parts[1]}" != RAW_PREFIX
        or parts[3] != protocol
        or not is_valid_id(parts[2])
        or not is_valid_id(parts[4])
    ):
        raise RejectedInput("bad_topic", f"expected {RAW_PREFIX}/community/{protocol}/concentrator")
    community = parts[2]
    if len(_communities) >= _CACHE_LIMIT:
        _communities.clear()
    _communities[key] = community
    return community


def location(community: str) -> Location:
    """The community-only place of a forwarded frame; the registry fills in the rest."""
    loc = _locations.get(community)
    if loc is None:
        if len(_locations) >= _CACHE_LIMIT:
            _locations.clear()
        loc = _locations[community] = Location(community)
    return loc
