"""The systemd units gridgate ships (deploy/systemd/) pass `systemd-analyze verify` and keep a
low exposure score: a dedicated user, a read-only system, state only under /var/lib/gridgate,
the pseudonymisation key as a credential rather than in the environment."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.settings import Settings
from tests.support.services import ROOT

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
VENV = ROOT / ".venv"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        subprocess.run([str(ROOT / "scripts" / "services.sh"), "systemd"], check=True)
        found = shutil.which("systemd-analyze")
    assert found is not None, "systemd-analyze is not installed"
    return found


def installed_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit as installed next to this checkout's venv (verify checks ExecStart exists)."""
    text = unit.read_text().replace("/opt/gridgate/venv", str(VENV))
    copy = tmp_path / unit.name
    copy.write_text(text)
    return copy


def test_both_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == ["gridgate-api.service", "gridgate.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_unit_verifies_and_is_confined(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text()
    for line in ("User=gridgate", "ProtectSystem=strict", "ReadWritePaths=/var/lib/gridgate",
                 "StateDirectory=gridgate", "NoNewPrivileges=yes",
                 "LoadCredential=pseudonym.key:/etc/gridgate/credentials/pseudonym.key",
                 "Environment=GRIDGATE_PSEUDONYM_KEY_FILE=%d/pseudonym.key"):  # fmt: skip
        assert line in text.splitlines(), line
    assert "GRIDGATE_PSEUDONYM_KEYS" not in text  # never the key itself in the environment
    copy = installed_copy(unit, tmp_path)
    tool = systemd_analyze()
    done = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [tool, "security", "--offline=yes", str(copy)], capture_output=True, text=True
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert found, done.stdout[-500:] + done.stderr
    assert float(found.group(1)) <= 4.0, done.stdout[-2000:]


def test_the_example_environment_names_only_real_settings() -> None:
    example = ROOT / "deploy" / "systemd" / "gridgate.env.example"
    names = [
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    known = {f"GRIDGATE_{name.upper()}" for name in Settings.model_fields}
    assert names and not set(names) - known, set(names) - known
