"""The first start of an appliance: its data directory, the WebUI's certificate, and the password
of the guide's ``loadbalancer`` user, which is never a default: it is set by ``balancer setup``
or ``balancer init``, or made by the first ``balancer serve`` and shown once."""

from __future__ import annotations

from pathlib import Path

from balancer import certificates, defaults, users
from balancer.model import NodeSettings
from balancer.store import Store


def prepare(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return data_dir / "balancer.db"


def certificate(data_dir: Path, hostname: str) -> Path:
    """The WebUI's certificate and key (one PEM file), self-signed for ``hostname`` if missing;
    an operator's own replaces the file."""
    return certificates.certificate(data_dir / "webui.pem", hostname)


def set_up(store: Store) -> bool:
    """Whether the appliance was set up: it has a user to sign in with."""
    return bool(store.users())


def weak(password: str, user: str = defaults.USER) -> str | None:
    """Why ``password`` is too weak for ``user`` (the guide's ``loadbalancer``), or None: the
    check every password set anywhere passes (balancer.users.weak)."""
    return users.weak(password, user)


def set_user_password(store: Store, password: str, *, author: str) -> None:
    """Set the ``loadbalancer`` user's password, making the user if needed."""
    if store.password_hash(defaults.USER) is None:
        users.add_user(store, defaults.USER, password, author=author)
    else:
        users.set_password(store, defaults.USER, password, author=author)


def first_password(store: Store) -> str | None:
    """A new password for ``loadbalancer`` if the appliance has no user yet, else None."""
    if store.users():
        return None
    password = users.generate_password(defaults.USER)
    users.add_user(store, defaults.USER, password, author="system")
    return password


def announce(password: str) -> str:
    """What the operator is told, this once: the password is kept only as a hash."""
    return (
        f"The WebUI user {defaults.USER!r} has the password\n\n    {password}\n\n"
        "It is shown only this once; only its hash is kept. "
        "Set another with `balancer init`."
    )


def ready(
    node: NodeSettings, fingerprint: str, heading: str = "Balancer is ready. The WebUI is at:"
) -> str:
    """What `balancer serve` prints once it listens (and `balancer setup` once done): where the
    WebUI is, and the fingerprint to compare with the browser's certificate warning (or to give
    the remote CLI's --fingerprint)."""
    address = node.listen_address
    if address is None:
        host = "<this machine's address>"
    else:
        host = f"[{address}]" if address.version == 6 else str(address)
    lines = [heading, f"  https://{host}:{node.https_port}/lbadmin/"]
    if node.http_port is not None:
        lines.append(f"  http://{host}:{node.http_port}/lbadmin/")
    if address is None:
        lines.append("  (it listens on every address of this machine: use one of them)")
    lines += [
        "Its certificate's SHA-256 fingerprint, as browsers and openssl show it:",
        f"  sha256 Fingerprint={fingerprint}",
    ]
    return "\n".join(lines)
