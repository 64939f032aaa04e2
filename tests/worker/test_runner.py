"""The soft time limit of an item: its own expiry fails the item as `timeout`, and nothing else
does."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from longtask.config import Settings
from longtask.core.errors import PermanentError
from longtask.core.kinds import Kind
from longtask.worker.runner import _call


def _ctx() -> Any:
    return SimpleNamespace(settings=Settings())


async def test_an_item_past_its_soft_limit_fails_as_timeout() -> None:
    async def slow(ctx: Any, payload: Any) -> None:
        await asyncio.sleep(10)

    with pytest.raises(PermanentError) as failed:
        await _call(Kind("slow", slow, timeout=0.05), _ctx(), None)
    assert failed.value.code == "timeout"


async def test_a_timeout_from_below_is_not_the_items_own() -> None:
    # asyncpg's command_timeout raises TimeoutError too: a statement that waited that long on a
    # lock (a frozen worker's, say) is a backing service's trouble, handed back to run again,
    # not the item's fault to fail it as having taken longer than its limit
    async def waits_on_postgres(ctx: Any, payload: Any) -> None:
        raise TimeoutError

    with pytest.raises(TimeoutError):
        await _call(Kind("db", waits_on_postgres, timeout=60), _ctx(), None)
