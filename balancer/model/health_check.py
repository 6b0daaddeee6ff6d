"""How the appliance decides that a real server is fit for clients."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from balancer import defaults
from balancer.model.types import Frozen, Port


class CheckType(StrEnum):
    NONE = "none"  # always healthy
    CONNECT = "connect"  # TCP connect to the check port
    HTTP = "http"  # negotiate HTTP: request the path, expect the string
    HTTPS = "https"  # the same over TLS; the server's certificate is not verified
    EXTERNAL = "external"  # a script; exit status 0 is healthy


class HttpMethod(StrEnum):
    GET = "GET"
    HEAD = "HEAD"


NEGOTIATE = (CheckType.HTTP, CheckType.HTTPS)


class HealthCheck(Frozen):
    type: CheckType = CheckType(defaults.CHECK_TYPE)
    method: HttpMethod = HttpMethod(defaults.CHECK_METHOD)
    path: str | None = Field(default=None, description="the guide's Request to Send")
    expect: str | None = Field(default=None, description="the guide's Response Expected")
    port: Port | None = Field(default=None, description="Check Port; None: the server's port")
    script: str | None = Field(default=None, description="path of an external check script")
    also_check_service_port: bool = Field(
        default=False,
        description="also require a TCP connect to the service port (CyberArk's recommendation)",
    )
    interval: float = Field(default=defaults.CHECK_INTERVAL, ge=0.1, le=3600)
    timeout: float = Field(default=defaults.CHECK_TIMEOUT, ge=0.1, le=3600)
    rise: int = Field(default=defaults.CHECK_RISE, ge=1, le=100)
    fall: int = Field(default=defaults.CHECK_FALL, ge=1, le=100)

    def port_for(self, service_port: int) -> int:
        """Where the check connects for a server serving on ``service_port``."""
        return self.port or service_port

    @model_validator(mode="after")
    def _workable(self) -> Self:
        if self.type in NEGOTIATE:
            if not self.path:
                raise ValueError(f"path: a negotiate {self.type.upper()} check needs a path")
            if not self.path.startswith("/") or not all("!" <= c <= "~" for c in self.path):
                raise ValueError(
                    "path: must start with / and be printable ASCII without spaces "
                    "(percent-encode anything else)"
                )
            if self.method is HttpMethod.HEAD and self.expect:
                raise ValueError("expect: a HEAD request has no body to find the string in")
        elif self.path or self.expect:
            field = "path" if self.path else "expect"
            raise ValueError(f"{field}: only negotiate HTTP/HTTPS checks send a request")
        if self.type is CheckType.NONE and self.also_check_service_port:
            raise ValueError("also_check_service_port: needs a check type other than none")
        if self.type is CheckType.EXTERNAL and not self.script:
            raise ValueError("script: an external check needs the path of a script")
        if self.type is not CheckType.EXTERNAL and self.script:
            raise ValueError("script: only an external check runs a script")
        if self.expect is not None and any(c in self.expect for c in "\r\n"):
            raise ValueError("expect: must be one line")
        return self
