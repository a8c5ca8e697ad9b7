"""Which ids, codes and names the registry takes, and what it shows (R1.2, R3.2; issue 9).

Everything the registry holds ends up somewhere a person did not ask for it: a device id
becomes the InfluxDB ``device`` tag and an MQTT topic level, a place's name is printed by
``gridgate registry show``, ids are named in import problems and audit records. So a value
a property firm hands over is refused when it holds a personal identifier, whatever the
field. The shapes come from the one shared detector, `privacy.identifiers.find_identifier`
(strict mode: a run that *is* an ID number or a mobile number, with any separators):

* **ids and codes** (devices, adapters, community/grid/building/unit/room codes, households,
  residents, members): topic-safe (`devices.topics.ID_PATTERN`, hence ASCII) and no ID-number
  or mobile-number run. 12-digit DL/T 645 and 14-digit CJ/T 188 meter addresses and 15-digit
  IMEIs stay valid.
* **place names** (community, grid, building, unit, room) and the community's street: Chinese
  text is the point (``3号楼``, ``2单元``, ``第一网格``), so non-ASCII is allowed; refused are
  an ID number, a mobile number (digits inside the Chinese text count: ``3号楼13812345678``)
  or a plate, and a name shaped like a person's: 2–4 Chinese characters beginning with a
  common surname (or a compound one such as 欧阳) with no place word (楼 栋 单元 号 区 网格
  社区 门 室 户 园 苑 …) in it — ``张三`` and ``李家`` are refused, ``王家庄`` and ``3号楼``
  are not. The heuristic errs on the side of "personal": a place named like a person
  (``黄金海岸``) needs a place word (``黄金海岸小区``).
* **free text that names people or firms by design** — a grid member's name (the staff
  directory alerts are routed through) and a device's vendor: any words, but no ID number,
  mobile number or plate.

What the registry *shows* follows the same rules (`shown_id`, `shown_key`, `shown_place_name`,
`shown_text`): a database written before these checks may hold such a value, and it is printed
as ``<redacted>``. Problems never echo a refused value; `shown_field_name` decides whether a
key a file used (``colour``) may be named in a problem.
"""

from __future__ import annotations

import re
import unicodedata

from devices.topics import is_valid_id
from privacy.identifiers import IdentifierShape, find_identifier
from privacy.operators import COMPOUND_SURNAMES

REDACTED = "<redacted>"
ID_RULE = "use 1-64 of A-Z a-z 0-9 _ . : - (starting with a letter or digit)"

_SHAPE_WORDS = {
    IdentifierShape.ID_NUMBER: "a resident ID number",
    IdentifierShape.PHONE: "a mobile phone number",
    IdentifierShape.PLATE: "a vehicle plate",
    IdentifierShape.NAME: "a name",
}
# The ~100 most common surnames (together about 85% of people), and the compound ones.
SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩邓冯曹彭曾肖田董潘袁蔡蒋余于杜叶"
    "程魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付傅方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺"
    "毛郝顾龚邵万覃武钱戴严欧莫孔向常汤"
)
# Characters and words that make a short Chinese text a place, not a person.
PLACE_WORDS = (
    "楼", "栋", "幢", "座", "层", "单元", "号", "室", "户", "门", "区", "网格", "社区", "小区",
    "园", "苑", "庭", "府", "城", "村", "庄", "镇", "乡", "街", "道", "路", "巷", "弄", "胡同",
    "湾", "院", "坊", "里", "居", "公寓", "大厦", "广场", "中心", "期", "组", "片", "站",
    "库", "厅", "馆", "所", "场", "河", "湖", "桥", "塘", "坡", "岭", "沟", "港", "岛", "滩",
    "寨", "营", "堡", "屯", "店", "厂",
)  # fmt: skip
_CJK_NAME = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]{2,4}")
_NAME_PUNCTUATION = re.compile(r"[\s·•・.]+")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def identifier_in_text(text: str) -> IdentifierShape | None:
    """An ID number, mobile number or plate in free text that may be Chinese (Chinese text
    alone is not one: place names are Chinese)."""
    shape = find_identifier(text)
    return None if shape is IdentifierShape.NAME else shape


def looks_like_person_name(text: str) -> bool:
    """2–4 Chinese characters starting with a common surname and holding no place word."""
    compact = _NAME_PUNCTUATION.sub("", unicodedata.normalize("NFKC", text))
    if _CJK_NAME.fullmatch(compact) is None:
        return False
    if compact[0] not in SURNAMES and compact[:2] not in COMPOUND_SURNAMES:
        return False
    return not any(word in compact for word in PLACE_WORDS)


# -- why a value is refused (never the value itself) ---------------------------------------


def id_problem(value: str) -> str | None:
    """Why `value` may not be an id or code, or None."""
    if not is_valid_id(value):
        return ID_RULE
    shape = find_identifier(value)
    if shape is not None:
        return f"looks like {_SHAPE_WORDS[shape]}; ids and codes must not hold personal data"
    return None


def place_name_problem(value: str) -> str | None:
    """Why `value` may not be a place's display name (or a street), or None."""
    shape = identifier_in_text(value)
    if shape is not None:
        return f"holds {_SHAPE_WORDS[shape]}; names must not hold personal data"
    if looks_like_person_name(value):
        return "looks like a person's name; a place is named by what it is (e.g. 3号楼, 2单元)"
    return None


def text_problem(value: str) -> str | None:
    """Why `value` may not be a member's name or a vendor, or None."""
    shape = identifier_in_text(value)
    if shape is not None:
        return f"holds {_SHAPE_WORDS[shape]}; names must not hold personal data"
    return None


# -- what may be shown ----------------------------------------------------------------------


def shown_id(value: str) -> str:
    """`value` if it is an acceptable id or code, else ``<redacted>``."""
    return value if id_problem(value) is None else REDACTED


def shown_key(key: str) -> str:
    """A place key (``xf/g01/b03``) with every unacceptable code redacted."""
    return "/".join(shown_id(code) for code in key.split("/"))


def shown_place_name(value: str) -> str:
    return value if place_name_problem(value) is None else REDACTED


def shown_text(value: str) -> str:
    return value if text_problem(value) is None else REDACTED


def shown_field_name(name: object) -> str | None:
    """``'colour'`` for a key or column name a problem may quote; None when it is not a plain
    field name or may hold an identifier (checked loosely: nothing needs it whole)."""
    if not isinstance(name, str) or _FIELD_NAME.fullmatch(name) is None:
        return None
    if find_identifier(name) is not None or find_identifier(name, loose=True) is not None:
        return None
    return repr(name)


__all__ = [
    "ID_RULE",
    "PLACE_WORDS",
    "REDACTED",
    "SURNAMES",
    "id_problem",
    "identifier_in_text",
    "looks_like_person_name",
    "place_name_problem",
    "shown_field_name",
    "shown_id",
    "shown_key",
    "shown_place_name",
    "shown_text",
    "text_problem",
]
