"""longtask.service.params on its own: a schema that is not JSON Schema stops the start, naming
the kind; formats are checked; an answer names at most MAX_PROBLEMS fields."""

from __future__ import annotations

from typing import Any

import pytest

from longtask.core.errors import ConfigError, Unacceptable
from longtask.core.kinds import Kind, Registry, kind
from longtask.service import params


def _kind(schema: dict[str, Any], name: str = "k") -> Kind:
    async def handler(ctx: Any, payload: Any) -> None:
        return None

    return kind(name, params_schema=schema)(handler)


def _detail(k: Kind, value: Any) -> str:
    with pytest.raises(Unacceptable) as refused:
        params.check(k, value)
    assert refused.value.code == "invalid_params"
    return str(refused.value.detail)


def test_a_schema_that_is_not_json_schema_stops_the_start() -> None:
    broken = Registry([_kind({"type": "object", "properties": {"n": {"type": "count"}}},
                             "broken")])
    with pytest.raises(ConfigError, match="kind 'broken': its params_schema is not valid JSON "
                                          "Schema: .*\\(at properties/n/type\\)"):
        params.check_schemas(broken)
    with pytest.raises(ConfigError, match="kind 'bad-regex'"):
        params.check_schemas(Registry([_kind({"pattern": "("}, "bad-regex")]))
    with pytest.raises(ConfigError, match="not a dict|a JSON Schema"):
        kind("listed", params_schema=["type", "object"])  # type: ignore[arg-type]


def test_formats_are_checked_with_the_standard_library() -> None:
    k = _kind({"type": "object", "properties": {"at": {"type": "string", "format": "date-time"},
                                                "id": {"type": "string", "format": "uuid"}}})
    params.check(k, {"at": "2030-01-01T09:00:00Z", "id": "0d5c1c2e-7ad3-4b8c-9f0e-2b1d0f6c4a11"})
    assert _detail(k, {"at": "2030-01-01T09:00:00"}) == \
        "`params.at`: must be a time with a timezone (ISO 8601)"
    assert _detail(k, {"at": "tomorrow"}) == \
        "`params.at`: must be a time with a timezone (ISO 8601)"
    assert _detail(k, {"id": "0d5c1c2e7ad34b8c9f0e2b1d0f6c4a11"}) == "`params.id`: must be a UUID"


def test_at_most_five_fields_are_named_and_odd_keys_are_quoted() -> None:
    k = _kind({"type": "object", "additionalProperties": {"type": "integer"}})
    detail = _detail(k, {f"key {n}": "x" for n in range(9)})
    assert detail.count("must be a whole number") == params.MAX_PROBLEMS
    assert detail.startswith('`params["key 0"]`: must be a whole number; ')


def test_a_kind_without_a_schema_takes_any_json() -> None:
    async def handler(ctx: Any, payload: Any) -> None:
        return None

    free = kind("free")(handler)
    assert [i.payload for i in params.items_of(free, [1, "two"])] == [[1, "two"]]
