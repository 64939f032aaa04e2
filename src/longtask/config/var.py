"""How a variable is declared: `setting(env, parse, default, help)` makes a `Settings` field that
remembers its `Var`, so the field's default, `from_env` and the README's row share one source."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from longtask.core.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Computed(Generic[T]):
    """A default worked out when `Settings` is made, and the words the README shows for it."""

    make: Callable[[], T]
    shown: str


@dataclass(frozen=True)
class Var(Generic[T]):
    """One environment variable: its name, the parser of its text (so its type), its default
    (None: unset) and one line of help."""

    env: str
    parse: Callable[[str], T]
    default: T | Computed[T] | None
    help: str
    shown: str = ""  # the README's default where the value says nothing: None or ""

    def value(self) -> T | None:
        """The default, computed if need be."""
        return self.default.make() if isinstance(self.default, Computed) else self.default

    def shown_default(self) -> str:
        """The default as the README's table shows it."""
        if isinstance(self.default, Computed):
            return self.default.shown
        return self.shown or _show(self.env, self.default)

    def row(self) -> str:
        """Its row in the README's table."""
        return f"| `{self.env}` | {_cell(self.shown_default())} | {_cell(self.help)} |"


@overload
def setting(env: str, parse: Callable[[str], T], default: None, help: str, *,
            shown: str = "") -> T | None: ...
@overload
def setting(env: str, parse: Callable[[str], T], default: T | Computed[T], help: str, *,
            shown: str = "") -> T: ...
def setting(env: str, parse: Callable[[str], T], default: T | Computed[T] | None, help: str, *,
            shown: str = "") -> Any:
    """A `Settings` field read from `env`: its default is `default` (or what it computes)."""
    meta = {"var": Var(env, parse, default, help, shown)}
    if isinstance(default, Computed):
        return field(default_factory=default.make, metadata=meta)
    return field(default=default, metadata=meta)


def read_set(declared: Iterable[tuple[str, Var[Any]]], env: Mapping[str, str]) -> dict[str, Any]:
    """The values of the variables set (not blank) in `env`, by key; unset ones are left out.
    One ConfigError names every bad value: `invalid environment: NAME='text': why; ...`."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    for key, var in declared:
        raw = env.get(var.env)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[key] = var.parse(raw.strip())
        except (ValueError, TypeError) as exc:
            errors.append(f"{var.env}={raw!r}: {exc}")
    if errors:
        raise ConfigError("invalid environment: " + "; ".join(errors))
    return values


def _show(env: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return ",".join(_show(env, part) for part in value)
    if isinstance(value, int) and env.endswith("_BYTES"):
        for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
            if value % size == 0:
                return f"{value} ({value // size} {unit})"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
