"""The offline update's check (balancer/update.py) on small archives built by balancer/release.py,
the code `make release` runs, from fake wheels and a key pair of the test's own: a good archive is
accepted; a wrong checksum, another key, a bad signature, a tampered or extra file, a downgrade
without confirmation, the running version again, too little disk and a file that is no tar are
each refused in one line naming the reason, and leave every file as it was."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from balancer import release, update

KEY = Ed25519PrivateKey.generate()
PLENTY = 10**9


def _files(tmp_path: Path, version: str) -> list[Path]:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    files = {
        f"balancer-{version}-py3-none-any.whl": b"the balancer wheel " + version.encode(),
        "dependency-1.0-py3-none-any.whl": b"a dependency's wheel",
        "requirements.txt": b"dependency==1.0\n",
    }
    for name, data in files.items():
        (source / name).write_bytes(data)
    return [source / name for name in files]


def _build(tmp_path: Path, version: str = "0.2.0", key: Ed25519PrivateKey = KEY) -> Path:
    return release.build(_files(tmp_path, version), key, tmp_path / "dist")


def _checksum(archive: Path) -> str:
    return archive.with_name(archive.name + ".sha256").read_text()


def _check(archive: Path, **options: object) -> update.Release:
    arguments: dict[str, object] = {
        "checksum": _checksum(archive),
        "public_key": KEY.public_key(),
        "running": "0.1.0",
        "free_bytes": PLENTY,
    }
    arguments.update(options)
    return update.check(archive, **arguments)  # type: ignore[arg-type]


def _retar(archive: Path, change: Callable[[str, bytes], bytes | None]) -> str:
    """Rewrite the archive's members through `change` (None drops one); its new checksum."""
    with tarfile.open(archive) as tar:
        members = [
            (member.name, tar.extractfile(member).read())  # type: ignore[union-attr]
            for member in tar.getmembers()
        ]
    with tarfile.open(archive, mode="w:") as tar:
        for name, data in members:
            changed = change(name, data)
            if changed is not None:
                info = tarfile.TarInfo(name)
                info.size = len(changed)
                tar.addfile(info, io.BytesIO(changed))
    return _sha256(archive)


def _sha256(archive: Path) -> str:
    with archive.open("rb") as stream:
        return update.sha256_of(stream)


def test_a_good_archive_is_accepted(tmp_path: Path) -> None:
    archive = _build(tmp_path)
    accepted = _check(archive)
    assert accepted.version == "0.2.0"
    assert accepted.running == "0.1.0"
    assert not accepted.downgrade
    assert set(accepted.files) == {
        "wheels/balancer-0.2.0-py3-none-any.whl",
        "wheels/dependency-1.0-py3-none-any.whl",
        "requirements.txt",
    }
    # A bare digest is a checksum too, as is sha256sum's line.
    assert _check(archive, checksum=_checksum(archive).split()[0]).version == "0.2.0"


def test_a_confirmed_downgrade_is_accepted(tmp_path: Path) -> None:
    accepted = _check(_build(tmp_path, "0.0.9"), allow_downgrade=True)
    assert accepted.downgrade
    assert accepted.version == "0.0.9"


def _another_key(archive: Path) -> dict[str, object]:
    other = Ed25519PrivateKey.generate()
    release.build(_files(archive.parent.parent, "0.2.0"), other, archive.parent)
    return {}


def _bad_signature(archive: Path) -> dict[str, object]:
    # The manifest still names the trusted key, but says what its signature was not made over.
    def change(name: str, data: bytes) -> bytes:
        return data.replace(b'"name": "balancer"', b'"name": "balanced"')

    return {"checksum": _retar(archive, change)}


def _tampered_file(archive: Path) -> dict[str, object]:
    def change(name: str, data: bytes) -> bytes:
        return b"dependency==6.6.6\n" if name == "requirements.txt" else data

    return {"checksum": _retar(archive, change)}


def _extra_file(archive: Path) -> dict[str, object]:
    with tarfile.open(archive, mode="a:") as tar:
        tar.addfile(tarfile.TarInfo("wheels/intruder-1.0-py3-none-any.whl"), io.BytesIO(b""))
    return {"checksum": _sha256(archive)}


def _missing_file(archive: Path) -> dict[str, object]:
    def change(name: str, data: bytes) -> bytes | None:
        return None if name == "requirements.txt" else data

    return {"checksum": _retar(archive, change)}


def _not_a_tar(archive: Path) -> dict[str, object]:
    archive.write_bytes(b"not a tar at all" * 100)
    return {"checksum": _sha256(archive)}


