"""`gridgate registry import | show` through the module's own argument parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.alerts.routing import default_policy_text
from gateway.registry.cli import main
from tests.support.registry_files import BAD_YAML, SMALL_YAML, write


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    monkeypatch.setenv("GRIDGATE_REGISTRY_URL", value)
    return value


def test_import_then_show(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "small.yaml", SMALL_YAML)
    assert main(["registry", "import", str(path), "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert main(["registry", "import", str(path)]) == 0
    out = capsys.readouterr().out
    assert "places 16 (16 new, 0 updated)" in out and "devices 7 (7 new, 0 updated)" in out

    assert main(["registry", "show"]) == 0
    out = capsys.readouterr().out
    assert "devices           7" in out and "unit_head 单元长 4" in out

    assert main(["registry", "show", "em-123456789012"]) == 0
    out = capsys.readouterr().out
    assert "xf 幸福小区 / g01 第一网格 / b03 3号楼 / u2 2单元 / 1201" in out
    assert "m-uh-b03u2" in out and "李建国" in out and "m-uh-b03u1" not in out
    assert "[mqtt, webhook]" in out  # the grid worker's channel kinds …
    for secret in ("s3cret", "gridgate/alerts/member", "13912345678", "street.example"):
        assert secret not in out  # … but never their targets


def test_bad_file_prints_every_problem_and_imports_nothing(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.yaml", BAD_YAML)
    assert main(["registry", "import", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert f"{path}:30: device d-1: unknown family (expected one of" in captured.err
    assert f"{path}:28: household #3: bad id: use 1-64" in captured.err
    assert "metre" not in captured.err and "h bad" not in captured.err
    assert lines[-1].endswith("problem(s); nothing imported")
    assert main(["registry", "show"]) == 0
    assert "devices           0" in capsys.readouterr().out


def test_unknown_device_and_missing_file(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["registry", "show", "nope"]) == 1
    assert "no device nope" in capsys.readouterr().err
    assert main(["registry", "import", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_refused_adapter_and_channel_are_bad_rows_like_any_other(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.yaml", BAD_YAML)
    assert main(["registry", "import", str(path), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert f"{path}:35: device d-5: unknown adapter (did you mean gridgate_json? adapters:" in err
    assert f"{path}:42: member m-3: channel 3: sms channels cannot be delivered: gridgate sends" \
        " alerts on mqtt, webhook, wecom or dingtalk channels only" in err  # fmt: skip
    assert "gridgate_jsn" not in err and "13912345678" not in err  # refused values not echoed
    assert "warning" not in err  # a refused file gets no coverage warnings


def test_places_nobody_is_alerted_for_are_warned_about_and_imported(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "small.yaml", SMALL_YAML.split("members:")[0])
    nobody = (
        f"{path}: warning: xf 幸福小区 (7 device(s) in 5 places): nobody is responsible there"
        " (no active member with an mqtt, webhook, wecom or dingtalk channel), so no alert there reaches a member"
    )
    assert main(["registry", "import", str(path), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "dry run" in captured.out and captured.err.splitlines() == [nobody]
    assert main(["registry", "import", str(path)]) == 0
    captured = capsys.readouterr()
    assert "devices 7 (7 new" in captured.out and captured.err.splitlines() == [nobody]
    # the members come in later: no warning left
    full = write(tmp_path, "small.yaml", SMALL_YAML)
    assert main(["registry", "import", str(full)]) == 0
    assert capsys.readouterr().err == ""


def test_the_configured_routing_policy_decides_who_must_be_there(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy that tells the street office first of severity IV: SMALL_YAML has one."""
    policy = default_policy_text().replace(
        "  IV:\n    roles: [property_duty]", "  IV:\n    roles: [street_office, grid_chief]"
    )
    assert policy != default_policy_text()
    monkeypatch.setenv("GRIDGATE_ROUTING_POLICY", str(write(tmp_path, "routing.yaml", policy)))
    without = SMALL_YAML.replace(
        '  - {id: m-street, name: 城东街道, role: street_office, scope: [{community: xf}], channels: ["webhook:https://street.example/alerts"]}\n',
        "",
    ).replace("scope: [{grid: g01}, {grid: g02}]", "scope: [{grid: g01}]")
    path = write(tmp_path, "small.yaml", without)
    assert main(["registry", "import", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: warning: xf 幸福小区 (1 device(s) at the community itself): no street_office"
        " or grid_chief for severity IV alerts",  # the main gate: no grid chief up there
        f"{path}: warning: xf/g02 第二网格 (2 device(s) in 2 places): no street_office or"
        " grid_chief for severity IV alerts",  # the chief now covers only g01
    ]
    # with the shipped policy (property duty for severity IV) nothing is missing
    monkeypatch.delenv("GRIDGATE_ROUTING_POLICY")
    assert main(["registry", "import", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().err == ""
    # a policy that does not load is said; only "nobody at all" is checked then
    monkeypatch.setenv("GRIDGATE_ROUTING_POLICY", str(tmp_path / "missing.yaml"))
    assert main(["registry", "import", str(path), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("gridgate registry: note: the routing policy does not load, so only")
    assert "missing.yaml" in err
