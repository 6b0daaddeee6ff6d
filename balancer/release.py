"""The update archive `make release` builds (README, Software Update): the wheels it is given,
the lock's pins, and a manifest signed with the release private key, which stays off the
repository and is named by path.

    python -m balancer.release --key KEY --out DIR FILE...

Each FILE goes into the archive under `wheels/` if it is a wheel, else at the top; the archive
is DIR/balancer-<version>.tar and its checksum DIR/balancer-<version>.tar.sha256, and
DIR/latest.json the index an appliance's online update reads (balancer/software.py).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from balancer import software, update

_OWN_WHEEL = re.compile(r"balancer-([^-]+)-[^/]+\.whl")


def build(files: Sequence[Path], private_key: Ed25519PrivateKey, out: Path) -> Path:
    """Write the signed archive and its checksum file into `out`; the archive's path."""
    names = {
        (f"wheels/{path.name}" if path.suffix == ".whl" else path.name): path for path in files
    }
    versions = [m.group(1) for path in files if (m := _OWN_WHEEL.fullmatch(path.name))]
    if len(versions) != 1:
        raise ValueError("the files hold no Balancer wheel, or more than one")
    digests = {}
    for name, path in sorted(names.items()):
        with path.open("rb") as stream:
            digests[name] = update.sha256_of(stream)
    manifest = json.dumps(
        {
            "format": update.FORMAT,
            "name": "balancer",
            "version": versions[0],
            "key": update.key_id(private_key.public_key()),
            "files": digests,
        },
        indent=1,
        sort_keys=True,
    ).encode()
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"balancer-{versions[0]}.tar"
    signature = private_key.sign(manifest)
    with tarfile.open(archive, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, update.MANIFEST, manifest)
        _add_bytes(tar, update.SIGNATURE, signature)
        for name, path in sorted(names.items()):
            tar.add(path, arcname=name, recursive=False, filter=_plain)
    with archive.open("rb") as stream:
        checksum = update.sha256_of(stream)
    archive.with_name(archive.name + ".sha256").write_text(f"{checksum}  {archive.name}\n")
    index = software.index(manifest, signature, archive.name)
    (out / software.INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return archive


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # The builder's user and times say nothing the appliance needs.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m balancer.release")
    parser.add_argument("--key", type=Path, required=True, help="the release private key (PEM)")
    parser.add_argument("--out", type=Path, required=True, help="the directory to write into")
    parser.add_argument("files", type=Path, nargs="+", help="the wheels and the lock's pins")
    args = parser.parse_args(argv)
    try:
        archive = build(args.files, load_private_key(args.key), args.out)
    except (OSError, ValueError) as error:
        print(f"release: {error}", file=sys.stderr)
        return 1
    print(archive)
    return 0


if __name__ == "__main__":
    sys.exit(main())
