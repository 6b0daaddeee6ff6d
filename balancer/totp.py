"""Two-factor sign-in: time-based one-time codes (TOTP, RFC 6238) from an authenticator app,
and recovery codes for the day the phone is lost.

A user's secret is made here, shown once as a QR code and as text, and kept only once the user
has typed a code it makes (enrolment). A code is taken for the current 30-second step and the
one before or after (a phone's clock drifts); once a step's code signed someone in, no code of
that step or an earlier one is taken again for that user, so an overheard code cannot be
replayed. Ten recovery codes are made at enrolment, shown once and kept as SHA-256 digests;
each signs in once.

Time is the caller's ``now`` (Unix seconds): the store's clock, which a test sets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pyotp
import segno

from balancer.store import Store, TwoFactor
from balancer.validate import Invalid, Problem

ISSUER = "Balancer"
STEP = 30  # seconds: RFC 6238's default, and what every authenticator app assumes
DIGITS = 6
DRIFT = 1  # steps either side of the current one whose codes are taken too
RECOVERY_CODES = 10
# No 0/O or 1/l/I: a recovery code is read off paper and typed. 12 of 31: about 59 bits,
# beyond guessing through the sign-in throttle.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_RECOVERY_LENGTH = 12


def new_secret() -> str:
    """160 random bits in base32, RFC 4226's recommended length."""
    return pyotp.random_base32(32)


def uri(secret: str, user: str, hostname: str) -> str:
    """The otpauth:// address an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=f"{user}@{hostname}", issuer_name=ISSUER)


def qr_svg(text: str) -> str:
    """``text`` as a QR code in inline SVG markup: no script and no image file, which the
    WebUI's content security policy allows."""
    return str(segno.make(text, error="m").svg_inline(scale=5, title="QR code to scan"))


def grouped(secret: str) -> str:
    """The secret in groups of four, as it is typed into an app that cannot scan."""
    return " ".join(secret[n : n + 4] for n in range(0, len(secret), 4))


def code_at(secret: str, now: float) -> str:
    """The code an authenticator app shows at ``now``."""
    return pyotp.TOTP(secret).generate_otp(int(now // STEP))


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The step ``code`` belongs to, within DRIFT of ``now``'s; None if it is none of them."""
    code = _digits(code)
    if len(code) != DIGITS:
        return None
    totp = pyotp.TOTP(secret)
    current = int(now // STEP)
    for step in range(current - DRIFT, current + DRIFT + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """RECOVERY_CODES codes, each as xxxx-xxxx-xxxx."""

    def one() -> str:
        text = "".join(secrets.choice(_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        return "-".join(text[n : n + 4] for n in range(0, _RECOVERY_LENGTH, 4))

    return [one() for _ in range(RECOVERY_CODES)]


def recovery_digest(code: str) -> str:
    """A recovery code as kept. SHA-256 and not a slow hash: the codes are random, and whoever
    reads the store reads the TOTP secret beside them anyway."""
    normal = "".join(c for c in code.lower() if c.isalnum())
    return hashlib.sha256(normal.encode()).hexdigest()


def enrol(store: Store, user: str, secret: str, code: str, now: float, *, author: str) -> list[str]:
    """Keep ``secret`` as ``user``'s once ``code`` shows their app has it; the new recovery
    codes, to be shown this once. Invalid naming ``code`` otherwise, and while ``user`` has a
    second factor: replacing it takes a current code first (turn it off, then enrol)."""
    if store.two_factor(user) is not None:
        reason = "two-factor sign-in is on already: enrol a new app with a current code"
        raise Invalid([Problem("code", reason)])
    step = matching_step(secret, code, now)
    if step is None:
        raise Invalid([Problem("code", "is not the code the app shows now: scan again and retry")])
    codes = new_recovery_codes()
    store.set_two_factor(
        user,
        TwoFactor(secret, tuple(recovery_digest(c) for c in codes)),
        author=author,
        action="two_factor_enrol",
    )
    store.use_totp_step(user, step)
    return codes


def check(store: Store, user: str, code: str, now: float) -> str | None:
    """Whether ``code`` is ``user``'s second factor now: "code" for an app's code (its step is
    then used up), "recovery" for a recovery code (then gone), None if it is neither."""
    found = store.two_factor(user)
    if found is None:
        return None
    step = matching_step(found.secret, code, now)
    if step is not None:
        return "code" if store.use_totp_step(user, step) else None
    if len(_digits(code)) == DIGITS:
        return None  # an app's code, not of now: never a recovery code
    if store.use_recovery_code(user, recovery_digest(code)):
        return "recovery"
    return None


def _digits(code: str) -> str:
    return "".join(code.split())


def require_code(store: Store, user: str, code: str | None) -> None:
    """Refuse (Invalid naming ``code``) unless ``code`` is ``user``'s app's code now, when they
    have a second factor: what a session needs to make an API key. A recovery code is not
    taken: it signs in, once, and makes nothing that lasts."""
    found = store.two_factor(user)
    if found is None:
        return
    if not code:
        reason = "is needed: you sign in with a second factor; send the code your app shows now"
        raise Invalid([Problem("code", reason)])
    step = matching_step(found.secret, code, store.now())
    if step is None or not store.use_totp_step(user, step):
        raise Invalid([Problem("code", "is not the code your app shows now, or was used already")])
