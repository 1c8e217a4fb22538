"""The API's own OpenAPI document, fuzzed with schemathesis: no 5xx, and
every response conforms to the document (status codes, content types, bodies)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.node.app import create_app
from remembrancer.node.config import Limits
from remembrancer.node.runtime import Node
from remembrancer.storage import open_store

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
EXAMPLES = int(os.environ.get("REMEMBRANCER_FUZZ_EXAMPLES", "25"))


def _app():  # type: ignore[no-untyped-def]
    node = Node(
        store=open_store("memory://"),
        node_key=SigningKey.generate(),
        origin_prefix="fuzz.test",
        namespaces=StaticNamespaces(parse_namespaces(yaml.safe_load(EXAMPLE.read_text()))),
        limits=Limits(client_rate=1e9, client_burst=10**9),
        admin_token="fuzz-admin-token-0123456789",
    )
    asyncio.run(node.start())
    node.sequencer.append_raw("dao:vaultmesh", [b"entry %d" % i for i in range(300)])
    return create_app(node, manage_node=False)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case) -> None:
    # Schema-valid is not enough to be admitted: a record must carry valid
    # signatures, a witness request a verifying checkpoint.  Every other check
    # runs, "no 5xx" and "response matches the document" among them.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
