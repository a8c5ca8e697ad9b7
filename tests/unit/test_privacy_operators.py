from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import date
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.location import Location
from privacy import operators as ops
from privacy.keys import KeyRing
from simulators import people

KEY1 = bytes.fromhex("8f2b6c1d0e4a9f3b7c5d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b")
KEY2 = bytes.fromhex("1d3c5b7a9f8e6d4c2b0a1f3e5d7c9b8a6f4e2d0c1b3a5f7e9d8c6b4a2f0e1d3c")
RING = KeyRing([("k1", KEY1)])
RING2 = KeyRing([("k2", KEY2), ("k1", KEY1)])
PSEUDONYM = re.compile(r"k[12]:[a-z2-7]{26}")

VALID_IDS = ["11010519491231002X", "440524188001010014"]
INVALID_IDS = [
    "110105194912310021",  # wrong check digit
    "11010519491231002",  # 17 characters
    "1101051949123100211",  # 19 characters
    "110105194913310028",  # month 13
    "11010519490230002X",  # 30 February (check digit irrelevant)
    "ABCDEFGHIJKLMNOPQR",
    "",
]


def digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


# -- validators ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*VALID_IDS, "110105 19491231 002x", "11010519491231002x"])
def test_valid_id_numbers(value: str) -> None:
    assert ops.is_valid_id_number(value)


@pytest.mark.parametrize("value", INVALID_IDS)
def test_invalid_id_numbers(value: str) -> None:
    assert not ops.is_valid_id_number(value)


def test_check_digit_matches_the_domain_formula() -> None:
    assert ops.id_check_digit("11010519491231002") == "X"
    assert ops.id_check_digit("44052418800101001") == "4"
    with pytest.raises(ValueError):
        ops.id_check_digit("1234")
    with pytest.raises(ValueError):
        ops.id_check_digit("１１０１０５１９４９１２３１００２")  # full-width digits


@pytest.mark.parametrize(
    "value, ok",
    [
        ("13800138000", True),
        ("+86 138-0013-8000", True),
        ("0086 13800138000", True),
        ("8613800138000", True),
        ("12800138000", False),  # 12x is not a mobile segment
        ("1380013800", False),
        ("010-12345678", False),
        ("", False),
    ],
)
def test_mobile(value: str, ok: bool) -> None:
    assert ops.is_mobile(value) is ok


@pytest.mark.parametrize(
    "value, ok",
    [
        ("京A12345", True),
        ("京A·12345", True),
        ("粤B D12345", True),  # new energy, small car: D + 5
        ("沪AD12345", True),
        ("沪A12345D", True),  # new energy, large vehicle
        ("京a12345", True),  # upper-cased
        ("京I12345", False),  # no I
        ("京O12345", False),  # no O
        ("XX12345", False),
        ("京A1234", False),
        ("京AD123", False),
    ],
)
def test_plate(value: str, ok: bool) -> None:
    assert ops.is_plate(value) is ok


# -- normalisation and pseudonyms ----------------------------------------------------------


@pytest.mark.parametrize(
    "kind, spellings",
    [
        ("id_number", ["11010519491231002X", "110105-19491231-002x", " 110105 19491231 002X "]),
        ("id_number", ["１１０１０５１９４９１２３１００２Ｘ", "11010519491231002X"]),  # full width
        ("phone", ["13800138000", "+86 138 0013 8000", "0086-138-0013-8000", "(138)00138000"]),
        ("plate", ["京A12345", "京A·12345", "京a 12345", "京A-12345"]),
        ("card_no", ["9F3A21C0", "9f3a 21c0"]),
        ("person_name", ["张三", " 张三 "]),
    ],
)
def test_one_person_one_pseudonym_however_spelled(kind: str, spellings: list[str]) -> None:
    results = {ops.pseudonymise(s, kind, RING) for s in spellings}
    assert len(results) == 1
    (pseudonym,) = results
    assert PSEUDONYM.fullmatch(pseudonym)


def test_pseudonym_matches_its_definition() -> None:
    """HMAC-SHA-256 over the domain-separated normalised value, base32, 26 chars."""
    message = b"gridgate/pseudonym/v1\x00id_number\x0011010519491231002X"
    mac = hmac.new(KEY1, message, hashlib.sha256).digest()
    token = base64.b32encode(mac).decode().lower().rstrip("=")[:26]
    assert ops.pseudonymise("11010519491231002x", "id_number", RING) == f"k1:{token}"


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=40))
def test_token_is_rfc4648_base32(value: bytes) -> None:
    mac = hashlib.sha256(value).digest()
    assert ops._token(mac) == base64.b32encode(mac).decode().lower()[:26]


