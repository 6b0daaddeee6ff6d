"""A client of the appliance's REST API, used by the ``balancer`` command and the tests."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import httpx


def api_socket(data_dir: Path) -> Path:
    """Where the management daemon's API listens: a Unix socket only root can reach."""
    return data_dir / "api.sock"


class ApiError(Exception):
    """The appliance said no (the message names the field and reason) or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, socket_path: Path, user: str | None = None, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://balancer/api/v1",
            headers={"X-Balancer-User": user or getpass.getuser()},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        # httpx leaks its socket when the path is missing; say so before it tries.
        if not self.socket_path.exists():
            raise ApiError(self._unreachable("no such socket"))
        try:
            response = self._http.request(
                method, path, json=body, params={k: v for k, v in params.items() if v is not None}
            )
        except httpx.TransportError as error:
            raise ApiError(self._unreachable(str(error))) from None
        if response.status_code >= 400:
            raise ApiError(_explain(response), response.status_code)
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("text/plain"):
            return response.text
        return response.json()

    def _unreachable(self, why: str) -> str:
        return (
            f"cannot reach the appliance at {self.socket_path} ({why}): "
            "is `balancer serve` running, and is --dir right?"
        )

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, **params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.call("POST", path, body, **params)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def _explain(response: httpx.Response) -> str:
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text.strip()[:200]}"
    if isinstance(detail, list):
        return "; ".join(
            f"{item['field']}: {item['reason']}" if item.get("field") else str(item["reason"])
            for item in detail
        )
    return str(detail)
