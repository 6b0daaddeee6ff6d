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

from balancer import defaults
from balancer.roles import Role
from balancer.store import ApiKey, Store, User
from balancer.validate import Invalid, Problem

# argon2-cffi's defaults are RFC 9106's second recommendation: argon2id, 64 MiB, 3 passes.
_HASHER = PasswordHasher()
# argon2 takes any length; a cap keeps one sign-in from costing the appliance much.
PASSWORD_MAX_LENGTH = 1024
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# No 0/O or 1/l/I: a generated password is read off a screen and typed.
_ALPHABET = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXYZ2345679"
KEY_PREFIX = "blb_"

# A password is refused wherever it is set (balancer setup and init, user add and passwd, the
# API, Maintenance > Passwords, a user's own page) when shorter than this...
STRONG_LENGTH = 12
# ... or made of fewer different characters ...
STRONG_DISTINCT = 5
# ... or one of these words (case aside) with digits or signs around it: the defaults and the
# first guesses of anyone trying an appliance's sign-in page. A short explicit list on purpose:
# length and variety do the rest, and nothing is sent anywhere to check a password.
COMMON = frozenset(
    [
        "password",
        "passw0rd",
        "p4ssw0rd",
        "loadbalancer",
        "balancer",
        "lbadmin",
        "admin",
        "administrator",
        "root",
        "toor",
        "changeme",
        "letmein",
        "welcome",
        "default",
        "secret",
        "qwerty",
        "qwertz",
        "azerty",
        "iloveyou",
        "monkey",
        "dragon",
        "master",
        "cyberark",
        "haproxy",
        "keepalived",
        "debian",
        "ubuntu",
        "linux",
        "abc",
        "abcdef",
    ]
)
# Runs along a keyboard row or the alphabet read as "typed without thinking".
_RUNS = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_AROUND = re.compile(r"^[\W\d_]*(.*?)[\W\d_]*$")
# A name shorter than this is found inside too many good passwords to refuse them for it.
_NAME_IN_PASSWORD = 3


def weak(password: str, user: str) -> str | None:
    """Why ``password`` is too weak for ``user``, or None if it is not."""
    lowered = password.lower()
    if len(password) < STRONG_LENGTH:
        return f"must be at least {STRONG_LENGTH} characters long"
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"is longer than {PASSWORD_MAX_LENGTH} characters"
    if len(user) >= _NAME_IN_PASSWORD and user.lower() in lowered:
        return f"contains the user's name, {user}"
    word = _AROUND.match(lowered)
    if word is not None and word.group(1) in COMMON:
        return f"is a common password ({word.group(1)}, with digits or signs around it)"
    if len(set(password)) < STRONG_DISTINCT:
        return f"has fewer than {STRONG_DISTINCT} different characters"
    if any(lowered in (run * 2) or lowered in (run * 2)[::-1] for run in _RUNS):
        return "is a run of keys on the keyboard or of the alphabet"
    return None


def check_password(password: str, user: str) -> None:
    reason = weak(password, user)
    if reason is not None:
        raise Invalid([Problem("password", reason)])


def hash_password(password: str, user: str) -> str:
    check_password(password, user)
    return _HASHER.hash(password)


def generate_password(user: str = defaults.USER) -> str:
    """Four groups of five characters: about 114 bits, and easy to read out; never one
    ``weak`` refuses (say, one with ``user``'s name in it)."""
    for _ in range(100):
        groups = ("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(4))
        password = "-".join(groups)
        if weak(password, user) is None:
            return password
    raise ValueError(f"no password made for {user!r} passes the strength check")


def add_user(
    store: Store, name: str, password: str, role: Role = Role.ADMINISTRATOR, *, author: str
) -> User:
    if not _NAME.match(name):
        reason = "must be 1 to 32 lower-case letters, digits, '_', '.' or '-', not a digit first"
        raise Invalid([Problem("name", reason)])
    return store.add_user(name, hash_password(password, name), role, author=author)


def set_password(store: Store, name: str, password: str, *, author: str) -> None:
    store.set_password(name, hash_password(password, name), author=author)


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
