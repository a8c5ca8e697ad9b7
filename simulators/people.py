"""Fake residents with realistic, format-valid personal data (DOMAIN.md "Personal data formats").

Real access-control payloads carry names, ID numbers, phones, plates and face features; the
gateway's privacy layer is only tested honestly if the simulator sends data that *looks* real
(valid check digits, plausible phone segments) — a masker that only works on ``"xxx"`` proves
nothing. Every value here is invented from a seeded `random.Random`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import date, timedelta
from random import Random

# GB 11643 / ISO 7064 MOD 11-2.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
ID_NUMBER_PATTERN = re.compile(r"\d{17}[\dX]")
PHONE_PATTERN = re.compile(r"1[3-9]\d{9}")

# County-level region codes of big cities (the first six digits of an ID number).
REGION_CODES = (
    "110101", "110105", "110108", "120101", "310104", "310115", "320508", "330106",
    "350203", "370102", "420106", "430104", "440106", "440305", "440524", "500103",
    "510107", "610113",
)  # fmt: skip

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
)
_COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官", "慕容")
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华慧建国平刚桂兰玉萍红霞文辉鹏志宇浩欣怡子涵梓轩"
    "雨晨佳琪博嘉淑珍凤德福荣海林波成宁思雪婷俊毅晓颖"
)
# Mobile number segments in use (all match 1[3-9]\d{9}).
_PHONE_PREFIXES = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
    "155", "156", "157", "158", "159", "166", "176", "177", "180", "181", "186", "187",
    "188", "189", "191", "198", "199",
)  # fmt: skip
PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O
_PLATE_CHARS = PLATE_LETTERS + "0123456789"
_DIGITS = "0123456789"
PLATE_PATTERN = re.compile(
    rf"[{PLATE_PROVINCES}][{PLATE_LETTERS}]"
    rf"(?:[{_PLATE_CHARS}]{{5}}|[DF][{_PLATE_CHARS}]\d{{4}}|\d{{5}}[DF])"
)
FACE_FEATURE_BYTES = 128  # an int8 embedding: ~172 base64 characters


def id_check_digit(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID number."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("need exactly 17 digits")
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def is_valid_id_number(value: str) -> bool:
    """Format, birth date and check digit; a masker must not rely on less."""
    if ID_NUMBER_PATTERN.fullmatch(value) is None:
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return id_check_digit(value[:17]) == value[17]


def fake_id_number(rng: Random, *, birth: date | None = None, male: bool | None = None) -> str:
    region = rng.choice(REGION_CODES)
    if birth is None:
        birth = date(1935, 1, 1) + timedelta(days=rng.randrange(365 * 75))
    if male is None:
        male = rng.random() < 0.5
    seq = rng.randrange(0, 999, 2) + (1 if male else 0)  # odd sequence = male
    first17 = f"{region}{birth:%Y%m%d}{seq:03d}"
    return first17 + id_check_digit(first17)


def fake_name(rng: Random) -> str:
    surname = rng.choice(_COMPOUND_SURNAMES) if rng.random() < 0.02 else rng.choice(_SURNAMES)
    return surname + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2, 2))))


def fake_phone(rng: Random) -> str:
    return rng.choice(_PHONE_PREFIXES) + "".join(rng.choice(_DIGITS) for _ in range(8))


def fake_plate(rng: Random, *, new_energy: bool | None = None) -> str:
    head = rng.choice(PLATE_PROVINCES) + rng.choice(PLATE_LETTERS)
    if new_energy is None:
        new_energy = rng.random() < 0.25
    if not new_energy:
        # Ordinary plates are mostly digits with at most two letters.
        tail = [rng.choice(_DIGITS) for _ in range(5)]
        for pos in rng.sample(range(5), rng.choice((0, 1, 1, 2))):
            tail[pos] = rng.choice(PLATE_LETTERS)
        return head + "".join(tail)
    if rng.random() < 0.8:  # small car: D/F + letter-or-digit + 4 digits
        return (
            head
            + rng.choice("DF")
            + rng.choice(_PLATE_CHARS)
            + "".join(rng.choice(_DIGITS) for _ in range(4))
        )
    return head + "".join(rng.choice(_DIGITS) for _ in range(5)) + rng.choice("DF")  # large


def fake_face_feature(rng: Random, size: int = FACE_FEATURE_BYTES) -> str:
    """A base64 feature vector of the size face terminals really send (biometric data)."""
    return base64.b64encode(rng.randbytes(size)).decode("ascii")


def fake_card_no(rng: Random) -> str:
    return f"{rng.getrandbits(32):08X}"


@dataclass(slots=True, frozen=True)
class Resident:
    """One invented resident as an access-control system knows them."""

    name: str
    id_number: str
    phone: str
    card_no: str
    face_feature: str
    plate: str = ""  # empty: no registered vehicle


def fake_resident(rng: Random, *, car_share: float = 0.4) -> Resident:
    male = rng.random() < 0.5
    return Resident(
        name=fake_name(rng),
        id_number=fake_id_number(rng, male=male),
        phone=fake_phone(rng),
        card_no=fake_card_no(rng),
        face_feature=fake_face_feature(rng),
        plate=fake_plate(rng) if rng.random() < car_share else "",
    )
