"""API keys: stored as sha256 hashes, compared in constant time; off when none are configured.

Keys are random 256-bit tokens, so a plain sha256 is enough (a slow KDF guards low-entropy
passwords, not these) and lets every request be checked in microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from pcam_core.errors import InvalidCredentials, NotAuthenticated

KEY_PREFIX = "pcam_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """The sha256 hex digest stored for `key`."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits, URL-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKeys:
    """Key name -> sha256 hashes (several per name: rotation without downtime)."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self.entries = [(name, digest) for name, digest in entries]

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @classmethod
    def parse(cls, lines: Iterable[str], source: str) -> ApiKeys:
        """Entries `name:sha256hex`; blank lines and `#` comments skipped.

        A bad entry is reported by position only: it may be a plaintext key pasted by mistake, and
        that must not reach a log.
        """
        entries = []
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, digest = line.partition(":")
            digest = digest.strip().lower()
            if not NAME_PATTERN.match(name.strip()) or not HASH_PATTERN.match(digest):
                raise ValueError(
                    f"{source}, entry {number}: expected 'name:sha256hex' (a name of letters, digits, "
                    "'.', '_', '-' and the 64 hex digits of the key's sha256), not a plaintext key"
                )
            entries.append((name.strip(), digest))
        return cls(entries)

    @classmethod
    def load(cls, hashes: Iterable[str], path: Path | None) -> ApiKeys:
        """Keys from the settings' list and, if given, the key file."""
        keys = cls.parse(hashes, "api_key_hashes")
        if path is not None:
            keys.entries += cls.parse(path.read_text().splitlines(), str(path)).entries
        return keys

    def identify(self, presented: str) -> str | None:
        """The name of the key `presented`, or None.

        Every stored hash is compared, with hmac.compare_digest, so the time taken says nothing about
        which key or how much of it matched.
        """
        digest = hash_key(presented)
        found = None
        for name, stored in self.entries:
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        return found

    def authenticate(self, x_api_key: str | None, bearer: str | None) -> str:
        """The key name for a request's credentials (X-API-Key first, then Bearer): NotAuthenticated or InvalidCredentials otherwise."""
        presented = x_api_key or bearer
        if not presented:
            raise NotAuthenticated(
                "Send an API key in the X-API-Key header or as 'Authorization: Bearer <key>'."
            )
        name = self.identify(presented)
        if name is None:
            raise InvalidCredentials("The API key is not valid.")
        return name
