"""The de-identification operators of R3.1, each a pure function of one value.

Every operator treats a value that fails its format check (a bad ID check digit, a landline,
a foreign plate) as what it most likely is — an identifier with a typo — and never returns
it raw: it is pseudonymised like a valid one and masked more strictly than a valid one.
Generalisers return None when they cannot derive anything trustworthy (a birth date from an
invalid ID number): nothing is better than a wrong age band.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from enum import StrEnum
from operator import mul
from typing import Any

from devices.location import Location
from privacy.keys import KeyRing


class IdentifierKind(StrEnum):
    """What an identifier is: decides its normalisation and separates pseudonym domains."""

    ID_NUMBER = "id_number"
    PHONE = "phone"
    PLATE = "plate"
    CARD_NO = "card_no"
    PERSON_NAME = "person_name"
    RESIDENT_REF = "resident_ref"
    HOUSEHOLD_REF = "household_ref"  # a registry household id, as an alert's subject


# -- formats (DOMAIN.md "Personal data formats") -------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_ZERO_OFFSET = ord("0") * sum(_ID_WEIGHTS)
_ID_SHAPE = re.compile(r"\d{17}[\dX]", flags=re.ASCII)
_MOBILE = re.compile(r"1[3-9]\d{9}", flags=re.ASCII)
PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O
_PLATE_CHARS = _PLATE_LETTERS + "0123456789"
_PLATE = re.compile(
    rf"[{PLATE_PROVINCES}][{_PLATE_LETTERS}]"
    rf"(?:[{_PLATE_CHARS}]{{5}}|[DF][{_PLATE_CHARS}]\d{{4}}|\d{{5}}[DF])"
)
_SPACES_HYPHENS = re.compile(r"[\s\-]+")
_PLATE_SEPARATORS = re.compile(r"[\s\-·・•.]+")
_NOT_DIGIT = re.compile(r"\D+")
_WHITESPACE = re.compile(r"\s+")

# Two-character (compound) surnames: a masked name keeps the whole surname (欧阳**).
_COMPOUND = (
    "欧阳司马诸葛上官慕容司徒东方皇甫尉迟公孙令狐夏侯长孙宇文轩辕端木独孤南宫"
    "西门澹台呼延赫连申屠万俟闻人拓跋百里东郭太史公冶濮阳钟离宗政单于淳于仲孙"
    "司空羊舌微生梁丘左丘第五"
)
COMPOUND_SURNAMES = frozenset(_COMPOUND[i : i + 2] for i in range(0, len(_COMPOUND), 2))


def normalise(value: str, kind: str) -> str:
    """The canonical spelling of an identifier, so that one person gets one pseudonym
    however a device formats the number (spaces, hyphens, +86, full-width digits …)."""
    text = unicodedata.normalize("NFKC", value).strip()
    if kind == IdentifierKind.ID_NUMBER:
        return _SPACES_HYPHENS.sub("", text).upper()
    if kind == IdentifierKind.PHONE:
        digits = _NOT_DIGIT.sub("", text)
        if not digits:  # not a number at all: still an identifier, keep it distinct
            return _WHITESPACE.sub(" ", text).casefold()
        if len(digits) == 15 and digits.startswith("0086"):
            return digits[4:]
        if len(digits) == 13 and digits.startswith("86"):
            return digits[2:]
        return digits
    if kind == IdentifierKind.PLATE:
        return _PLATE_SEPARATORS.sub("", text).upper()
    if kind == IdentifierKind.CARD_NO:
        return _WHITESPACE.sub("", text).upper()  # card UIDs are hex: case carries nothing
    if kind in (
        IdentifierKind.PERSON_NAME,
        IdentifierKind.RESIDENT_REF,
        IdentifierKind.HOUSEHOLD_REF,
    ):
        return text
    raise ValueError(f"unknown identifier kind {kind!r}")


def id_check_digit(first17: str) -> str:
    """The GB 11643 (ISO 7064 MOD 11-2) check character of the first 17 digits."""
    if len(first17) != 17 or not first17.isdecimal() or not first17.isascii():
        raise ValueError("need exactly 17 digits")
    return _ID_CHECK[_id_sum(first17) % 11]


def _id_sum(first17: str) -> int:
    # Σ dᵢ·Wᵢ over ASCII codes, minus the '0' offset: 4x faster than int() per digit.
    total: int = sum(map(mul, first17.encode("ascii"), _ID_WEIGHTS))
    return total - _ID_ZERO_OFFSET


def is_valid_id_number(value: str) -> bool:
    """Shape, a real birth date and the check digit (after normalisation)."""
    return _birth_date(normalise(value, IdentifierKind.ID_NUMBER)) is not None


def is_mobile(value: str) -> bool:
    """A mainland mobile number, ``1[3-9]`` + 9 digits, with or without +86 and separators."""
    return _MOBILE.fullmatch(normalise(value, IdentifierKind.PHONE)) is not None


def is_plate(value: str) -> bool:
    """A mainland licence plate: 7 characters, or 8 for new-energy vehicles."""
    return _PLATE.fullmatch(normalise(value, IdentifierKind.PLATE)) is not None


def _birth_date(norm_id: str) -> date | None:
    """The birth date of a normalised, fully valid ID number; None if anything is off."""
    if _ID_SHAPE.fullmatch(norm_id) is None:
        return None
    if _ID_CHECK[_id_sum(norm_id[:17]) % 11] != norm_id[17]:
        return None
    try:
        return date(int(norm_id[6:10]), int(norm_id[10:12]), int(norm_id[12:14]))
    except ValueError:
        return None


# -- pseudonymisation ----------------------------------------------------------------------

_DOMAIN = b"gridgate/pseudonym/v1\x00"
TOKEN_LENGTH = 26  # base32 characters: 130 bits of the MAC
PSEUDONYM_PATTERN = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31}):([a-z2-7]{26})", re.ASCII)
_KINDS = frozenset(IdentifierKind)


def pseudonymise(value: str, kind: str, keyring: KeyRing, kid: str | None = None) -> str:
    """``"{kid}:{token}"``: keyed HMAC-SHA-256 of the normalised value, domain-separated by
    `kind`, under key `kid` (the current key by default).

    Stable for one key, unlinkable across keys, and not reversible without the key (and the
    resident registry) — PIPL's 去标识化: still personal data, but not identifying alone.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown identifier kind {kind!r}")
    message = _DOMAIN + kind.encode() + b"\x00" + normalise(value, kind).encode()
    key_id = kid or keyring.current
    mac = keyring.mac(message, key_id)
    return f"{key_id}:{_token(mac)}"


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = tuple(a + b for a in _B32 for b in _B32)  # 10 bits → 2 characters


