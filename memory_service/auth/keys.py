"""The key format: `msk_<prefix>_<secret>`.

`prefix` (12 characters) finds the key's row; `secret` (32 random bytes, URL-safe base64)
is what makes it unguessable. Only the SHA-256 of the whole key is stored, and a presented
key is compared with it in constant time. A key is shown once, when it is made.
A high-entropy random secret needs no slow hash: there is nothing to brute-force from the
digest that would be easier than guessing the 256-bit secret itself.
"""

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

SCHEME = "msk"
PREFIX_LENGTH = 12
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class NewKey:
    prefix: str
    key: str

    @property
    def digest(self) -> bytes:
        return digest(self.key)


def new_key() -> NewKey:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return NewKey(prefix, f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}")


def prefix_of(key: str) -> str | None:
    """The lookup prefix of a well-formed key; None for anything else."""
    scheme, _, rest = key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or len(prefix) != PREFIX_LENGTH or not secret:
        return None
    return prefix


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def matches(key: str, stored: bytes) -> bool:
    return hmac.compare_digest(digest(key), stored)
