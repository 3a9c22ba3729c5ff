"""Schemathesis against the control plane's own OpenAPI spec, as an admin and as a tenant.

Bounded (a few examples per operation, no deadline): every generated request, valid or not,
gets a non-5xx answer whose body matches the documented schema when it is a success.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

from npucenter.api import create_app  # noqa: E402
from npucenter.settings import Settings  # noqa: E402

ADMIN_KEY = "npc_contract_admin_key_0123456789"
_KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def contract_app(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("contract")
    app = create_app(Settings(data_dir=tmp, admin_key=ADMIN_KEY))
    from fastapi.testclient import TestClient

    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        admin.post("/api/servers", json={"name": "rngd-0", "device_type": "rngd", "num_cards": 8})
        admin.post("/api/tenants", json={"name": "acme", "kind": "company"})
        admin.put("/api/quotas", json={"tenant": "acme", "device_type": "rngd", "nominal_cards": 4})
        _KEYS["tenant"] = admin.post("/api/keys", json={"tenant": "acme"}).json()["key"]
    _KEYS["admin"] = ADMIN_KEY
    yield app
    app.state.control.db.dispose()


_BOUNDED = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def _walk(app, who: str) -> int:
    """Run every operation's generated cases as ``who``; the number of operations."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {_KEYS[who]}"}
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:

        @_BOUNDED
        @given(case=operation.as_strategy())
        def run(case) -> None:
            case.call_and_validate(headers=headers, checks=checks)

        run()
    return len(operations)


@pytest.mark.slow
@pytest.mark.parametrize("who", ["admin", "tenant"])
def test_the_api_honours_its_spec(contract_app, who: str) -> None:
    assert _walk(contract_app, who) >= 20  # every control-plane operation was exercised
