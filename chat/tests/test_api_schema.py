"""The OpenAPI schema: generated from the code, committed as docs/openapi.yaml (CI fails when
they drift apart), valid OpenAPI 3, served with interactive docs, and fuzzed by schemathesis
against a running Parley."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness.embedded import running_parley
from tests.harness.processes import PYTHON, REPO, base_env

COMMITTED = REPO / "docs" / "openapi.yaml"
REGENERATE = "python manage.py spectacular --file docs/openapi.yaml"


def spectacular(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", "spectacular", *args],
        cwd=REPO,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_committed_schema_matches_the_code():
    # To stdout (drf-spectacular's `--file -` would write a file named "-").
    generated = spectacular()
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout == COMMITTED.read_text(), (
        f"docs/openapi.yaml is out of date with the API: run `{REGENERATE}` and commit it"
    )


def test_the_schema_is_valid_openapi_and_generates_without_warnings():
    result = spectacular("--validate", "--fail-on-warn", "--file", "/dev/null")
    assert result.returncode == 0, result.stderr


def test_the_schema_is_served(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/conversations/{conversation_id}/messages" in schema["paths"]
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_the_docs_page_uses_local_assets_and_relaxes_csp_for_styles_only(client, db):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "https://" not in html and "http://" not in html  # nothing from a CDN
    assert "<script>" not in html  # the start-up script is a file (?script)
    directives = dict(
        part.strip().split(" ", 1) for part in page["Content-Security-Policy"].split(";")
    )
    assert directives["style-src"] == "'self' 'unsafe-inline'"
    assert directives["script-src"] == "'self'"
    script = client.get("/api/docs/?script")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
    # Every other page keeps the strict policy.
    assert "unsafe-inline" not in client.get("/api/schema/")["Content-Security-Policy"]
    assert "unsafe-inline" not in client.get("/healthz")["Content-Security-Policy"]


def test_swagger_ui_assets_are_served_by_the_app(client, settings):
    from django.contrib.staticfiles import finders

    for name in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert finders.find(f"drf_spectacular_sidecar/swagger-ui-dist/{name}"), name


@pytest.fixture(scope="module")
def parley(tmp_path_factory):
    with running_parley(tmp_path_factory.mktemp("schemathesis")) as server:
        yield server


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_schemathesis_with_all_checks_finds_nothing(parley, tmp_path):
    """Property-based requests from the served schema, with an API key: no 5xx, every
    response documented and matching its schema. Bounded: few examples per operation and a
    time budget."""
    # Some real objects to find (conversations 1.., messages 1..) besides random ids.
    with httpx.Client(
        base_url=parley.url, headers={"Authorization": f"Bearer {parley.key}"}
    ) as http:
        for n in range(3):
            conversation = http.post("/api/v1/conversations", json={"title": f"Fuzz {n}"}).json()
            sent = http.post(
                f"/api/v1/conversations/{conversation['id']}/messages", json={"text": f"hi {n}"}
            )
            assert sent.status_code == 201, sent.text
    # HTTP lets any client or proxy add headers: an unknown header is not bad input, so the
    # coverage phase must not send one and expect a 400 (it would for the stream's
    # Last-Event-ID parameter). Request bodies stay closed and are checked for it.
    # A reused Idempotency-Key with another body is 422 (docs/api.md, as the IETF draft says):
    # the fuzzer reuses keys, so 422 is an expected answer to a valid request there.
    (tmp_path / "schemathesis.toml").write_text(
        '[[operations]]\ninclude-operation-id = "message_stream"\n'
        "generation.allow-extra-parameters = false\n"
        '\n[[operations]]\ninclude-operation-id = ["message_send", "message_edit"]\n'
        "checks.positive_data_acceptance.expected-statuses = "
        '["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]\n'
        # Uploads are left out here and tested in chat/tests/test_documents_api.py: a multipart
        # body Twisted cannot parse (e.g. no parts at all) is refused by Daphne's HTTP layer
        # itself (twisted.web.http.Request parses multipart bodies before the ASGI app sees
        # them) with a bare 400 and no headers, never reaching Django, and "exactly one of
        # conversation and collection" is beyond a multipart schema schemathesis can generate.
        '\n[[operations]]\ninclude-operation-id = "document_upload"\nenabled = false\n'
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{parley.url}/api/schema/",
            "--header",
            f"Authorization: Bearer {parley.key}",
            # Every check schemathesis has, the stateful and negative-data ones included.
            "--checks",
            "all",
            "--max-examples",
            "10",
            "--max-time",
            "150",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "6",
            "--workers",
            "2",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=base_env(SCHEMATHESIS_HOOKS=""),
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:] + "\n--- daphne ---\n" + parley.log()[-4000:]
    assert "Traceback" not in parley.log(), parley.log()[-6000:]