REFUSALS: dict[str, tuple[Callable[[Path], dict[str, object]], str]] = {
    "wrong checksum": (lambda _: {"checksum": "0" * 64}, "bad checksum: the archive's SHA-256"),
    "no checksum": (lambda _: {"checksum": "balancer-0.2.0.tar"}, "bad checksum: the checksum"),
    "another key": (_another_key, "unknown key: the archive is signed by key"),
    "bad signature": (_bad_signature, "bad signature: the manifest's signature does not verify"),
    "tampered file": (_tampered_file, "bad checksum: requirements.txt differs from the manifest"),
    "extra file": (_extra_file, "wrong format: wheels/intruder-1.0-py3-none-any.whl is in the"),
    "missing file": (_missing_file, "wrong format: requirements.txt is in the manifest but not"),
    "not a tar": (_not_a_tar, "wrong format: the archive is not a readable tar"),
    "downgrade": (lambda _: {"running": "0.10.0"}, "downgrade: 0.2.0 is older than the running"),
    "same version": (lambda _: {"running": "0.2.0"}, "same version: 0.2.0 is running already"),
    "little disk": (lambda _: {"free_bytes": 10}, "not enough disk: installing needs 1 MB"),
}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_archive_is_refused_in_one_line_and_changes_nothing(
    tmp_path: Path, case: str
) -> None:
    spoil, reason = REFUSALS[case]
    archive = _build(tmp_path)
    options = spoil(archive)
    before = _snapshot(tmp_path)
    with pytest.raises(update.Refused) as refused:
        _check(archive, **options)
    message = str(refused.value)
    assert message.startswith(reason), message
    assert "\n" not in message
    assert _snapshot(tmp_path) == before


def test_versions_compare_as_numbers() -> None:
    assert update.parse_version("0.10.0") > update.parse_version("0.9.1")
    with pytest.raises(update.Refused, match=r"wrong format: version '1\.0-beta'"):
        update.parse_version("1.0-beta")


def test_the_shipped_release_key_and_the_tests_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(update.KEY_ENV, raising=False)
    shipped = update.release_public_key()
    assert update.key_id(shipped) != update.key_id(KEY.public_key())
    pem = tmp_path / "release_key.pem"
    pem.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    monkeypatch.setenv(update.KEY_ENV, str(pem))
    assert update.key_id(update.release_public_key()) == update.key_id(KEY.public_key())


def test_the_release_command_signs_with_the_key_it_is_given(tmp_path: Path) -> None:
    key = tmp_path / "release.key"
    key.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files = [str(path) for path in _files(tmp_path, "0.3.0")]
    command = [sys.executable, "-m", "balancer.release", "--key", str(key), "--out"]
    done = subprocess.run(
        [*command, str(tmp_path / "dist"), *files], capture_output=True, text=True, check=True
    )
    archive = Path(done.stdout.strip())
    assert archive == tmp_path / "dist" / "balancer-0.3.0.tar"
    assert _check(archive).version == "0.3.0"
    # Without its own wheel there is no release to name: one line, no traceback.
    failed = subprocess.run(
        [*command, str(tmp_path / "dist"), files[-1]], capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert failed.stderr == "release: the files hold no Balancer wheel, or more than one\n"


def _balancer(*args: str, key: Path | None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env = {**clean, update.KEY_ENV: str(key)} if key else clean
    return subprocess.run(
        [sys.executable, "-m", "balancer", *args], capture_output=True, text=True, env=env
    )


def test_balancer_update_check(tmp_path: Path) -> None:
    archive = release.build(_files(tmp_path, "99.0.0"), KEY, tmp_path / "dist")
    pem = tmp_path / "release_key.pem"
    pem.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    running = metadata.version("balancer")
    done = _balancer("update", "check", str(archive), "--dir", str(tmp_path), key=pem)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"balancer-99.0.0.tar: Balancer 99.0.0 may replace {running};")
    # The key the package ships did not sign it.
    refused = _balancer("update", "check", str(archive), "--dir", str(tmp_path), key=None)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: refused: unknown key: the archive is signed by key")
    assert refused.stderr.count("\n") == 1
    wrong = tmp_path / "wrong.sha256"
    wrong.write_text("0" * 64 + "  balancer-99.0.0.tar\n")
    refused = _balancer("update", "check", str(archive), str(wrong), key=pem)
    assert refused.stderr.startswith("error: refused: bad checksum: the archive's SHA-256 is")