def test_pseudonyms_are_stable_and_domain_separated() -> None:
    same_digits = "11010519491231002X"
    by_kind = {kind: ops.pseudonymise(same_digits, kind, RING) for kind in ops.IdentifierKind}
    assert len(set(by_kind.values())) == len(by_kind)
    assert ops.pseudonymise(same_digits, "id_number", RING) == by_kind[ops.IdentifierKind.ID_NUMBER]
    assert ops.pseudonymise("13800138000", "phone", RING) != ops.pseudonymise(
        "13800138001", "phone", RING
    )


def test_pseudonyms_under_different_keys_are_unrelated() -> None:
    p1 = ops.pseudonymise("11010519491231002X", "id_number", RING2, "k1")
    p2 = ops.pseudonymise("11010519491231002X", "id_number", RING2)
    assert p2.startswith("k2:") and p1.startswith("k1:")
    assert p1.split(":")[1] != p2.split(":")[1]
    # an independent ring with the same key id gives another pseudonym
    other = KeyRing([("k1", KEY2)])
    assert ops.pseudonymise("11010519491231002X", "id_number", other) != p1
    assert ops.pseudonyms("11010519491231002X", "id_number", RING2) == {"k2": p2, "k1": p1}
    assert ops.matches(p1, "110105 19491231 002x", "id_number", RING2)
    assert not ops.matches(p1, "440524188001010014", "id_number", RING2)
    assert not ops.matches("k9:" + "a" * 26, "11010519491231002X", "id_number", RING2)
    assert not ops.matches("not a pseudonym", "11010519491231002X", "id_number", RING2)
    assert ops.key_id_of(p1) == "k1" and ops.key_id_of("11010519491231002X") is None


@pytest.mark.parametrize("value", INVALID_IDS[:-1])
def test_invalid_id_numbers_are_pseudonymised_never_kept(value: str) -> None:
    pseudonym = ops.pseudonymise(value, "id_number", RING)
    assert PSEUDONYM.fullmatch(pseudonym)
    assert value not in pseudonym
    assert pseudonym != ops.pseudonymise(VALID_IDS[0], "id_number", RING)


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown identifier kind"):
        ops.pseudonymise("x", "email", RING)
    with pytest.raises(ValueError, match="unknown identifier kind"):
        ops.normalise("x", "email")


def test_garbage_phones_stay_distinct() -> None:
    assert ops.pseudonymise("unknown", "phone", RING) != ops.pseudonymise("n/a", "phone", RING)


# -- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, masked",
    [
        ("13800138000", "138****8000"),
        ("+86 138 0013 8000", "138****8000"),
        ("010-12345678", "*********78"),  # a landline: last two digits only
        ("12800138000", "*********00"),  # not a mobile segment
        ("12345", "*****"),  # too short to show anything
        ("", ""),
        ("unknown", "*****wn"),
    ],
)
def test_mask_phone(value: str, masked: str) -> None:
    assert ops.mask_phone(value) == masked


@pytest.mark.parametrize(
    "value, masked",
    [
        ("11010519491231002X", "11**************2X"),
        ("440524188001010014", "44**************14"),
        ("110105-19491231-002x", "11**************2X"),
        ("110105194912310021", "****************21"),  # bad check digit
        ("11010519491231002", "***************02"),  # too short
        ("12345", "*****"),
    ],
)
def test_mask_id_number(value: str, masked: str) -> None:
    assert ops.mask_id_number(value) == masked
    assert len(masked) == len(ops.normalise(value, "id_number"))


@pytest.mark.parametrize(
    "value, masked",
    [
        ("京A12345", "京A***45"),
        ("京A·12345", "京A***45"),
        ("沪AD12345", "沪A***45"),  # new energy: same shape, hides that it is electric
        ("沪A12345D", "沪A***5D"),
        ("京I12345", "*****45"),  # not a plate: last two only
        ("AB", "**"),
    ],
)
def test_mask_plate(value: str, masked: str) -> None:
    assert ops.mask_plate(value) == masked


@pytest.mark.parametrize(
    "value, masked",
    [
        ("张三", "张*"),
        ("王小明", "王**"),
        ("欧阳娜娜", "欧阳**"),
        ("司马光", "司马*"),
        ("欧阳", "欧*"),  # a compound surname alone: still masked
        ("张", "*"),
        ("", ""),
        ("John Smith", "J*********"),
    ],
)
def test_mask_name(value: str, masked: str) -> None:
    assert ops.mask_name(value) == masked


@pytest.mark.parametrize(
    "value, masked",
    [
        ("9F3A21C0", "******C0"),
        ("6222 0212 3456 7890", "************7890"),
        ("1234", "****"),
    ],
)
def test_mask_card(value: str, masked: str) -> None:
    assert ops.mask_card(value) == masked


