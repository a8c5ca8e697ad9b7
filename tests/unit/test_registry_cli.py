"""`gridgate registry import | show` through the module's own argument parser."""

from __future__ import annotations

from pathlib import Path

import pytest

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
