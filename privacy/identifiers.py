"""Is there a personal identifier in this device-supplied text? One answer for every place
that must keep identifiers out: topic redaction, registry ids and names, device ids and place
codes at admission, free-text fields.

A hostile or careless device writes identifiers in many spellings: an ID number with hyphens
or spaces between its groups, with a lower-case ``x``, glued to other text (``id-<phone>``,
``<ID>x-room``); a mobile number with +86, separators, or a stray extra digit in front. The
check therefore looks for identifier-*shaped* runs *inside* the text, not only for text that
*is* one, and errs on the side of "personal": a false alarm costs a refused id, a miss leaks a
person. Equipment serials stay usable: a 15-digit IMEI is neither an ID number (18) nor a
mobile number (11, or up to 13 with a country code or one stray digit).
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

from privacy.operators import PLATE_PROVINCES


class IdentifierShape(StrEnum):
    ID_NUMBER = "id_number"
    PHONE = "phone"
    PLATE = "plate"
    NAME = "name"  # text outside ASCII: names (张三), addresses, plates without a match


# Digits separated by at most one space, hyphen, dot or underscore form one run (330106-1990…);
# an ID number's check character X may end it.
_DIGIT_RUN = re.compile(r"\+?\d(?:[\s\-._]?\d)*(?:[\s\-._]?[Xx])?")
_SEPARATORS = re.compile(r"[\s\-._+]")
_ID_RUN = re.compile(r"\d{17}[\dXx]")
_MOBILE_RUN = re.compile(r"(?:86|0086)?1[3-9]\d{9}")
_MOBILE_IN_RUN = re.compile(r"1[3-9]\d{9}")
# A province character, a letter and five or six plate characters, separators allowed.
_PLATE_IN = re.compile(
    rf"[{PLATE_PROVINCES}][\s·・•.\-]*[A-HJ-NP-Za-hj-np-z](?:[\s·・•.\-]*[A-HJ-NP-Za-hj-np-z0-9]){{5,6}}"
)
MAX_LOOSE_PHONE_RUN = 14  # 11 digits and a stray digit or three (country code not counted)
MAX_LOOSE_ID_RUN = 19  # 18 and a stray digit


def find_identifier(text: str, *, loose: bool = False) -> IdentifierShape | None:
    """The first kind of identifier found in `text`, or None. Never returns the identifier.

    Strict (the default, for ids and codes a person chose): a digit run that *is* an ID number
    (18) or a mobile number (11, with 86/0086 in front or not). `loose` (for text nobody needs
    to keep whole, such as a dead letter's topic): a run that *holds* one — a mobile inside a
    run of up to 14 digits, an ID number inside up to 19 — so a stray digit does not hide it.
    A 12-digit DL/T 645 or 14-digit CJ/T 188 meter address is an id in strict mode even when
    its digits happen to contain a mobile-shaped run.
    """
    ascii_text = text if text.isascii() else unicodedata.normalize("NFKC", text)
    for match in _DIGIT_RUN.finditer(ascii_text):
        run = _SEPARATORS.sub("", match.group())
        digits = run.rstrip("Xx")  # a mobile number followed by an x is still one
        if loose:
            if match.group().startswith("+86") or run.startswith("0086"):
                digits = digits[2:] if match.group().startswith("+86") else digits[4:]
            if len(run) <= MAX_LOOSE_ID_RUN and _ID_RUN.search(run):
                return IdentifierShape.ID_NUMBER
            if len(digits) <= MAX_LOOSE_PHONE_RUN and _MOBILE_IN_RUN.search(digits):
                return IdentifierShape.PHONE
        elif _ID_RUN.fullmatch(run):
            return IdentifierShape.ID_NUMBER
        elif _MOBILE_RUN.fullmatch(digits):
            return IdentifierShape.PHONE
    if not text.isascii():
        return IdentifierShape.PLATE if _PLATE_IN.search(text) else IdentifierShape.NAME
    return None


def looks_personal(text: str, *, loose: bool = False) -> bool:
    """Whether `text` holds (or may hold) a personal identifier (see `find_identifier`)."""
    return find_identifier(text, loose=loose) is not None


__all__ = ["IdentifierShape", "find_identifier", "looks_personal"]
