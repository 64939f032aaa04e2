"""A task's params checked against its kind's declared JSON Schema (`params_schema`, 2020-12)
with the `jsonschema` package: at `POST /tasks`, at `POST /schedules` and at each firing of a
schedule. Params that do not fit are Unacceptable (422 `invalid_params`), naming each field:

    `params.steps`: must be at most 10000; `params.colour`: is not a parameter of `demo` ...

The messages are our own, one per field, and never repeat the value (it may be 256 KiB)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from longtask.core.errors import ConfigError, Unacceptable
from longtask.core.kinds import Kind, Registry
from longtask.core.models import NewItem

MAX_PROBLEMS = 5  # named in one answer; the rest come once these are put right
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMBINATORS = frozenset({"oneOf", "anyOf", "allOf", "not"})
_A = {"object": "an object", "array": "a list", "string": "a string", "integer": "a whole number",
      "number": "a number", "boolean": "true or false", "null": "null"}
_FORMAT_NAMES = {"uuid": "UUID", "date-time": "time with a timezone (ISO 8601)",
                 "date": "date (YYYY-MM-DD)", "email": "email address", "ipv4": "IPv4 address",
                 "ipv6": "IPv6 address", "regex": "regular expression"}
_BOUNDS = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
           "exclusiveMaximum": "less than"}
_SIZES = {"minLength": "must be at least {} character{} long",
          "maxLength": "must be at most {} character{} long",
          "minItems": "must hold at least {} item{}", "maxItems": "must hold at most {} item{}",
          "minProperties": "must hold at least {} field{}",
          "maxProperties": "must hold at most {} field{}"}

# every format jsonschema checks with what is installed, and `date-time` (which it checks only
# with an extra package) by the standard library
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


def check_schemas(registry: Registry) -> None:
    """Compile every kind's schema: one that is not valid JSON Schema stops the process at its
    start (ConfigError), not each submit later."""
    for name in registry.names():
        found = registry.get(name)
        if found is not None and found.params_schema is not None:
            _validator(found)


def items_of(kind: Kind, params: Any) -> list[NewItem]:
    """The task's items, from params that fit the kind's schema (Unacceptable otherwise)."""
    check(kind, params)
    return kind.split(params)


def check(kind: Kind, params: Any) -> None:
    """Unacceptable (`invalid_params`) naming each field that does not fit the kind's schema."""
    if kind.params_schema is None:
        return
    found = problems(_validator(kind), params, kind.name)
    if found:
        raise Unacceptable("; ".join(found), code="invalid_params")


def problems(validator: Validator, params: Any, kind_name: str) -> list[str]:
    """What is wrong with `params`, one line per field, at most MAX_PROBLEMS: in the order of
    the fields' paths (jsonschema's own order is not stable), a `oneOf`'s after the rest."""
    found = [(error.validator in _COMBINATORS, _order(where), where, message)
             for error in validator.iter_errors(params)
             for where, message in _describe(error, kind_name)]
    said: dict[str, str] = {}
    for *_, where, message in sorted(found, key=lambda f: (f[0], f[1])):
        said.setdefault(_where(where), message)
    return [f"`{where}`: {message}" for where, message in list(said.items())[:MAX_PROBLEMS]]


@functools.cache
def _validator(kind: Kind) -> Validator:
    schema = kind.params_schema
    assert schema is not None
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        json.dumps(schema, allow_nan=False)  # it is published in /openapi.json as it is
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"kind {kind.name!r}: its params_schema is not valid JSON Schema: "
                          f"{exc.message} (at {'/'.join(map(str, exc.path)) or 'the top'})"
                          ) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"kind {kind.name!r}: its params_schema is not JSON: {exc}") from None
    return cls(schema, format_checker=FORMATS)


def _describe(error: ValidationError, kind_name: str) -> Iterator[tuple[list[Any], str]]:
    """(where, what) for one error; `required` and `additionalProperties` name each field."""
    path = list(error.absolute_path)
    keyword, value, instance = error.validator, _value(error), error.instance
    if keyword == "required" and isinstance(instance, dict):
        for name in value:
            if name not in instance:
                yield [*path, name], "is required"
    elif keyword == "additionalProperties" and isinstance(instance, dict) \
            and isinstance(error.schema, dict):
        known = list(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        fields = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        if path:
            what = "is not expected here" + (f"; known: {fields}" if known else "")
        else:
            what = f"is not a parameter of `{kind_name}`" + (f"; it takes {fields}" if known else "")
        for name in instance:
            if name not in known and not any(re.search(p, name) for p in patterns):
                yield [*path, name], what
    elif keyword in ("oneOf", "anyOf"):
        yield from _alternatives(error, kind_name)
    else:
        yield path, _message(error)


def _alternatives(error: ValidationError, kind_name: str) -> Iterator[tuple[list[Any], str]]:
    path = list(error.absolute_path)
    branches = _value(error)
    if all(isinstance(b, dict) and set(b) - {"title", "description"} == {"required"}
           for b in branches):  # one of these fields (or groups of them), e.g. generate's
        names = " or ".join(f"`{'`+`'.join(b['required'])}`" for b in branches)
        yield path, f"needs {names}" if error.context else f"takes only one of {names}"
    elif error.context:
        yield from _describe(best_match(error.context), kind_name)
    else:
        yield path, "fits more than one of the shapes it may take, and must fit one only"


def _message(error: ValidationError) -> str:
    keyword, value = error.validator, _value(error)
    if keyword == "type":
        return "must be " + " or ".join(_A.get(t, t) for t in _listed(value))
    if keyword == "enum":
        shown = ", ".join(_json(v) for v in value[:20])
        return f"must be one of {shown}" + (" ..." if len(value) > 20 else "")
    if keyword == "const":
        return f"must be {_json(value)}"
    if keyword in _BOUNDS:
        return f"must be {_BOUNDS[keyword]} {_json(value)}"
    if keyword == "multipleOf":
        return f"must be a multiple of {_json(value)}"
    if keyword in _SIZES:
        return _SIZES[keyword].format(value, "" if value == 1 else "s")
    if keyword == "pattern":
        return "must not be blank" if value == r"\S" else f"must match the pattern {value}"
    if keyword == "format":
        return f"must be a {_FORMAT_NAMES.get(value, value)}"
    if keyword == "uniqueItems":
        return "must not hold the same item twice"
    if keyword in ("not", None):  # `not`, or a schema of `false`
        return "is not allowed"
    return error.message[:200]


def _order(path: list[Any]) -> list[tuple[int, int, str]]:
    """A sort key for a path of keys and indexes (which do not compare with each other)."""
    return [(0, part, "") if isinstance(part, int) else (1, 0, str(part)) for part in path]


def _where(path: Iterable[Any]) -> str:
    """`params.document_ids[3]`, `params["odd key"]`."""
    text = "params"
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part) and len(part) <= 60:
            text += f".{part}"
        else:
            text += f"[{_json(part[:60] + ('...' if len(part) > 60 else ''))}]"
    return text


def _value(error: ValidationError) -> Any:
    """The keyword's value in the schema (typed as possibly unset: it never is on an error)."""
    return error.validator_value


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."
