"""Property-based run of the OpenAPI schema (schemathesis): no input makes the server answer 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from llm_recommender import Recommender  # noqa: E402
from llm_recommender.server import ServerSettings, create_app  # noqa: E402

app = create_app(Recommender(backend="fake"), ServerSettings())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def lifespan():
    from fastapi.testclient import TestClient

    with TestClient(app):  # runs startup (creates the inference gate) for the whole module
        yield


# Default generation modes are positive and negative (schema-violating) bodies.
@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_server_errors(case):
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:  # every refusal is in the OpenAI error shape
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
