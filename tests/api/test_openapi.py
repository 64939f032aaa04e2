"""GET /openapi.json describes every route, and a bounded schemathesis run against the live
server (real web and worker processes) finds no 5xx and no answer that breaks the schema."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx

from longtask.kinds import agent, generate, trial
from longtask.web import openapi
from longtask.web.routes import documents, ops, schedules, stream, tasks
from tests.support import wait_for

CHECKS = ("not_a_server_error,response_schema_conformance,status_code_conformance,"
          "content_type_conformance")


async def test_the_document_names_every_route(web: Any) -> None:
    async with httpx.AsyncClient(base_url=web.url) as client:
        described = (await client.get("/openapi.json")).json()
    assert described["openapi"].startswith("3.1")
    served = {(method.lower(), route.path)
              for route in [*tasks.routes, *stream.routes, *schedules.routes, *documents.routes,
                            *ops.routes, *openapi.routes]
              for method in route.methods or () if method != "HEAD"}
    listed = {(method, path) for path, ops_ in described["paths"].items() for method in ops_}
    assert listed == served
    kinds = submittable(described)
    assert "demo" in kinds and "test.echo" in kinds and "ingest" not in kinds  # public ones


def submittable(described: dict[str, Any], path: str = "/tasks") -> dict[str, Any]:
    """kind -> the schema of its body at POST `path`: the `oneOf` branch for it."""
    body = described["paths"][path]["post"]["requestBody"]["content"]["application/json"][
        "schema"]
    branches = [_resolve(described, b) for b in body["oneOf"]]
    mapping = body["discriminator"]["mapping"]
    assert [b["properties"]["kind"]["const"] for b in branches] == list(mapping)
    return {b["properties"]["kind"]["const"]: b for b in branches}


def _resolve(described: dict[str, Any], node: dict[str, Any]) -> Any:
    if "$ref" not in node:
        return node
    found: Any = described
    for part in node["$ref"].removeprefix("#/").split("/"):
        found = found[part]
    return found


async def test_each_kind_publishes_the_params_schema_it_is_checked_with(web: Any) -> None:
    async with httpx.AsyncClient(base_url=web.url) as client:
        described = (await client.get("/openapi.json")).json()
    for path in ("/tasks", "/schedules"):
        kinds = submittable(described, path)
        for declared in (agent.agent, generate.generate, trial.demo, trial.noop):
            assert declared.params_schema is not None
            published = _resolve(described, kinds[declared.name]["properties"]["params"])
            assert published == declared.params_schema, declared.name
            needs_params = "params" in kinds[declared.name]["required"]
            assert needs_params == bool(declared.params_schema.get("required")), declared.name
        if path == "/schedules":
            assert "cron" in kinds["demo"]["required"]
        # a user's kind: its local $ref now points where the schema sits in the document
        typed = _resolve(described, kinds["test.typed"]["properties"]["params"])
        tag = typed["properties"]["tags"]["items"]
        assert _resolve(described, tag) == {"type": "string", "pattern": "^[a-z]+$"}
        # a kind that declares none takes any JSON
        assert kinds["test.echo"]["properties"]["params"].keys() == {"description"}
    examples = described["paths"]["/tasks"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]
    assert examples["demo"]["value"] == {"kind": "demo", "params": {"steps": 5, "delay": 0.1}}
    assert {"agent", "generate", "demo", "noop", "test.typed"} <= set(examples)


async def test_the_trial_kinds_are_off_unless_asked_for(make_stack: Any) -> None:
    """`demo` (10,000 steps of 60 s at a tenant's whim) and `noop` exist only where a deployment
    turns them on: LONGTASK_TRIAL_KINDS=1, LONGTASK_EMBEDDED=1, `longtask dev`."""
    stack = await make_stack(LONGTASK_TRIAL_KINDS="0")
    for name in ("demo", "noop"):
        refused = await stack.client.post("/tasks", json={"kind": name, "params": {}})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "unknown_kind"
    described = (await stack.client.get("/openapi.json")).json()
    kinds = submittable(described)
    assert "demo" not in kinds and "noop" not in kinds and "test.echo" in kinds


async def test_schemathesis_finds_no_5xx_and_no_schema_violation(make_stack: Any,
                                                                 tmp_path: Path) -> None:
    # a stack with only the built-in kinds: fuzzed submissions must not start endless tasks
    stack = await make_stack(LONGTASK_KINDS="", LONGTASK_RATE_LIMIT="off")

    async def model_loaded() -> bool:  # the worker loads its embedding model in the background;
        # on a busy machine that outlasts the 10 s query-embedding wait (503 no_worker), which
        # is a cold start, not a bug: fuzz the API once the model answers
        return (await stack.client.get("/search", params={"q": "warm"})).status_code == 200

    await wait_for(model_loaded, timeout=120, what="the worker's embedding model", interval=1)
    # one worker thread: with two, hypothesis can run ast.parse in both at once, and CPython
    # 3.11.7 then may raise "SystemError: AST constructor recursion depth mismatch" (its AST
    # recursion tracking, gh-106905, fixed in 3.11.8); it crashed schemathesis in a CI run
    command = [
        str(Path(sys.executable).with_name("st")), "run", f"{stack.web.url}/openapi.json",
        "--header", f"Authorization: Bearer {stack.key}", "--checks", CHECKS,
        "--max-examples", "50", "--seed", "1", "--workers", "1", "--request-timeout", "20",
        "--phases", "examples,coverage,fuzzing", "--generation-database", "none",
        "--exclude-path", "/tasks/{id}/events",  # an endless stream; tests/api/test_stream.py
        "--report", "junit", "--report-dir", str(tmp_path), "--no-color"]
    run = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(run.communicate(), timeout=600)
    text = output.decode(errors="replace")
    assert run.returncode == 0, text[-6000:]
    assert "passed" in text.lower()
