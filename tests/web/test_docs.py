"""/docs: Swagger UI from the installed package (no CDN), public like /openapi.json; in Debian's
chromium it renders the document, lists each kind with its params under POST /tasks, and its
"Try it out" shows the API's 422 naming the field. Screenshots in test-artifacts/."""

from __future__ import annotations

import json

import httpx
import pytest

from longtask.kinds import agent, generate, trial
from tests import kinds_for_tests
from tests.conftest import Tenant
from tests.support import Web
from tests.web.driver import ARTIFACTS, Scenario

pytestmark = pytest.mark.timeout(300)
REFUSED = "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"


async def test_the_page_and_its_files_need_no_key(web: Web) -> None:
    async with httpx.AsyncClient(base_url=web.url) as anonymous:
        page = await anonymous.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for path in ("/docs/start.js", "/docs/ui/swagger-ui-bundle.js", "/docs/ui/swagger-ui.css"):
            asset = await anonymous.get(path)
            assert asset.status_code == 200, path
            assert asset.headers["content-type"].split(";")[0] in (
                "text/javascript", "application/javascript", "text/css"), path
        # what the page loads is served here: nothing from another origin
        assert "//" not in page.text


async def test_docs_lists_each_kind_with_its_params_in_the_browser(web: Web,
                                                                   tenant_a: Tenant) -> None:
    async with Scenario("docs.mjs", web, tenant_a.key,
                        DASHBOARD_ARTIFACTS=str(ARTIFACTS)) as page:
        seen = await page.seen()

    assert seen["title"].split()[0] == "longtask" and "OAS 3.1" in seen["title"]
    described = (await tenant_a.client.get("/openapi.json")).json()
    public = list(described["paths"]["/tasks"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["discriminator"]["mapping"])
    shown = {k["kind"]: k for k in seen["kinds"]}
    assert list(shown) == public and "ingest" not in shown
    for declared in (agent.agent, generate.generate, trial.demo, trial.noop,
                     kinds_for_tests.typed):  # each built-in public kind, and a user's
        assert declared.params_schema is not None
        assert shown[declared.name]["params"] == list(declared.params_schema["properties"])
        assert shown[declared.name]["hidden"] == [], shown[declared.name]
    assert shown["agent"]["params"][0] == "question" and "steps" in shown["demo"]["params"]
    assert shown["test.echo"]["params"] == []  # it declares none: any JSON
    assert seen["examples"] == ["agent", "demo", "generate", "noop", "test.typed"]

    # "Try it out" with the key: the API's answer, naming the field, shown in the page
    assert seen["tried"]["status"] == "422"
    assert json.loads(seen["tried"]["body"]) == {
        "error": "invalid_params", "detail": "`params.steps`: must be at most 10000"}
    assert (await tenant_a.client.get("/tasks")).json()["tasks"] == []

    assert seen["foreign_requests"] == []  # no CDN, and no online validator
    assert seen["page_errors"] == [] and seen["console_errors_before_trying"] == []
    assert seen["console_errors"] == [REFUSED], seen["console_errors"]
    for shot in ("docs.png", "docs-params.png", "docs-tried.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000
