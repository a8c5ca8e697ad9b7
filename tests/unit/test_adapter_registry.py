"""The routes file: the shipped one routes every sample topic right, and every kind of wrong
file is refused with a ConfigError that names the route."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters import gridgate_json, vendor_access, vendor_gas, vendor_meter, vendor_wearable
from adapters.registry import (
    ADAPTERS,
    AdapterRegistry,
    Route,
    default_registry,
    filter_covers,
    filters_overlap,
    load_routes,
    routes_from_text,
)
from devices.errors import ConfigError, RejectedInput

ROUTES_YAML = Path(__file__).resolve().parents[2] / "adapters" / "routes.yaml"

SAMPLE_TOPICS = {
    "gridgate/v1/c1/safety/sd-001/telemetry": "gridgate_json",
    "gridgate/v1/c2/elder/w-7/event": "gridgate_json",
    "gridgate/raw/c1/dlt645/conc01": "dlt645",
    "gridgate/raw/c1/cjt188/conc01": "cjt188",
    "vendor/acs/c1/ACS2024051234/event": "vendor_access",
    "vendor/gasdet/c1/868480051234567/data": "vendor_gas",
    "vendor/meter/c1/20240520001/report": "vendor_meter",
    "vendor/band/c1/865432101234567/up": "vendor_wearable",
}


@pytest.mark.parametrize(("topic", "adapter"), sorted(SAMPLE_TOPICS.items()))
def test_shipped_routes_send_each_sample_topic_to_its_adapter(topic: str, adapter: str) -> None:
    assert load_routes().adapter_for(topic).name == adapter


def test_shipped_routes_subscribe_to_every_adapter_with_all_communities() -> None:
    registry = load_routes()
    assert registry.subscriptions() == [
        "gridgate/v1/+/+/+/+",
        "gridgate/raw/+/dlt645/+",
        "gridgate/raw/+/cjt188/+",
        "vendor/acs/+/+/event",
        "vendor/gasdet/+/+/data",
        "vendor/meter/+/+/report",
        "vendor/band/+/+/up",
    ]
    assert registry.routes[0].adapter is gridgate_json  # the gateway relies on it


def test_the_default_registry_is_the_shipped_file() -> None:
    assert default_registry().subscriptions() == load_routes().subscriptions()
    assert default_registry("c9").subscriptions() == load_routes(community="c9").subscriptions()
    assert load_routes(ROUTES_YAML).subscriptions() == load_routes().subscriptions()


def test_shipped_routes_decode_real_messages_of_every_format() -> None:
    registry = load_routes(community="c1")
    gas = json.dumps({"imei": "868480051234567", "time": "2024-05-20 08:30:15", "gas": 2500})
    [reading] = registry.decode("vendor/gasdet/c1/868480051234567/data", gas.encode())
    assert reading.values["gas_lel_pct"] == 5.0
    energy = b"68 12 90 78 56 34 12 68 91 08 33 33 34 33 AB 89 67 45 CC 16"
    [meter] = registry.decode("gridgate/raw/c1/dlt645/conc01", energy)
    assert meter.values["energy_kwh"] == 123456.78
    water = (
        b"68 10 78 56 34 12 00 00 00 81 16 90 1F 00 56 34 12 00 2C 00 00 12 00 2C"
        b" 15 30 08 20 05 24 20 05 00 93 16"
    )
    [cold] = registry.decode("gridgate/raw/c1/cjt188/conc01", water)
    assert cold.values["water_m3"] == 1234.56 and cold.values["battery_low"] is True


def test_options_reach_configure() -> None:
    registry = load_routes()
    gas = registry.adapter_for("vendor/gasdet/c1/x/data")
    assert isinstance(gas, vendor_gas.GasCodec) and gas.lel_ppm == 50_000
    meter = registry.adapter_for("vendor/meter/c1/x/report")
    assert isinstance(meter, vendor_meter.MeterCodec) and meter.battery_low_v == 3.3


def test_community_is_substituted() -> None:
    registry = load_routes(community="c1")
    assert "vendor/band/c1/+/up" in registry.subscriptions()
    assert registry.adapter_for("vendor/band/c1/w1/up").name == "vendor_wearable"
    with pytest.raises(RejectedInput) as info:
        registry.adapter_for("vendor/band/c2/w1/up")
    assert info.value.reason == "no_adapter"


@pytest.mark.parametrize("community", ["", "#", "c/1", "c+", "a b", "x" * 65])
def test_a_bad_community_is_a_config_error(community: str) -> None:
    with pytest.raises(ConfigError, match="community"):
        routes_from_text(one_route(), community=community)
    with pytest.raises(ConfigError, match="community"):
        load_routes(community=community)


def test_a_file_of_vendors_only_needs_no_binary_adapters(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "routes:\n"
        '  - filter: "vendor/acs/{community}/+/event"\n'
        "    adapter: vendor_access\n"
        '  - filter: "vendor/gasdet/{community}/+/data"\n'
        "    adapter: vendor_gas\n"
        "    options: {lel_ppm: 21000}  # an LPG estate\n",
        encoding="utf-8",
    )
    registry = load_routes(path, community="c7")
    assert registry.subscriptions() == ["vendor/acs/c7/+/event", "vendor/gasdet/c7/+/data"]
    assert registry.adapter_for("vendor/acs/c7/a/event") is vendor_access
    lpg = registry.adapter_for("vendor/gasdet/c7/g/data")
    assert isinstance(lpg, vendor_gas.GasCodec) and lpg.lel_ppm == 21_000


def test_a_broad_route_after_a_narrow_one_is_fine() -> None:
    text = (
        "routes:\n"
        '  - {filter: "vendor/acs/{community}/+/event", adapter: vendor_access}\n'
        '  - {filter: "vendor/#", adapter: vendor_gas}\n'
    )
    registry = routes_from_text(text)
    assert registry.adapter_for("vendor/acs/c/d/event") is vendor_access
    assert registry.adapter_for("vendor/gasdet/c/d/data") is vendor_gas


def test_adapters_lists_every_adapter_module_by_name() -> None:
    names = set(ADAPTERS)
    assert {
        "gridgate_json",
        "vendor_access",
        "vendor_gas",
        "vendor_meter",
        "vendor_wearable",
    } <= names
    assert {"dlt645", "cjt188"} <= names
    assert not names & {"base", "registry", "vendor_common", "_frames"}
    for name in names:
        assert ADAPTERS[name].name == name and callable(ADAPTERS[name].decode)
    assert ADAPTERS.get("vendor_wearable") is vendor_wearable
    assert ADAPTERS.get("nope") is None
    assert len(ADAPTERS) == len(names) and "vendor_gas" in repr(ADAPTERS)


def test_the_routes_file_is_package_data() -> None:
    from importlib import resources

    text = resources.files("adapters").joinpath("routes.yaml").read_text(encoding="utf-8")
    assert text == ROUTES_YAML.read_text(encoding="utf-8")
    pyproject = (ROUTES_YAML.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"*" = ["*.yaml"' in pyproject  # setuptools ships it in the wheel


def test_the_old_constructor_api_still_works() -> None:
    registry = AdapterRegistry([Route("vendor/x/#", vendor_access)])
    assert registry.adapter_for("vendor/x/y") is vendor_access
    assert registry.subscriptions() == ["vendor/x/#"]


# -- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broad", "narrow", "covers"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),
        ("#", "x/y", True),
        ("a/+/c", "a/+/c", True),
        ("a/b/c", "a/+/c", False),
        ("a/+", "a/#", False),
        ("a/+/c", "a/b", False),
        ("a/b", "a/b/c", False),
        ("a/+/+", "a/#", False),
    ],
)
def test_filter_covers(broad: str, narrow: str, covers: bool) -> None:
    assert filter_covers(broad, narrow) is covers


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("a/+/c", "a/b/+", True),
        ("a/#", "a", True),
        ("a/b", "a/#", True),
        ("#", "x", True),
        ("a/b/c", "a/b/d", False),
        ("a/+", "a/+/c", False),
        ("vendor/acs/+/+/event", "vendor/acs/c1/+/event", True),
        ("vendor/acs/+/+/event", "vendor/gasdet/c1/+/data", False),
    ],
)
def test_filters_overlap(first: str, second: str, overlap: bool) -> None:
    assert filters_overlap(first, second) is overlap
    assert filters_overlap(second, first) is overlap


# -- bad files ----------------------------------------------------------------------------


def one_route(
    filter_: str = "vendor/acs/{community}/+/event", adapter: str = "vendor_access", extra: str = ""
) -> str:
    return f'routes:\n  - filter: "{filter_}"\n    adapter: {adapter}\n{extra}'


GOOD = '  - {filter: "gridgate/v1/{community}/+/+/+", adapter: gridgate_json}\n'


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        # structure
        ("", ["file is empty"]),
        ("# nothing\n", ["file is empty"]),
        ("routes: []\n", ["routes"]),
        ("routes: {filter: x}\n", ["routes"]),
        ("- filter: x\n", ["file"]),
        ("routes:\n" + GOOD + "version: 2\n", ["version", "Extra inputs"]),
        (
            "routes:\n" + GOOD + '  - {filter: "a/+", adapter: gridgate_json, enabled: true}\n',
            ["routes[1]", "enabled"],
        ),
        ("routes:\n" + GOOD + '  - {filter: "a/+"}\n', ["routes[1]", "adapter", "required"]),
        ("routes:\n" + GOOD + "  - {adapter: vendor_gas}\n", ["routes[1]", "filter", "required"]),
        ("routes:\n" + GOOD + '  - {filter: "", adapter: vendor_gas}\n', ["routes[1]", "filter"]),
        (
            "routes:\n" + GOOD + '  - {filter: ["a"], adapter: vendor_gas}\n',
            ["routes[1]", "filter"],
        ),
        (
            "routes:\n" + GOOD + '  - {filter: "a/+", adapter: vendor_gas, options: [1]}\n',
            ["routes[1]", "options"],
        ),
        (
            "routes:\n  - filter: a\n    filter: b\n    adapter: gridgate_json\n",
            ["duplicate key", "filter"],
        ),
        ("routes:\n  - {filter: [unclosed\n", ["not valid YAML"]),
        ("routes:\n  - !!python/object:os.system {}\n", ["not valid YAML"]),
        # adapters
        (one_route(adapter="vendor_nope"), ["routes[0]", "vendor_nope", "unknown adapter"]),
        (one_route(adapter="Vendor-Access"), ["routes[0]", "not an adapter name"]),
        (one_route(adapter="../gateway"), ["routes[0]", "not an adapter name"]),
        (one_route(adapter="_frames"), ["routes[0]", "not an adapter name"]),
        # modules of the package that are not registered adapters
        (one_route(adapter="registry"), ["routes[0]", "unknown adapter", "vendor_gas"]),
        (one_route(adapter="base"), ["routes[0]", "unknown adapter"]),
        (one_route(adapter="vendor_common"), ["routes[0]", "unknown adapter"]),
        # filters
        (one_route("vendor/#/event"), ["routes[0]", "'#'"]),
        (one_route("vendor/acs#"), ["routes[0]", "'#'"]),
        (one_route("vendor/acs/{community}/dev+/event"), ["routes[0]", "'+'"]),
        (one_route("vendor//{community}/+/event"), ["routes[0]", "empty"]),
        (one_route("/vendor/acs/{community}/+/event"), ["routes[0]", "empty"]),
        (one_route("vendor/acs/{community}/+/event/"), ["routes[0]", "empty"]),
        (one_route("$SYS/acs/{community}/+/event"), ["routes[0]", "$"]),
        (one_route("vendor/acs/{site}/+/event"), ["routes[0]", "placeholder"]),
        (one_route("vendor/acs/{community/+/event"), ["routes[0]", "placeholder"]),
        (one_route("vendor/gasdet/{community}/+/data"), ["routes[0]", "shares no topic"]),
        ("routes:\n" + GOOD + GOOD, ["routes[1]", "unreachable", "routes[0]"]),
        (
            'routes:\n  - {filter: "vendor/#", adapter: vendor_gas}\n'
            '  - {filter: "vendor/acs/{community}/+/event", adapter: vendor_access}\n',
            ["routes[1]", "vendor_access", "unreachable", "routes[0]"],
        ),
        # options
        (
            one_route(adapter="vendor_access", extra="    options: {x: 1}\n"),
            ["routes[0]", "takes no options"],
        ),
        (
            one_route(
                "vendor/gasdet/{community}/+/data", "vendor_gas", "    options: {lel_ppm: -1}\n"
            ),
            ["routes[0]", "options rejected", "lel_ppm"],
        ),
        (
            one_route(
                "vendor/gasdet/{community}/+/data", "vendor_gas", "    options: {lel: 21000}\n"
            ),
            ["routes[0]", "options rejected", "lel"],
        ),
        (
            one_route(
                "vendor/gasdet/{community}/+/data",
                "vendor_gas",
                "    options: {lel_ppm: '21000'}\n",
            ),
            ["routes[0]", "options rejected", "number"],
        ),
        (
            one_route("vendor/meter/{community}/+/report", "vendor_meter", "    options: {1: 2}\n"),
            ["routes[0]", "options"],
        ),
    ],
)
def test_bad_files_are_refused_naming_the_route(text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        routes_from_text(text, source="test.yaml")
    message = str(info.value)
    assert message.startswith("test.yaml: ")
    for fragment in fragments:
        assert fragment in message, message


def test_binary_adapter_options_are_checked_by_their_configure() -> None:
    text = one_route(
        "gridgate/raw/{community}/cjt188/+", "cjt188", "    options: {battery_low_bit: 99}\n"
    )
    with pytest.raises(ConfigError, match=r"routes\[0\].*options rejected"):
        routes_from_text(text)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_routes(tmp_path / "nope.yaml")


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_bytes(b"routes:\n  - filter: \xff\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_routes(path)
