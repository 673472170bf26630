"""Schemathesis against the REST routes: generated requests (valid and invalid, with and
without a key) never get a server error, and every error body has OpenAI's shape."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from openrealtime.config import Settings
from openrealtime.server.app import create_app
from openrealtime.server.auth import KeyStore
from tests.support import ServerProcess

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("OPENREALTIME_SCHEMA_EXAMPLES", "25"))
RAW_SCHEMA = create_app(Settings(), keys=KeyStore(["unused"]), engines=lambda: None).openapi()  # type: ignore[arg-type, return-value]
schema = schemathesis.openapi.from_dict(RAW_SCHEMA)


@pytest.fixture(scope="module")
def auth(text_server: ServerProcess) -> dict[str, Any]:
    return {"base_url": text_server.url, "headers": {"Authorization": f"Bearer {text_server.api_key}"}}


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_openai_error_bodies(case: Any, text_server: ServerProcess) -> None:
    for headers in ({"Authorization": f"Bearer {text_server.api_key}"}, {}):
        response = case.call(base_url=text_server.url, headers=headers, timeout=30)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
        content_type = response.headers.get("content-type") or ""
        if isinstance(content_type, list):
            content_type = content_type[0] if content_type else ""
        if response.status_code >= 400 and content_type.startswith("application/json"):
            assert "error" in response.json(), (
                case.method,
                case.path,
                response.status_code,
                response.text[:300],
            )
            error = response.json()["error"]
            assert {"message", "type", "param", "code"} <= set(error), error
        if not headers and case.path != "/healthz":
            assert response.status_code in (401, 403, 404, 405, 413, 422), (case.path, response.status_code)
