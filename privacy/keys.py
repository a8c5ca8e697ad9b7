"""Pseudonymisation keys (R3.1): named, versioned HMAC keys held outside the data.

A pseudonym is ``"{kid}:{token}"``; the `kid` says which key made it, so after a rotation the
current key makes new pseudonyms while the older keys still recognise (and, for graded
re-identification, resolve) old ones. Keys come from ``GRIDGATE_PSEUDONYM_KEYS`` (``"k2:<hex
or base64>,k1:<…>"``, first = current) or a key file (``kid secret`` per line, first =
current, ``#`` comments). Anything that looks like a placeholder, a weak or a short key is
refused with a `ConfigError` that says what to do and never shows the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from devices.errors import ConfigError

ENV_VAR = "GRIDGATE_PSEUDONYM_KEYS"
FILE_ENV_VAR = "GRIDGATE_PSEUDONYM_KEY_FILE"
DEFAULT_KEY_FILE = Path(".run/gridgate/pseudonym.key")

MIN_KEY_BYTES = 32
KID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", flags=re.ASCII)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+", flags=re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}", flags=re.ASCII)
_PLACEHOLDERS = ("changeme", "change_me", "change-me", "placeholder", "example", "secret",
                 "test", "xxxx", "dummy", "sample", "password", "todo", "fixme")  # fmt: skip
_MIN_DISTINCT_BYTES = 16  # 32 random bytes have ~30 distinct values; < 16 is not random
_HOW_TO_FIX = (
    f"generate one with `python -m privacy.keys generate {DEFAULT_KEY_FILE}` "
    f'(or set {ENV_VAR}="k1:<64 hex digits from a CSPRNG>")'
)


class KeyRing:
    """The pseudonymisation keys: one current key and the older ones, newest first.

    Secrets never leave the object: it hands out keyed MAC states, not key bytes, and its
    `repr` shows only the key ids.
    """

    __slots__ = ("_kids", "_macs")

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        macs: dict[str, hmac.HMAC] = {}
        for kid, secret in keys:
            _check_kid(kid, where="key id")
            if kid in macs:
                raise ConfigError(f"pseudonym key id {kid!r} appears twice; key ids must differ")
            _check_secret_bytes(secret, f"pseudonym key {kid}")
            macs[kid] = hmac.new(secret, digestmod=hashlib.sha256)
        if not macs:
            raise ConfigError(f"no pseudonym key configured: {_HOW_TO_FIX}")
        self._macs = macs
        self._kids = tuple(macs)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def from_env_value(cls, value: str) -> KeyRing:
        """Parse ``"k2:<secret>,k1:<secret>"`` (first = current)."""
        pairs: list[tuple[str, bytes]] = []
        for n, item in enumerate(value.split(","), start=1):
            item = item.strip()
            if not item:
                continue
            kid, sep, text = item.partition(":")
            if not sep:
                raise ConfigError(
                    f"{ENV_VAR} entry {n} is not 'kid:secret' (e.g. k1:<64 hex digits>)"
                )
            where = f"{ENV_VAR} entry {n}"
            pairs.append((_check_kid(kid.strip(), where=where), _decode(text.strip(), where)))
        if not pairs:
            raise ConfigError(f"{ENV_VAR} is empty: {_HOW_TO_FIX}")
        return cls(pairs)

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        """Read a key file: ``kid secret`` per line, first = current, ``#`` comments.

        The file must not be readable by others (like an ssh key): ``chmod 600``.
        """
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"pseudonym key file {path} does not exist: {_HOW_TO_FIX}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"pseudonym key file {path} cannot be read: {exc}") from None
        if os.name == "posix" and mode & (stat.S_IRWXO):
            raise ConfigError(
                f"pseudonym key file {path} is accessible to other users: chmod 600 {path}"
            )
        pairs: list[tuple[str, bytes]] = []
        for n, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            where = f"{path} line {n}"
            if len(parts) != 2:
                raise ConfigError(f"{where} is not 'kid secret' (two words)")
            pairs.append((_check_kid(parts[0], where=where), _decode(parts[1], where)))
        if not pairs:
            raise ConfigError(f"pseudonym key file {path} holds no key: {_HOW_TO_FIX}")
        return cls(pairs)

    @classmethod
    def load(cls, environ: Mapping[str, str], default_file: Path = DEFAULT_KEY_FILE) -> KeyRing:
        """Keys from ``GRIDGATE_PSEUDONYM_KEYS``, else from ``GRIDGATE_PSEUDONYM_KEY_FILE``,
        else from `default_file`: the environment wins so a deployment can inject secrets."""
        env = environ
        value = env.get(ENV_VAR, "").strip()
        if value:
            return cls.from_env_value(value)
        file = env.get(FILE_ENV_VAR, "").strip()
        return cls.from_file(Path(file) if file else default_file)

    @staticmethod
    def generate_file(path: Path, kid: str = "k1", *, overwrite: bool = False) -> KeyRing:
        """Write a fresh random key file (mode 0600) and return its key ring.

        Refuses to replace an existing file unless told to: losing a key makes every pseudonym
        it made unresolvable. Use `rotate_file` to add a new current key instead.
        """
        _check_kid(kid, where="key id")
        return _write_key_file(path, [(kid, secrets.token_hex(MIN_KEY_BYTES))], overwrite)

    @staticmethod
    def rotate_file(path: Path, kid: str | None = None) -> KeyRing:
        """Put a new random key first in an existing key file, keeping the older ones."""
        old = KeyRing.from_file(path)
        new_kid = kid or _next_kid(old.kids)
        _check_kid(new_kid, where="key id")
        lines = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        pairs = [(new_kid, secrets.token_hex(MIN_KEY_BYTES))]
        pairs += [(line.split()[0], line.split()[1]) for line in lines]
        return _write_key_file(path, pairs, overwrite=True)

    # -- use -------------------------------------------------------------------------------

    @property
    def current(self) -> str:
        """The key id new pseudonyms are made with."""
        return self._kids[0]

    @property
    def kids(self) -> tuple[str, ...]:
        """Every key id, current first."""
        return self._kids

    def __contains__(self, kid: object) -> bool:
        return kid in self._macs

    def mac(self, message: bytes, kid: str | None = None) -> bytes:
        """HMAC-SHA-256 of `message` under key `kid` (the current key by default)."""
        try:
            state = self._macs[kid or self._kids[0]].copy()
        except KeyError:
            raise KeyError(f"no pseudonym key {kid!r}") from None
        state.update(message)
        return state.digest()

    def fingerprint(self, kid: str) -> str:
        """A short public name of a key, for logs and audits (not reversible to the key)."""
        return self.mac(b"gridgate/key-fingerprint/v1", kid)[:6].hex()

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current!r}, kids={self._kids!r})"


def _check_kid(kid: str, *, where: str) -> str:
    if not KID_PATTERN.fullmatch(kid):
        raise ConfigError(
            f"{where}: key id must be 1-32 characters of A-Z a-z 0-9 _ . - "
            f"starting with a letter or digit (e.g. k1)"
        )
    return kid


def _decode(text: str, where: str) -> bytes:
    """Hex (an even number of hex digits) or base64 (standard or URL-safe, padding optional)."""
    lowered = text.lower()
    for word in _PLACEHOLDERS:
        if word in lowered:
            raise ConfigError(f"{where}: the key looks like a placeholder, not a secret: "
                              f"{_HOW_TO_FIX}")  # fmt: skip
    if len(set(text)) <= 2:
        raise ConfigError(f"{where}: the key repeats one or two characters: {_HOW_TO_FIX}")
    if _HEX.fullmatch(text):
        secret = bytes.fromhex(text)
    elif _BASE64.fullmatch(text):
        padded = text.rstrip("=")
        padded += "=" * (-len(padded) % 4)
        try:
            secret = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: the key is neither hex nor base64") from None
    else:
        raise ConfigError(f"{where}: the key is neither hex nor base64")
    lowered_bytes = secret.lower()
    if any(word.encode() in lowered_bytes for word in _PLACEHOLDERS):
        raise ConfigError(f"{where}: the key looks like a placeholder, not a secret: {_HOW_TO_FIX}")
    return _check_secret_bytes(secret, where)


def _check_secret_bytes(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where}: the key has {len(secret)} bytes, at least {MIN_KEY_BYTES} are needed: "
            f"{_HOW_TO_FIX}"
        )
    if _low_entropy(secret):
        raise ConfigError(f"{where}: the key is not random enough: {_HOW_TO_FIX}")
    return secret


def _low_entropy(secret: bytes) -> bool:
    """Catches hand-made keys: few distinct bytes, a repeated pattern, or a counting sequence."""
    if len(set(secret)) < _MIN_DISTINCT_BYTES:
        return True
    n = len(secret)
    for period in range(1, n // 2 + 1):
        if secret[period:] == secret[:-period]:
            return True
    steps = {(b - a) & 0xFF for a, b in itertools.pairwise(secret)}
    return len(steps) <= 2


def _next_kid(kids: Iterable[str]) -> str:
    numbers = [int(k[1:]) for k in kids if re.fullmatch(r"k\d{1,6}", k)]
    return f"k{max(numbers, default=0) + 1}"


def _write_key_file(path: Path, pairs: list[tuple[str, str]], overwrite: bool) -> KeyRing:
    ring = KeyRing((kid, _decode(text, "new key")) for kid, text in pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = (
        "# gridgate pseudonym keys: 'kid secret' per line, the first is current.\n"
        "# Keep older keys: they recognise pseudonyms made before a rotation.\n"
        + "".join(f"{kid} {text}\n" for kid, text in pairs)
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create if missing"
            except FileExistsError:
                raise ConfigError(
                    f"pseudonym key file {path} exists already; not replacing it "
                    f"(rotate with `python -m privacy.keys rotate {path}`)"
                ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return ring


def main(argv: list[str] | None = None) -> int:
    """``python -m privacy.keys generate|rotate|show PATH`` for the Makefile and operators."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("generate", "ensure", "rotate", "show"):
        print("usage: python -m privacy.keys generate|ensure|rotate|show PATH", file=sys.stderr)
        return 2
    command, path = args[0], Path(args[1])
    try:
        if command == "ensure" and path.exists():
            ring = KeyRing.from_file(path)
        elif command in ("generate", "ensure"):
            ring = KeyRing.generate_file(path)
        elif command == "rotate":
            ring = KeyRing.rotate_file(path)
        else:
            ring = KeyRing.from_file(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kid in ring.kids:
        mark = " (current)" if kid == ring.current else ""
        print(f"{kid} fingerprint {ring.fingerprint(kid)}{mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
