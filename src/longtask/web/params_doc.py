"""The kinds in /openapi.json: the body of `POST /tasks` and of `POST /schedules` is one of a
shape per submittable kind (`oneOf`, with `kind` as the discriminator), each with that kind's
declared params schema, the very one `longtask.service.params` checks submissions with. Swagger
UI (/docs) lists each kind with its params, and schemathesis fuzzes each with its own."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from longtask.core.kinds import Kind, Registry

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")  # what a component's name may not hold
ANY_PARAMS = {"description": "this kind declares no params schema: any JSON"}


@dataclass
class KindBodies:
    """What `spec` puts in the document: a request body schema per operation, the components
    they refer to, and an example body per kind that declares one."""

    components: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # kind -> its components' stem
    kinds: list[Kind] = field(default_factory=list)

    @classmethod
    def of(cls, registry: Registry) -> KindBodies:
        made = cls()
        for name in registry.names():
            found = registry.get(name)
            if found is None or not found.public:
                continue
            stem = _UNSAFE.sub("_", name)
            while stem in made.names.values():  # "a/b" and "a_b" both
                stem += "_"
            made.names[name] = stem
            made.kinds.append(found)
            if found.params_schema is not None:
                made.components[f"params.{stem}"] = _params(found, stem)
        return made

    def body(self, operation: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
        """The `oneOf` for one operation (`task`, `schedule`): per kind, `kind` as a constant,
        its `params`, and the operation's other fields (`extra`, of which `required`)."""
        branches: dict[str, str] = {}
        for k in self.kinds:
            stem = self.names[k.name]
            declared = k.params_schema or {}
            params = {"$ref": f"#/components/schemas/params.{stem}"} \
                if k.params_schema is not None else ANY_PARAMS
            needed = ["kind", *(["params"] if declared.get("required") else []), *required]
            self.components[f"{operation}.{stem}"] = {
                "type": "object", "title": k.name, "required": needed,
                "properties": {"kind": {"const": k.name}, "params": params, **extra}}
            branches[k.name] = f"#/components/schemas/{operation}.{stem}"
        return {"oneOf": [{"$ref": target} for target in branches.values()],
                "discriminator": {"propertyName": "kind", "mapping": branches}}

    def examples(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """A named example body per kind whose schema gives `examples` (Swagger UI's list)."""
        found = {}
        for k in self.kinds:
            shown = (k.params_schema or {}).get("examples")
            if isinstance(shown, list) and shown:
                found[self.names[k.name]] = {"summary": k.name, "value": {
                    "kind": k.name, "params": shown[0], **(extra or {})}}
        return found

    def described(self) -> str:
        """The kinds as a Markdown list, for the operations' descriptions."""
        return "\n".join(f"- `{k.name}`: {_summary(k)}" for k in self.kinds)


def _params(k: Kind, stem: str) -> dict[str, Any]:
    """The kind's schema as a component: its local `$ref`s (`#/$defs/x`) rebased onto where it
    now sits in the document, and a title if it has none."""
    assert k.params_schema is not None
    schema = _rebased(copy.deepcopy(k.params_schema), f"#/components/schemas/params.{stem}")
    schema.setdefault("title", f"{k.name} params")
    return dict(schema)


def _rebased(node: Any, base: str) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                node[key] = base + value[1:]
            else:
                _rebased(value, base)
    elif isinstance(node, list):
        for value in node:
            _rebased(value, base)
    return node


def _summary(k: Kind) -> str:
    declared = (k.params_schema or {}).get("description")
    if isinstance(declared, str) and declared.strip():
        return declared.strip()
    doc = (k.handler.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()) or "(no description)"
