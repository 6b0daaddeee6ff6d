"""Users of the WebUI and the API: their passwords and their API keys.

Passwords are kept as argon2id hashes; an API key is shown once, when it is made, and kept as
its SHA-256 digest. Every change goes through the store, which audits it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from balancer.roles import Role
from balancer.store import ApiKey, Store, User
from balancer.validate import Invalid, Problem

# argon2-cffi's defaults are RFC 9106's second recommendation: argon2id, 64 MiB, 3 passes.
_HASHER = PasswordHasher()
PASSWORD_MIN_LENGTH = 8
# argon2 takes any length; a cap keeps one sign-in from costing the appliance much.
PASSWORD_MAX_LENGTH = 1024
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# No 0/O or 1/l/I: a generated password is read off a screen and typed.
_ALPHABET = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXYZ2345679"
KEY_PREFIX = "blb_"


def check_password(password: str) -> None:
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        reason = f"must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters long"
        raise Invalid([Problem("password", reason)])


def hash_password(password: str) -> str:
    check_password(password)
    return _HASHER.hash(password)


def generate_password() -> str:
    """Four groups of five characters: about 114 bits, and easy to read out."""
    groups = ("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(4))
    return "-".join(groups)


def add_user(
    store: Store, name: str, password: str, role: Role = Role.ADMINISTRATOR, *, author: str
) -> User:
    if not _NAME.match(name):
        reason = "must be 1 to 32 lower-case letters, digits, '_', '.' or '-', not a digit first"
        raise Invalid([Problem("name", reason)])
    return store.add_user(name, hash_password(password), role, author=author)


def set_password(store: Store, name: str, password: str, *, author: str) -> None:
    store.set_password(name, hash_password(password), author=author)


def verify(store: Store, name: str, password: str) -> str | None:
    """The user's password hash if ``password`` is theirs, else None.

    An unknown user costs the same time as a wrong password, so a caller cannot tell which
    user names exist.
    """
    found = store.password_hash(name) if len(password) <= PASSWORD_MAX_LENGTH else None
    try:
        _HASHER.verify(found or _unknown_user_hash(), password[:PASSWORD_MAX_LENGTH])
    except (VerificationError, InvalidHashError):
        return None
    return found


@cache
def _unknown_user_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(16))


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def add_api_key(
    store: Store, name: str, owner: str, role: Role | None = None, *, author: str
) -> tuple[ApiKey, str]:
    """A new key for ``owner`` and its text, which is shown this once and never kept; ``role``
    narrows what it may do (None: whatever its owner may)."""
    if not name.strip() or len(name) > 64:
        raise Invalid([Problem("name", "must be 1 to 64 characters, saying what the key is for")])
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return store.add_api_key(name, owner, key_digest(key), role, author=author), key
