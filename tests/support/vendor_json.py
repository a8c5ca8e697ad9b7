"""What the vendor decoders' fuzz tests feed and check: arbitrary JSON, and readings within the
canonical model's ranges."""

from __future__ import annotations

from hypothesis import strategies as st

from devices.models import FAMILY_DATA
from devices.reading import Reading

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()  # NaN and ±Infinity too: json.dumps writes them, some vendors do as well
    | st.text(max_size=30)
    | st.sampled_from(["2024-05-20 08:30:15", "FACE", "WATER", "L", "SOS", "dev-1", "1"])
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def assert_canonical(readings: list[Reading]) -> None:
    """Whatever a decoder lets through is within the canonical model's ranges."""
    for reading in readings:
        model = FAMILY_DATA[reading.family]
        canonical = {k: v for k, v in reading.values.items() if k in model.model_fields}
        model.model_validate(canonical)
