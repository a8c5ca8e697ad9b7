"""Bad settings name the GRIDGATE_* variable, the value given and the form expected, one line
per variable, and exit 2 — never a pydantic dump, never a secret's value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import (
    HIDDEN,
    Settings,
    SettingsError,
    expected_form,
    load_settings,
    settings_problems,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GRIDGATE_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("GRIDGATE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def problems_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(f"GRIDGATE_{name}", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return caught.value.problems


def test_a_bad_integer_names_the_variable_the_value_and_the_range(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert problems_for(clean_env, BATCH_SIZE="abc") == [
        "GRIDGATE_BATCH_SIZE='abc' is not valid: expected an integer from 1 to 100000"
    ]


def test_every_bad_variable_is_one_line_in_declaration_order(
    clean_env: pytest.MonkeyPatch,
) -> None:
    problems = problems_for(
        clean_env,
        LOG_LEVEL="verbose",
        ALERTS="maybe",
        MQTT_PORT="0",
        RETRY_MAX_S="-1",
        LINGER_MS="x",
        ALERT_MQTT_PORT="",
        COMMUNITY="a/b",
    )
    assert problems == [
        "GRIDGATE_MQTT_PORT='0' is not valid: expected an integer from 1 to 65535",
        "GRIDGATE_COMMUNITY='a/b' is not valid: expected + (every community) or one "
        "community's code: a letter or digit, then up to 63 of A-Z a-z 0-9 _ . : -",
        "GRIDGATE_LINGER_MS='x' is not valid: expected an integer from 0 to 60000 (milliseconds)",
        "GRIDGATE_RETRY_MAX_S='-1' is not valid: expected a number greater than 0 (seconds)",
        "GRIDGATE_ALERTS='maybe' is not valid: expected true or false (also 1/0, yes/no, on/off)",
        "GRIDGATE_ALERT_MQTT_PORT='' is not valid: expected an integer from 1 to 65535, or"
        " leave it unset",
        "GRIDGATE_LOG_LEVEL='verbose' is not valid: expected one of DEBUG, INFO, WARNING, ERROR",
    ]


def test_good_values_load(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GRIDGATE_BATCH_SIZE", "100000")
    clean_env.setenv("GRIDGATE_ALERTS", "off")
    settings = Settings.from_env()
    assert settings.batch_size == 100_000 and settings.alerts is False


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("mqtt_keepalive_s", "an integer of at least 5 (seconds)"),
        ("shutdown_grace_s", "a number of at least 0 (seconds)"),
        ("api_k_anonymity", "an integer of at least 2"),
        ("alert_rules", "a file path, or leave it unset"),
        ("mqtt_bulk_client", "true or false (also 1/0, yes/no, on/off)"),
        ("mqtt_host", "text"),
    ],
)
def test_the_expected_form_comes_from_the_type_and_its_constraints(
    field: str, expected: str
) -> None:
    assert expected_form(field) == expected


def test_a_secret_value_is_never_shown(clean_env: pytest.MonkeyPatch) -> None:
    secret = "k1:" + "ab" * 16
    with pytest.raises(ValidationError) as caught:
        # A secret can only be refused for its type; from a file-based source it might be
        # anything, so it is hidden whatever it is.
        Settings(pseudonym_keys=[secret], mqtt_password=12345678, batch_size="abc")
    problems = settings_problems(caught.value)
    assert (
        problems[0]
        == f"GRIDGATE_MQTT_PASSWORD={HIDDEN} is not valid: expected text, or leave it unset"
    )
    assert any(p.startswith(f"GRIDGATE_PSEUDONYM_KEYS={HIDDEN} is not valid") for p in problems)
    assert "12345678" not in "\n".join(problems) and secret not in "\n".join(problems)


def test_a_long_value_is_cut_and_control_characters_escaped(
    clean_env: pytest.MonkeyPatch,
) -> None:
    [problem] = problems_for(clean_env, WRITERS="9" * 200 + "\x1b[2J")
    assert problem.startswith("GRIDGATE_WRITERS='" + "9" * 60 + "…'")
    assert "\x1b" not in problem and len(problem) < 160


# -- through the command --------------------------------------------------------------------


def gridgate(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """`gridgate ARGS` (this virtualenv's console script) with only the given settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    environ |= {f"GRIDGATE_{k}": v for k, v in env.items()}
    script = Path(sys.executable).with_name("gridgate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    return subprocess.run(
        [*command, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


def test_gridgate_run_with_a_bad_batch_size_says_which_variable_and_exits_2() -> None:
    done = gridgate(["run"], BATCH_SIZE="abc")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "gridgate: GRIDGATE_BATCH_SIZE='abc' is not valid: expected an integer from 1 to 100000"
    ]
    assert "ValidationError" not in done.stderr and "batch_size" not in done.stderr
    assert done.stdout == ""


def test_gridgate_with_a_bad_log_level_and_a_bad_bool_lists_both() -> None:
    done = gridgate(["registry", "show"], LOG_LEVEL="loud", REQUIRE_REGISTRATION="ja")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "gridgate: GRIDGATE_REQUIRE_REGISTRATION='ja' is not valid: expected true or false"
        " (also 1/0, yes/no, on/off)",
        "gridgate: GRIDGATE_LOG_LEVEL='loud' is not valid: expected one of DEBUG, INFO,"
        " WARNING, ERROR",
    ]


def test_the_log_level_is_not_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDGATE_LOG_LEVEL", " debug")
    assert Settings.from_env().log_level == "DEBUG"


def test_gridgate_never_echoes_a_password_next_to_a_bad_setting() -> None:
    password = "pa55-w0rd-not-to-print"
    done = gridgate(["run"], MQTT_PASSWORD=password, INFLUX_PASSWORD=password, WRITERS="0")
    assert done.returncode == 2, done.stderr
    assert "GRIDGATE_WRITERS='0' is not valid: expected an integer from 1 to 8" in done.stderr
    assert password not in done.stderr + done.stdout


def test_the_influx_url_follows_the_services_port_unless_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`make test GRIDGATE_INFLUX_PORT=28086` starts InfluxDB there: the gateway must look
    there too without a second variable; an explicit URL wins."""
    monkeypatch.delenv("GRIDGATE_INFLUX_URL", raising=False)
    monkeypatch.setenv("GRIDGATE_INFLUX_PORT", "28086")
    assert Settings.from_env().influx_url == "http://127.0.0.1:28086"
    monkeypatch.setenv("GRIDGATE_INFLUX_URL", "http://influx.example:8086")
    assert Settings.from_env().influx_url == "http://influx.example:8086"
    monkeypatch.delenv("GRIDGATE_INFLUX_URL")
    monkeypatch.delenv("GRIDGATE_INFLUX_PORT")
    assert Settings.from_env().influx_url == "http://127.0.0.1:18086"