def _token(mac: bytes) -> str:
    """The first 26 characters of the lower-case RFC 4648 base32 of `mac` (130 bits),
    without base64.b32encode's pure-Python loop: this runs once per identifier."""
    n = int.from_bytes(mac[:17], "big") >> 6
    t = _B32_PAIRS
    return (
        t[n >> 120]
        + t[n >> 110 & 1023]
        + t[n >> 100 & 1023]
        + t[n >> 90 & 1023]
        + t[n >> 80 & 1023]
        + t[n >> 70 & 1023]
        + t[n >> 60 & 1023]
        + t[n >> 50 & 1023]
        + t[n >> 40 & 1023]
        + t[n >> 30 & 1023]
        + t[n >> 20 & 1023]
        + t[n >> 10 & 1023]
        + t[n & 1023]
    )


def pseudonyms(value: str, kind: str, keyring: KeyRing) -> dict[str, str]:
    """The value's pseudonym under every key, current first: to find records made before a
    key rotation (re-identification, consent import)."""
    return {kid: pseudonymise(value, kind, keyring, kid) for kid in keyring.kids}


def matches(pseudonym: str, value: str, kind: str, keyring: KeyRing) -> bool:
    """Whether `pseudonym` (made under any key of the ring) stands for `value`."""
    parsed = PSEUDONYM_PATTERN.fullmatch(pseudonym)
    if parsed is None or parsed.group(1) not in keyring:
        return False
    return pseudonymise(value, kind, keyring, parsed.group(1)) == pseudonym


def key_id_of(pseudonym: str) -> str | None:
    """The key id a pseudonym was made with, or None if it is not a pseudonym."""
    parsed = PSEUDONYM_PATTERN.fullmatch(pseudonym)
    return parsed.group(1) if parsed else None


# -- masks ---------------------------------------------------------------------------------


def _mask_fallback(text: str) -> str:
    """An identifier of unknown shape: everything but the last two characters, and those
    only if the value is long enough that two characters do not give much away."""
    n = len(text)
    return "*" * (n - 2) + text[-2:] if n >= 6 else "*" * n


