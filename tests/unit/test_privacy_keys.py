from __future__ import annotations

import base64
import hashlib
import secrets
import stat
from pathlib import Path

import pytest

from devices.errors import ConfigError
from privacy import keys
from privacy.keys import ENV_VAR, FILE_ENV_VAR, KeyRing
from privacy.operators import matches, pseudonymise

# Deterministic (parametrize ids must be the same in every xdist worker) but high-entropy.
HEX1 = hashlib.sha256(b"gridgate key test 1").hexdigest()
HEX2 = hashlib.sha256(b"gridgate key test 2").hexdigest()


def test_env_value_first_key_is_current_and_order_is_kept() -> None:
    ring = KeyRing.from_env_value(f"k2:{HEX2}, k1:{HEX1}")
    assert ring.current == "k2"
    assert ring.kids == ("k2", "k1")
    assert "k1" in ring and "k3" not in ring


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: b.hex(),
        lambda b: b.hex().upper(),
        lambda b: base64.b64encode(b).decode(),
        lambda b: base64.b64encode(b).decode().rstrip("="),
        lambda b: base64.urlsafe_b64encode(b).decode(),
    ],
    ids=["hex", "HEX", "base64", "base64-unpadded", "base64-urlsafe"],
)
def test_hex_and_base64_secrets_give_the_same_key(encode: object) -> None:
    raw = bytes.fromhex(HEX1)
    text = encode(raw)  # type: ignore[operator]
    ring = KeyRing.from_env_value(f"k1:{text}")
    assert ring.mac(b"m") == KeyRing([("k1", raw)]).mac(b"m")


def test_key_file_with_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_text(f"# keys\n\nk2 {HEX2}  # new\nk1 {HEX1}\n", encoding="utf-8")
    path.chmod(0o600)
    ring = KeyRing.from_file(path)
    assert ring.kids == ("k2", "k1")