# -- generalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "id_number, on, band",
    [
        ("11010519491231002X", date(2024, 5, 20), "70-79"),
        ("11010519491231002X", date(2019, 12, 30), "60-69"),  # the day before the birthday
        ("11010519491231002X", date(2019, 12, 31), "70-79"),
        ("440524188001010014", date(2024, 5, 20), "80+"),
        ("11010519491231002X", date(1949, 12, 31), "0-9"),
        ("11010519491231002X", date(1949, 12, 30), None),  # born after `on`
        ("110105194912310021", date(2024, 5, 20), None),  # bad check digit: no band
        ("garbage", date(2024, 5, 20), None),
    ],
)
def test_age_band(id_number: str, on: date, band: str | None) -> None:
    assert ops.age_band(id_number, on) == band


def test_age_bands_cover_every_age() -> None:
    rng = Random(3)
    for age in range(0, 110):
        born = date(2024 - age, 1, 1)
        band = ops.age_band(people.fake_id_number(rng, birth=born), date(2024, 6, 1))
        assert band == (f"{age // 10 * 10}-{age // 10 * 10 + 9}" if age < 80 else "80+")


def test_gender() -> None:
    assert ops.gender("11010519491231002X") == "female"  # 17th digit 2
    assert ops.gender("440524188001010014") == "male"  # 17th digit 1
    assert ops.gender("110105194912310021") is None
    rng = Random(5)
    assert ops.gender(people.fake_id_number(rng, male=True)) == "male"
    assert ops.gender(people.fake_id_number(rng, male=False)) == "female"


def test_coarse_time() -> None:
    t = 1_716_165_015_123_456_789
    assert ops.coarse_time(t, 900) == 1_716_165_000_000_000_000
    assert ops.coarse_time(t, 1) == 1_716_165_015_000_000_000
    assert ops.coarse_time(1_716_165_000_000_000_000, 900) == 1_716_165_000_000_000_000
    with pytest.raises(ValueError):
        ops.coarse_time(t, 0)


def test_event_date_is_china_standard_time() -> None:
    # 2024-05-19 16:00 UTC = 2024-05-20 00:00 UTC+8
    assert ops.event_date(1_716_134_400_000_000_000) == date(2024, 5, 20)
    assert ops.event_date(1_716_134_399_000_000_000) == date(2024, 5, 19)


def test_coarse_location_and_position() -> None:
    loc = Location("c1", "g1", "b3", "u2", "302")
    assert ops.coarse_location(loc) == Location("c1", "g1", "b3", "u2", "")
    bare = Location("c1", "g1")
    assert ops.coarse_location(bare) is bare
    assert ops.coarse_position(31.230416, 2) == 31.23
    assert ops.coarse_position(121.473701, 3) == 121.474


def test_drop_and_keep() -> None:
    ops.drop("张三")  # returns nothing: mypy knows, and so does the de-identifier
    assert ops.keep(42) == 42


# -- fake residents: every format-valid value, and broken ones ------------------------------


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=2**32))
def test_fake_residents_are_recognised_and_never_survive_a_mask(seed: int) -> None:
    r = people.fake_resident(Random(seed), car_share=1.0)
    assert ops.is_valid_id_number(r.id_number)
    assert ops.is_mobile(r.phone)
    assert ops.is_plate(r.plate)
    broken_id = r.id_number[:17] + ("0" if r.id_number[17] != "0" else "1")
    assert not ops.is_valid_id_number(broken_id)
    cases = [
        (r.id_number, ops.mask_id_number(r.id_number)),
        (broken_id, ops.mask_id_number(broken_id)),
        (r.phone, ops.mask_phone(r.phone)),
        (r.phone[:-1], ops.mask_phone(r.phone[:-1])),
        (r.plate, ops.mask_plate(r.plate)),
        (r.name, ops.mask_name(r.name)),
        (r.card_no, ops.mask_card(r.card_no)),
    ]
    for raw, masked in cases:
        assert raw not in masked
        if len(digits(raw)) >= 5:
            assert digits(raw) not in digits(masked)
    for kind, raw in [("id_number", r.id_number), ("id_number", broken_id), ("phone", r.phone),
                      ("plate", r.plate), ("person_name", r.name), ("card_no", r.card_no)]:  # fmt: skip
        pseudonym = ops.pseudonymise(raw, kind, RING)
        assert raw not in pseudonym and PSEUDONYM.fullmatch(pseudonym)
    band = ops.age_band(r.id_number, date(2024, 6, 1))
    assert band in ops.AGE_BANDS
