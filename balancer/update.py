"""The check of an offline update archive (the guide's 8.4.2), before anything is installed.

An archive is a tar holding `manifest.json`, its Ed25519 signature `manifest.sig`, and the files
the manifest lists with their SHA-256: the Balancer wheel and the wheels of the dependencies
uv.lock pins, so the appliance installs with no index at all. `make release` builds it
(balancer/release.py). The check only reads the archive: a refusal changes nothing, and says its
reason in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "balancer-update/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
# Tests sign with a key of their own; an appliance trusts the key its package ships.
KEY_ENV = "BALANCER_RELEASE_KEY"
# Unpacked wheels and their compiled files take a few times the wheels' size.
DISK_FACTOR = 4
_CHUNK = 1 << 20
_MANIFEST_MAX = 1 << 20  # a manifest lists a few dozen files; more is not a manifest
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"\d+(\.\d+)*")


class Refused(Exception):
    """An update refused; the message is the one line an operator reads."""


@dataclass(frozen=True, slots=True)
class Release:
    """What a checked archive holds, and what installing it would mean."""

    version: str
    running: str
    downgrade: bool
    files: Mapping[str, str]  # name in the archive -> SHA-256
    size: int  # bytes of the files, unpacked from the tar


def release_public_key() -> Ed25519PublicKey:
    override = os.environ.get(KEY_ENV)
    pem = (
        Path(override).read_bytes()
        if override
        else resources.files("balancer").joinpath("release_key.pem").read_bytes()
    )
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise Refused("unknown key: the release key is not an Ed25519 public key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key, so a manifest says which key signed it."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sha256_of(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def parse_version(text: str) -> tuple[int, ...]:
    if not _VERSION.fullmatch(text):
        raise Refused(f"wrong format: version {text!r} is not numbers joined by dots")
    return tuple(int(part) for part in text.split("."))


def is_version(text: str) -> bool:
    return _VERSION.fullmatch(text) is not None


def parse_checksum(text: str) -> str:
    """The SHA-256 from a checksum file as `sha256sum` writes it, or the bare digest."""
    words = text.split()
    digest = words[0].lower() if words else ""
    if not _SHA256.fullmatch(digest):
        raise Refused("bad checksum: the checksum is not a SHA-256 (64 hexadecimal digits)")
    return digest


def check(
    archive: Path,
    checksum: str,
    *,
    public_key: Ed25519PublicKey,
    running: str,
    free_bytes: int,
    allow_downgrade: bool = False,
) -> Release:
    """The archive's release if it may be installed over `running`, else Refused."""
    expected = parse_checksum(checksum)
    with archive.open("rb") as stream:
        actual = sha256_of(stream)
    if actual != expected:
        raise Refused(
            f"bad checksum: the archive's SHA-256 is {actual[:16]}..., "
            f"the checksum says {expected[:16]}..."
        )
    try:
        with tarfile.open(archive, mode="r:") as tar:
            return _check_contents(
                tar,
                public_key=public_key,
                running=running,
                free_bytes=free_bytes,
                allow_downgrade=allow_downgrade,
            )
    except tarfile.TarError as error:
        raise Refused(f"wrong format: the archive is not a readable tar ({error})") from None


def _check_contents(
    tar: tarfile.TarFile,
    *,
    public_key: Ed25519PublicKey,
    running: str,
    free_bytes: int,
    allow_downgrade: bool,
) -> Release:
    members: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        path = PurePosixPath(member.name)
        if not member.isfile() or path.is_absolute() or ".." in path.parts:
            raise Refused(f"wrong format: {member.name} is not a plain file inside the archive")
        if member.name in members:
            raise Refused(f"wrong format: {member.name} is in the archive twice")
        members[member.name] = member
    manifest_bytes = _read(tar, members, MANIFEST)
    signature = _read(tar, members, SIGNATURE)
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError:
        raise Refused(f"wrong format: {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise Refused(f"wrong format: {MANIFEST} is not a {FORMAT} manifest")
    trusted = key_id(public_key)
    if manifest.get("key") != trusted:
        raise Refused(
            f"unknown key: the archive is signed by key {manifest.get('key')!s:.16}, "
            f"this Balancer trusts key {trusted}"
        )
    try:
        public_key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise Refused("bad signature: the manifest's signature does not verify") from None
    version, files = _signed_fields(manifest)
    extra = sorted(set(members) - set(files) - {MANIFEST, SIGNATURE})
    if extra:
        raise Refused(f"wrong format: {extra[0]} is in the archive but not in the manifest")
    size = 0
    for name, digest in files.items():
        if name not in members:
            raise Refused(f"wrong format: {name} is in the manifest but not in the archive")
        stream = tar.extractfile(members[name])
        assert stream is not None  # a regular file, as checked above
        if sha256_of(stream) != digest:
            raise Refused(f"bad checksum: {name} differs from the manifest's SHA-256")
        size += members[name].size
    new, old = parse_version(version), parse_version(running)
    if new == old:
        raise Refused(f"same version: {version} is running already")
    if new < old and not allow_downgrade:
        raise Refused(
            f"downgrade: {version} is older than the running {running}; "
            "confirm the downgrade to install it"
        )
    if size * DISK_FACTOR > free_bytes:
        raise Refused(
            f"not enough disk: installing needs {_mb(size * DISK_FACTOR)} MB, "
            f"{_mb(free_bytes)} MB are free"
        )
    return Release(version=version, running=running, downgrade=new < old, files=files, size=size)


def _signed_fields(manifest: dict[str, object]) -> tuple[str, dict[str, str]]:
    version, files = manifest.get("version"), manifest.get("files")
    if not isinstance(version, str):
        raise Refused(f"wrong format: {MANIFEST} has no version")
    parse_version(version)
    if not isinstance(files, dict) or not all(
        isinstance(digest, str) and _SHA256.fullmatch(digest) for digest in files.values()
    ):
        raise Refused(f"wrong format: {MANIFEST}'s files are not names with their SHA-256")
    wheel = re.compile(rf"wheels/balancer-{re.escape(version)}-[^/]+\.whl")
    if not any(wheel.fullmatch(name) for name in files):
        raise Refused(f"wrong format: the archive holds no Balancer {version} wheel")
    return version, files


def _read(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
    if name not in members:
        raise Refused(f"wrong format: the archive has no {name}")
    if members[name].size > _MANIFEST_MAX:
        raise Refused(f"wrong format: {name} is larger than a manifest can be")
    stream = tar.extractfile(members[name])
    assert stream is not None  # a regular file, as checked by the caller
    return stream.read()


def _mb(size: int) -> int:
    return -(-size // 1_000_000)