def test_generate_file_is_private_random_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pseudonym.key"
    ring = KeyRing.generate_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ring.kids == ("k1",)
    assert KeyRing.from_file(path).mac(b"x") == ring.mac(b"x")
    before = path.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="exists already"):
        KeyRing.generate_file(path)
    assert path.read_text(encoding="utf-8") == before
    other = KeyRing.generate_file(tmp_path / "other.key")
    assert other.mac(b"x") != ring.mac(b"x")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_rotation_keeps_old_key_so_old_pseudonyms_are_still_recognised(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    old = KeyRing.generate_file(path)
    before = pseudonymise("11010519491231002X", "id_number", old)
    new = KeyRing.rotate_file(path)
    assert new.kids == ("k2", "k1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    after = pseudonymise("11010519491231002X", "id_number", new)
    assert after.startswith("k2:") and before.startswith("k1:")
    assert before == pseudonymise("11010519491231002X", "id_number", new, "k1")
    assert matches(before, "11010519491231002X", "id_number", new)
    assert matches(after, "11010519491231002X", "id_number", new)


def test_load_prefers_env_then_file_env_then_default(tmp_path: Path) -> None:
    default = tmp_path / "default.key"
    KeyRing.generate_file(default, "kd")
    named = tmp_path / "named.key"
    KeyRing.generate_file(named, "kn")
    assert KeyRing.load({}, default).current == "kd"
    assert KeyRing.load({FILE_ENV_VAR: str(named)}, default).current == "kn"
    env = {ENV_VAR: f"ke:{HEX1}", FILE_ENV_VAR: str(named)}
    assert KeyRing.load(env, default).current == "ke"
    with pytest.raises(ConfigError, match="does not exist"):
        KeyRing.load({}, tmp_path / "missing.key")


def test_repr_and_fingerprint_do_not_show_the_secret() -> None:
    ring = KeyRing.from_env_value(f"k1:{HEX1}")
    assert HEX1 not in repr(ring) and "k1" in repr(ring)
    fp = ring.fingerprint("k1")
    assert len(fp) == 12 and fp not in HEX1
    with pytest.raises(KeyError):
        ring.mac(b"x", "nope")


REFUSED_ENV = {
    "empty": "",
    "only commas": " , ",
    "no kid": HEX1,
    "short": f"k1:{hashlib.sha256(b'short').hexdigest()[:62]}",
    "short base64": "k1:" + base64.b64encode(hashlib.sha256(b"b64").digest()[:16]).decode(),
    "changeme": "k1:changeme-changeme-changeme-changeme-changeme",
    "placeholder": "k1:placeholder" + "ab" * 30,
    "example": "k1:EXAMPLE" + HEX1,
    "secret": "k1:my-secret-" + HEX1,
    "test": "k1:test" + HEX1,
    "xxxx": "k1:" + "x" * 64,
    "repeated hex": "k1:" + "a" * 64,
    "repeated zero": "k1:" + "0" * 64,
    "placeholder in base64": "k1:" + base64.b64encode(b"changeme" * 5).decode(),
    "repeating pattern": "k1:" + "0123456789abcdef" * 4,
    "counting sequence": "k1:" + bytes(range(32)).hex(),
    "few distinct bytes": "k1:" + bytes([1, 2, 3, 4, 5, 6, 7, 9] * 3 + [8] * 8).hex(),
    "not hex nor base64": "k1:" + "g!h?" * 20,
    "duplicate kid": f"k1:{HEX1},k1:{HEX2}",
    "kid with space": f"k 1:{HEX1}",
    "kid with slash": f"k/1:{HEX1}",
    "kid too long": f"{'k' * 33}:{HEX1}",
    "kid starting with dot": f".k1:{HEX1}",
}


@pytest.mark.parametrize("value", REFUSED_ENV.values(), ids=REFUSED_ENV.keys())
def test_bad_keys_are_refused_without_showing_them(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        KeyRing.from_env_value(value)
    message = str(info.value)
    secret = value.partition(":")[2]
    for part in secret.split(","):
        tail = part.partition(":")[2] or part
        if len(tail) >= 8:
            assert tail not in message
    assert HEX1 not in message and HEX2 not in message


def test_refusal_message_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"python -m privacy\.keys generate"):
        KeyRing.from_env_value(f"k1:{secrets.token_hex(8)}")


def test_raw_constructor_refuses_too() -> None:
    with pytest.raises(ConfigError, match="no pseudonym key"):
        KeyRing([])
    with pytest.raises(ConfigError, match="at least 32"):
        KeyRing([("k1", b"\x01" * 8)])
    with pytest.raises(ConfigError, match="appears twice"):
        KeyRing([("k1", bytes.fromhex(HEX1)), ("k1", bytes.fromhex(HEX2))])


@pytest.mark.parametrize(
    "body, match",
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        (f"k1 {HEX1} extra\n", "two words"),
        (f"k1:{HEX1}\n", "two words"),
        (f"k1 {HEX1}\nk1 {HEX2}\n", "appears twice"),
        (f"k1 {'0' * 64}\n", "repeats one or two characters"),
        (f"k$1 {HEX1}\n", "key id"),
    ],
)
def test_bad_key_files_are_refused(tmp_path: Path, body: str, match: str) -> None:
    path = tmp_path / "k"
    path.write_text(body, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=match) as info:
        KeyRing.from_file(path)
    assert HEX1 not in str(info.value) and HEX2 not in str(info.value)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(f"k1 {HEX1}\n", encoding="utf-8")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyRing.from_file(path)


def test_cli_generate_ensure_show_rotate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run" / "pseudonym.key"
    assert keys.main(["ensure", str(path)]) == 0
    content = path.read_text(encoding="utf-8")
    assert keys.main(["ensure", str(path)]) == 0  # present: left alone
    assert path.read_text(encoding="utf-8") == content
    assert keys.main(["generate", str(path)]) == 1
    assert keys.main(["rotate", str(path)]) == 0
    assert keys.main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "k2 fingerprint" in out and "(current)" in out
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            assert line.split()[1] not in out
    assert keys.main(["bogus"]) == 2
