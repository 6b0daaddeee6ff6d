"""The API against its own OpenAPI schema: schemathesis makes requests from the schema, valid
and not, and no answer may be a server error or break the schema's promises (status codes,
content types, response bodies and headers; invalid data must be refused).

One check is left out: that data valid by the schema is accepted. A configuration can be
well-formed and still wrong (a port clash, a label used twice), and the API refuses it with
the field and the reason; the schema cannot say that.

It runs in process on a fake engine, as the trusted local caller so that every route is
reached (the gate has tests of its own). The number of examples is bounded so the run stays
short; the database is real, on disk.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.webapp import webapp

EXAMPLES = 25


def _openapi() -> dict[str, Any]:
    """The schema does not depend on what is stored: any store will do to make it."""
    with tempfile.TemporaryDirectory() as folder, webapp(Path(folder)) as app:
        return app.local.get("/api/v1/openapi.json").json()  # type: ignore[no-any-return]


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture
def local(tmp_path: Path) -> Iterator[TestClient]:
    with webapp(tmp_path) as app:
        yield app.local


def _for_httpx(request: dict[str, Any]) -> dict[str, Any]:
    """schemathesis's arguments in the form httpx takes without a deprecation warning."""
    request = dict(request)
    if not request.get("cookies"):  # the API takes none
        request.pop("cookies", None)
    if isinstance(request.get("data"), bytes | str):
        request["content"] = request.pop("data")
    return request


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_makes_a_server_error(case: Any, local: TestClient) -> None:
    request = case.as_transport_kwargs(base_url=str(local.base_url))
    response = local.request(**_for_httpx(request))
    case.validate_response(
        response, transport_kwargs=request, excluded_checks=[positive_data_acceptance]
    )
