"""Using an appliance from elsewhere: ``balancer --url https://lb.example:9443 ...``, over HTTPS
with an API key. The key is read from a file or the environment, never from the command line,
where anyone on the machine could read it in the process list."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from balancer.cli.answer import fail
from balancer.client import Remote

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="BALANCER_URL",
        help="an appliance elsewhere, e.g. https://lb.example:9443, used with an API key; "
        "default: this machine's, found with --dir",
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="BALANCER_KEY_FILE",
        help="the file holding the API key for --url; default: $BALANCER_API_KEY",
    ),
]
CaFileOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        envvar="BALANCER_CA_FILE",
        help="trust the certificate in this file: the appliance's own, or the authority's "
        "that signed it",
    ),
]
FingerprintOption = Annotated[
    str | None,
    typer.Option(
        "--fingerprint",
        envvar="BALANCER_FINGERPRINT",
        help="trust the appliance's certificate if its SHA-256 fingerprint is this",
    ),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure", help="trust any certificate: anyone on the way could take the API key"
    ),
]
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RemoteOptions:
    url: str
    key_file: Path | None
    ca_file: Path | None
    fingerprint: str | None
    insecure: bool

    def remote(self) -> Remote:
        """The appliance these options name, or a one-line error naming the option."""
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            fail(f"--url {self.url!r}: must be https://host[:port], e.g. https://lb:9443", 2)
        if parts.path.strip("/") or parts.query:
            fail(f"--url {self.url!r}: give the appliance's address alone, without a path", 2)
        chosen = [self.ca_file is not None, self.fingerprint is not None, self.insecure]
        if sum(chosen) > 1:
            fail("--ca-file, --fingerprint and --insecure: give one of them, not several", 2)
        if self.insecure:
            typer.echo(
                "warning: --insecure: the appliance's certificate is not checked; anyone on "
                "the way could read the API key",
                err=True,
            )
        return Remote(
            f"https://{parts.netloc}",
            self._key(),
            ca=self._ca(),
            fingerprint=self._fingerprint(),
            insecure=self.insecure,
        )

    def _key(self) -> str:
        if self.key_file is None:
            key = os.environ.get("BALANCER_API_KEY", "").strip()
            if not key:
                fail(f"--url {self.url}: needs an API key, in $BALANCER_API_KEY or --key-file", 2)
            return key
        try:
            key = self.key_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            fail(f"--key-file {self.key_file}: {getattr(error, 'strerror', None) or error}", 2)
        if not key or any(c.isspace() for c in key):
            fail(f"--key-file {self.key_file}: must hold the API key alone", 2)
        return key

    def _ca(self) -> str | None:
        if self.ca_file is None:
            return None
        try:
            text = self.ca_file.read_text()
        except (OSError, UnicodeDecodeError) as error:
            fail(f"--ca-file {self.ca_file}: {getattr(error, 'strerror', None) or error}", 2)
        from cryptography import x509  # slow to import: only when a file is given

        try:
            x509.load_pem_x509_certificates(text.encode())
        except ValueError:
            fail(f"--ca-file {self.ca_file}: holds no PEM certificate that can be read", 2)
        return text

    def _fingerprint(self) -> str | None:
        if self.fingerprint is None:
            return None
        # Also as openssl prints it: "sha256 Fingerprint=AB:CD:..."
        text = self.fingerprint.rpartition("=")[2].strip().lower().replace(":", "")
        if not _HEX.match(text):
            fail(
                f"--fingerprint {self.fingerprint!r}: must be a SHA-256 fingerprint, 64 hex "
                "digits, with or without colons",
                2,
            )
        return text
