"""InfluxDB line protocol encoding: pure, no I/O, on the per-reading hot path.

Escaping follows the 1.x spec and was checked against influxd 1.6.7:

* measurement: ``,`` and space are escaped;
* tag keys, tag values, field keys: ``,``, ``=`` and space are escaped;
* string field values: double-quoted, ``"`` and ``\\`` escaped.

Line protocol has no way to escape a backslash outside string values, and influxd's line
splitter skips ``\\x`` pairs while its tag parser only looks one byte back. A name (measurement,
tag key or value, field key) is therefore refused with ``ValueError`` when influxd would store
something else or could mis-split the batch:

* it contains a newline or carriage return (nothing can escape them, see below), or NUL
  (stored, but InfluxQL cannot name it in a query);
* it ends with a backslash (influxd rejects the line);
* a backslash stands right before a character that gets escaped there (influxd may swallow the
  following lines of the batch: a tag key ``k\\ x`` with a value ``"`` ate the next two lines),
  or before one influxd unescapes anyway (it stores measurement ``a\\=b`` as ``a=b``, and
  measurement or field key ``a\\"b`` as ``a"b``);
* a measurement starts with ``#`` (a comment: influxd drops the line and answers 204) or a
  measurement or field key starts with a tab (silently stripped);
* a tag or field key is ``time`` (influxd drops the point).

Newline policy: an encoded line never contains ``\\n`` or ``\\r``, so one line is one point
everywhere (the HTTP body, the disk spool, any line-oriented tool). influxd 1.6.7 stores ``\\n``
in a tag as the two characters backslash and ``n`` (no unescaping), so escaping would be lossy
and ambiguous; it accepts a raw newline inside a quoted string field, but the spec says newlines
are not supported in tag or field values and a raw one would break line-oriented storage. So any
``\\n`` or ``\\r`` — in names and in string values alike — is a ``ValueError``: the data is never
changed silently, and callers that want to keep such text must normalise it first.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CACHE_MAX",
    "MAX_TIME_NS",
    "MIN_TIME_NS",
    "encode_line",
    "escape_field_key",
    "escape_key",
    "escape_measurement",
    "escape_tag_key",
    "format_field_value",
]

#: Bound of each escape cache; a full cache is simply emptied (cheap, and hot names come back).
CACHE_MAX = 65_536

#: influxd's accepted timestamp range (1.6.7 answers "time outside range" beyond it).
MIN_TIME_NS = -9_223_372_036_854_775_806
MAX_TIME_NS = 9_223_372_036_854_775_806

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Characters a backslash must not precede, per position: those we escape, plus those influxd
# unescapes although the spec does not ask to escape them (`=` and `"` in measurements, `"` in
# field keys; 1.6.7 stores measurement `a\=b` as `a=b`).
_MEASUREMENT_AFTER_BACKSLASH = ',= "'
_KEY_AFTER_BACKSLASH = ",= "
_FIELD_KEY_AFTER_BACKSLASH = ',= "'

_MEASUREMENT_TABLE = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_TABLE = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_TABLE = str.maketrans({'"': '\\"', "\\": "\\\\"})


def _check_name(s: str, what: str, special: str) -> None:
    """Refuse names influxd would store differently or that could break line splitting."""
    if "\n" in s or "\r" in s:
        raise ValueError(f"{what} contains a newline, which line protocol cannot carry")
    if "\x00" in s:
        raise ValueError(f"{what} contains NUL, which InfluxQL cannot name")
    if "\\" in s:
        if s.endswith("\\"):
            raise ValueError(f"{what} ends with a backslash, which line protocol cannot carry")
        for ch in special:
            if "\\" + ch in s:
                raise ValueError(
                    f"{what} has a backslash before {ch!r}, which line protocol cannot carry"
                )
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{what} is not valid Unicode (lone surrogate?)") from exc


def _escape_measurement(s: str) -> str:
    if not s:
        raise ValueError("measurement is empty")
    if s[0] in "#\t":
        raise ValueError(f"measurement cannot start with {s[0]!r} (influxd drops or strips it)")
    _check_name(s, "measurement", _MEASUREMENT_AFTER_BACKSLASH)
    if "," in s or " " in s:
        return s.translate(_MEASUREMENT_TABLE)
    return s


def _escape_generic_key(s: str) -> str:
    _check_name(s, "tag key/value or field key", _KEY_AFTER_BACKSLASH)
    if "," in s or "=" in s or " " in s:
        return s.translate(_KEY_TABLE)
    return s


def _escape_tag_key(s: str) -> str:
    if not s:
        raise ValueError("tag key is empty")
    if s == "time":
        raise ValueError("tag key 'time' is reserved (influxd drops the point)")
    return _escape_generic_key(s)


def _escape_field_key(s: str) -> str:
    if not s:
        raise ValueError("field key is empty")
    if s == "time":
        raise ValueError("field key 'time' is reserved (influxd drops the point)")
    if s[0] == "\t":
        raise ValueError("field key cannot start with a tab (influxd strips it)")
    _check_name(s, "field key", _FIELD_KEY_AFTER_BACKSLASH)
    return _escape_generic_key(s)


def _remember(cache: dict[str, str], s: str, out: str) -> str:
    if len(cache) >= CACHE_MAX:  # bounded: names are few in practice, an attack is not
        cache.clear()
    cache[s] = out
    return out


_measurement_cache: dict[str, str] = {}
_key_cache: dict[str, str] = {}
_tag_key_cache: dict[str, str] = {}
_tag_value_cache: dict[str, str] = {}
_field_key_cache: dict[str, str] = {}
# (measurement, tag items in the caller's order) -> "measurement,k=v,…" with tags sorted by key
_series_cache: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}


def escape_measurement(s: str) -> str:
    """Escape a measurement name (``,`` and space); ValueError if influxd cannot store it as is."""
    out = _measurement_cache.get(s)
    if out is None:
        out = _remember(_measurement_cache, s, _escape_measurement(s))
    return out


def escape_tag_key(s: str) -> str:
    """escape_key plus the tag-key rules (not empty, not ``time``)."""
    out = _tag_key_cache.get(s)
    if out is None:
        out = _remember(_tag_key_cache, s, _escape_tag_key(s))
    return out


def escape_field_key(s: str) -> str:
    """escape_key plus the field-key rules (not empty, not ``time``, no backslash before ``"``)."""
    out = _field_key_cache.get(s)
    if out is None:
        out = _remember(_field_key_cache, s, _escape_field_key(s))
    return out


def escape_key(s: str) -> str:
    """Escape a tag key, tag value or field key (``,``, ``=``, space); ValueError if unsafe.

    encode_line adds the checks that only apply to keys (empty, ``time``, ``\\"`` in field keys).
    """
    out = _key_cache.get(s)
    if out is None:
        out = _remember(_key_cache, s, _escape_generic_key(s))
    return out


def _string_value(v: str) -> str:
    if "\n" in v or "\r" in v:
        raise ValueError("string field value contains a newline, which line protocol cannot carry")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("string field value is not valid Unicode (lone surrogate?)") from exc
    if '"' in v or "\\" in v:
        return '"' + v.translate(_STRING_TABLE) + '"'
    return '"' + v + '"'


def format_field_value(v: float | int | bool | str) -> str:
    """Render one field value; bool is tested before int because bool is an int subclass."""
    if type(v) is float:
        if v - v == 0.0:  # false for nan and ±inf: one float op instead of a call
            return repr(v)
        raise ValueError(f"InfluxDB cannot store the float {v!r}")
    if type(v) is int:
        if _INT64_MIN <= v <= _INT64_MAX:
            return f"{v}i"
        raise ValueError(f"integer {v} is outside InfluxDB's int64 range")
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is str:
        return _string_value(v)
    # subclasses (IntEnum, str enums, numpy.float64 …): same rules, slower path
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return format_field_value(int(v))
    if isinstance(v, float):
        return format_field_value(float(v))
    if isinstance(v, str):
        return _string_value(str(v))
    raise TypeError(f"unsupported field value type {type(v).__name__}")


def _series_key(measurement: str, items: tuple[tuple[str, str], ...]) -> str:
    for k, v in items:
        if not (type(k) is str and type(v) is str) and not (
            isinstance(k, str) and isinstance(v, str)
        ):
            raise TypeError(f"tag keys and values must be str, got {k!r}: {type(v).__name__}")
    parts = [escape_measurement(measurement)]
    for k, v in sorted(items, key=_first):
        if not v:  # InfluxDB rejects empty tag values: leave the tag out
            continue
        tk = _tag_key_cache.get(k)
        if tk is None:
            tk = _remember(_tag_key_cache, k, _escape_tag_key(k))
        tv = _tag_value_cache.get(v)
        if tv is None:
            tv = _remember(_tag_value_cache, v, _escape_generic_key(v))
        parts.append(tk + "=" + tv)
    return ",".join(parts)


def _first(item: tuple[str, str]) -> str:
    return item[0]


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float | int | bool | str],
    time_ns: int,
) -> str:
    """One point as one line, no trailing newline; ValueError if InfluxDB could not store it.

    The escaped "measurement,tags" prefix is cached per (measurement, tag items), since a
    device's tags repeat on every reading; field keys are cached, values are formatted each time.
    """
    items = tuple(tags.items())
    series = _series_cache.get((measurement, items))
    if series is None:
        series = _series_key(measurement, items)
        if len(_series_cache) >= CACHE_MAX:
            _series_cache.clear()
        _series_cache[(measurement, items)] = series

    if not fields:
        raise ValueError("a point needs at least one field")
    parts = []
    fk_cache = _field_key_cache
    for k, v in fields.items():
        fk = fk_cache.get(k)
        if fk is None:
            fk = _remember(fk_cache, k, _escape_field_key(k))
        if type(v) is float and v - v == 0.0:  # finite float: the commonest reading
            parts.append(f"{fk}={v!r}")
        else:
            parts.append(fk + "=" + format_field_value(v))

    if type(time_ns) is not int:
        if isinstance(time_ns, bool) or not isinstance(time_ns, int):
            raise TypeError(f"time_ns must be int, not {type(time_ns).__name__}")
        time_ns = int(time_ns)
    if not MIN_TIME_NS <= time_ns <= MAX_TIME_NS:
        raise ValueError(f"timestamp {time_ns} is outside InfluxDB's range")
    return f"{series} {','.join(parts)} {time_ns}"
