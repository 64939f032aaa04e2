"""Params checked at submit against the kind's declared JSON Schema: a 422 `invalid_params` that
names the field, for every built-in public kind and for a kind of the user's own
(tests/kinds_for_tests.py `test.typed`), at POST /tasks and POST /schedules alike, and no task
or schedule made; params that fit are taken, and the kind runs with them."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from tests.conftest import Tenant
from tests.jobs.test_schedules import EVERY_2S, tasks_of
from tests.support import wait_for, wait_status

IDS = [str(uuid.uuid4()) for _ in range(51)]

# name -> (kind, params, what the detail says: each part must be in it)
BAD: dict[str, tuple[str, Any, list[str]]] = {
    "demo with 10,001 steps": ("demo", {"steps": 10_001},
                               ["`params.steps`: must be at most 10000"]),
    "demo with steps as text": ("demo", {"steps": "5"},
                                ["`params.steps`: must be a whole number"]),
    "demo with steps of true": ("demo", {"steps": True},
                                ["`params.steps`: must be a whole number"]),
    "demo with a delay below 0": ("demo", {"delay": -0.5}, ["`params.delay`: must be at least 0"]),
    "demo with a misspelt field": ("demo", {"step": 5}, [
        "`params.step`: is not a parameter of `demo`; it takes steps, delay"]),
    "demo with params not an object": ("demo", [5], ["`params`: must be an object"]),
    "noop with a param": ("noop", {"n": 1}, ["`params.n`: is not a parameter of `noop`"]),
    "agent without a question": ("agent", {"max_steps": 3}, ["`params.question`: is required"]),
    "agent with a blank question": ("agent", {"question": " \n "},
                                    ["`params.question`: must not be blank"]),
    "agent with 21 steps": ("agent", {"question": "why?", "max_steps": 21},
                            ["`params.max_steps`: must be at most 20"]),
    "agent with a step timeout of 0": ("agent", {"question": "why?", "step_timeout": 0},
                                       ["`params.step_timeout`: must be at least 1"]),
    "agent with an id that is not one": ("agent", {"question": "q", "document_ids": [
        IDS[0], "../etc"]}, ["`params.document_ids[1]`: must be a UUID"]),
    "agent over 51 documents": ("agent", {"question": "q", "document_ids": IDS},
                                ["`params.document_ids`: must hold at most 50 items"]),
    "generate with neither prompts nor documents": ("generate", {"system": "be brief"},
                                                    ["`params`: needs `prompts` or `summarise`"]),
    "generate with both": ("generate", {"prompts": ["a"], "summarise": IDS[:1]},
                           ["`params`: takes only one of `prompts` or `summarise`"]),
    "generate with a prompt that is no text": ("generate", {"prompts": ["ok", 7]},
                                               ["`params.prompts[1]`: must be a string"]),
    "generate with no prompts": ("generate", {"prompts": []},
                                 ["`params.prompts`: must hold at least 1 item"]),
    "generate a summary of a non-id": ("generate", {"summarise": ["readme.pdf"]},
                                       ["`params.summarise[0]`: must be a UUID"]),
    "user kind, a colour it does not take": ("test.typed", {"colour": "pink", "count": 1}, [
        '`params.colour`: must be one of "red", "green", "blue"']),
    "user kind, a tag through its $ref": ("test.typed", {"colour": "red", "count": 1,
                                                         "tags": ["Warm"]},
                                          ["`params.tags[0]`: must match the pattern ^[a-z]+$"]),
    "user kind, two fields wrong": ("test.typed", {"count": 9}, [
        "`params.colour`: is required", "`params.count`: must be at most 5"]),
}


@pytest.mark.parametrize("name", list(BAD))
async def test_bad_params_are_refused_at_submit_naming_the_field(name: str,
                                                                 tenant_a: Tenant) -> None:
    kind, params, said = BAD[name]
    for path, body in (("/tasks", {"kind": kind, "params": params}),
                       ("/schedules", {"kind": kind, "params": params, "cron": "0 * * * *"})):
        answer = await tenant_a.client.post(path, json=body)
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["error"] == "invalid_params", (path, answer.text)
        for part in said:
            assert part in answer.json()["detail"], (path, answer.json()["detail"])
    assert (await tenant_a.client.get("/tasks")).json()["tasks"] == []
    assert (await tenant_a.client.get("/schedules")).json()["schedules"] == []


async def test_a_value_is_never_echoed_back(tenant_a: Tenant) -> None:
    """The detail names the field and the rule, not the value: a 200 KB string stays out."""
    answer = await tenant_a.client.post("/tasks", json={"kind": "demo",
                                                        "params": {"steps": "9" * 200_000}})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "`params.steps`: must be a whole number"


async def test_params_that_fit_run_as_given(tenant_a: Tenant, live_worker: Any) -> None:
    # JSON Schema's integer takes 3.0 as well: the kind counts in whole steps all the same
    demo = await tenant_a.client.post("/tasks", json={"kind": "demo",
                                                      "params": {"steps": 3.0, "delay": 0}})
    typed = await tenant_a.client.post("/tasks", json={"kind": "test.typed", "params": {
        "colour": "blue", "count": 2, "tags": ["cold", "deep"]}})
    defaults = await tenant_a.client.post("/tasks", json={"kind": "demo", "params": {
        "delay": 0}})
    assert [a.status_code for a in (demo, typed, defaults)] == [202, 202, 202]
    done = [await wait_status(tenant_a.client, a.json()["id"], {"completed", "failed"})
            for a in (demo, typed, defaults)]
    assert [t["status"] for t in done] == ["completed"] * 3, done
    assert done[0]["result"] == {"steps": 3}
    assert done[1]["result"] == {"colour": "blue", "count": 2, "tags": ["cold", "deep"]}
    assert done[2]["result"] == {"steps": 10}  # the schema's default


async def test_a_schedule_takes_params_that_fit(tenant_a: Tenant) -> None:
    made = await tenant_a.client.post("/schedules", json={
        "kind": "test.typed", "params": {"colour": "green", "count": 5}, "cron": "0 * * * *"})
    assert made.status_code == 201, made.text
    assert made.json()["params"] == {"colour": "green", "count": 5}


async def test_a_schedule_whose_params_stopped_fitting_makes_no_task_and_says_why(
        tenant_a: Tenant, live_worker: Any, pool: asyncpg.Pool) -> None:
    """Params are checked again at each firing: a schedule made before its kind's schema
    changed (here: its row rewritten) records `invalid_params` rather than starting a task
    that would fail in a worker."""
    made = (await tenant_a.client.post("/schedules", json={
        "kind": "test.typed", "params": {"colour": "red", "count": 1}, "cron": EVERY_2S})).json()
    await tenant_a.client.post(f"/schedules/{made['id']}/pause")
    await pool.execute("UPDATE schedules SET params = $1 WHERE id = $2",
                       {"colour": "pink", "count": 1}, made["id"])
    before = len(await tasks_of(tenant_a.client, made["id"]))
    await tenant_a.client.post(f"/schedules/{made['id']}/resume")

    async def refused() -> dict[str, Any] | None:
        shown = (await tenant_a.client.get(f"/schedules/{made['id']}")).json()
        return shown["last_error"]

    error = await wait_for(refused, timeout=15, what="a firing of the schedule")
    assert error["code"] == "invalid_params"
    assert '`params.colour`: must be one of "red", "green", "blue"' in error["message"]
    assert len(await tasks_of(tenant_a.client, made["id"])) == before