def mask_phone(value: str) -> str:
    """``138****8000`` for a mobile; anything else keeps only its last two digits."""
    digits = normalise(value, IdentifierKind.PHONE)
    if _MOBILE.fullmatch(digits):
        return f"{digits[:3]}****{digits[-4:]}"
    return _mask_fallback(digits)


def mask_id_number(value: str) -> str:
    """``11**************2X``: province and last two characters only.

    Stricter than the common ``110105********002X`` display mask: region + sequence +
    check digit narrow a community of a few thousand residents to one or two people, while
    province + last two leave dozens. The full birth date is never shown. An invalid number
    keeps only its last two characters.
    """
    norm = normalise(value, IdentifierKind.ID_NUMBER)
    if _birth_date(norm) is not None:
        return f"{norm[:2]}{'*' * 14}{norm[-2:]}"
    return _mask_fallback(norm)


def mask_plate(value: str) -> str:
    """``京A***45``: province, issuing-office letter and last two characters (new-energy
    plates too, which also hides whether the car is electric). Other plates: last two only."""
    norm = normalise(value, IdentifierKind.PLATE)
    if _PLATE.fullmatch(norm):
        return f"{norm[:2]}***{norm[-2:]}"
    return _mask_fallback(norm)


def mask_name(value: str) -> str:
    """``张*``, ``欧阳**``: the surname, one ``*`` per further character; a one-character
    value is masked entirely."""
    name = normalise(value, IdentifierKind.PERSON_NAME)
    n = len(name)
    if n <= 1:
        return "*" * n
    head = 2 if n > 2 and name[:2] in COMPOUND_SURNAMES else 1
    return name[:head] + "*" * (n - head)


def mask_card(value: str) -> str:
    """Last four characters of long (bank-style) numbers, last two of short card UIDs."""
    norm = normalise(value, IdentifierKind.CARD_NO)
    n = len(norm)
    if n >= 12:
        return "*" * (n - 4) + norm[-4:]
    return _mask_fallback(norm)


MASKS = {
    IdentifierKind.PHONE: mask_phone,
    IdentifierKind.ID_NUMBER: mask_id_number,
    IdentifierKind.PLATE: mask_plate,
    IdentifierKind.PERSON_NAME: mask_name,
    IdentifierKind.CARD_NO: mask_card,
}


# -- generalisation ------------------------------------------------------------------------

_NS_PER_S = 1_000_000_000
_NS_PER_DAY = 86_400 * _NS_PER_S
_CST_OFFSET_NS = 8 * 3600 * _NS_PER_S  # China Standard Time: the calendar residents live in
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
AGE_BANDS = (*(f"{lo}-{lo + 9}" for lo in range(0, 80, 10)), "80+")


def event_date(time_ns: int) -> date:
    """The calendar date (China Standard Time) of an instant."""
    return date.fromordinal(_EPOCH_ORDINAL + (time_ns + _CST_OFFSET_NS) // _NS_PER_DAY)


def age_band(id_number: str, on: date) -> str | None:
    """The ten-year age band (``"60-69"``, ``"80+"``) on date `on`, from a valid ID number;
    None if the number is invalid or the birth date lies after `on`."""
    born = _birth_date(normalise(id_number, IdentifierKind.ID_NUMBER))
    if born is None:
        return None
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    if age < 0:
        return None
    return AGE_BANDS[min(age // 10, 8)]


def gender(id_number: str) -> str | None:
    """``"male"`` (odd 17th digit) or ``"female"``, from a valid ID number; else None."""
    norm = normalise(id_number, IdentifierKind.ID_NUMBER)
    if _birth_date(norm) is None:
        return None
    return "male" if int(norm[16]) % 2 else "female"


def coarse_time(time_ns: int, bucket_s: int) -> int:
    """The start of the `bucket_s`-second bucket holding `time_ns` (epoch-aligned)."""
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    return time_ns - time_ns % (bucket_s * _NS_PER_S)


def coarse_location(location: Location) -> Location:
    """The place without the room: building and unit stay (routing needs them), the
    household does not."""
    if not location.room:
        return location
    return Location(location.community, location.grid, location.building, location.unit)


def coarse_position(degrees: float, decimals: int) -> float:
    """A coordinate rounded to `decimals` places (2 ≈ 1 km, 3 ≈ 100 m)."""
    return round(degrees, decimals)


def drop(value: Any) -> None:
    """Suppression: the value is not kept in any form."""
    return None


def keep(value: Any) -> Any:
    """The value as it is: only for fields the policy classes as safe to keep."""
    return value
