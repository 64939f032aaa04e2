"""Cron expressions for schedules: parsed and stepped by croniter, in UTC.

Five fields (minute hour day month weekday) or six with seconds first (`*/2 * * * * *`, as in
Quartz and Spring), or an alias such as `@hourly`. No I/O: the scheduler and the API both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from croniter import croniter

from longtask.core.errors import Invalid, Unacceptable

MAX_LENGTH = 200


def validate(expression: object, min_seconds: float = 0) -> str:
    """The expression, stripped, if it is one that fires, never twice within `min_seconds`;
    Invalid (malformed) or Unacceptable (too frequent) otherwise."""
    if not isinstance(expression, str) or not 0 < len(expression.strip()) <= MAX_LENGTH:
        raise Invalid(f"`cron` must be a cron expression of up to {MAX_LENGTH} characters, "
                      "e.g. `0 * * * *` or, with seconds first, `*/10 * * * * *`",
                      code="invalid_cron")
    text = " ".join(expression.split())
    fields = len(text.split(" "))
    if not (text.startswith("@") or fields in (5, 6)):
        raise Invalid(f"`cron` has {fields} fields: give 5 (minute hour day month weekday) "
                      "or 6 (seconds first)", code="invalid_cron")
    try:
        next_after(text, datetime.now(timezone.utc))
    except Exception as exc:  # croniter raises several types (and a few plain ones) for bad input
        raise Invalid(f"`cron` is not valid: {exc}"[:300], code="invalid_cron") from None
    gap = shortest_gap(text)
    if gap < min_seconds:
        raise Unacceptable(f"`cron` {text!r} fires {gap:g} s apart; schedules here fire at most "
                           f"once every {min_seconds:g} s", code="cron_too_frequent")
    return text


def shortest_gap(expression: str) -> float:
    """The shortest time between two firings, in seconds: worked out from the times of day it
    fires at (seconds, minutes, hours), counting the step over midnight as if every day fired,
    so it may be shorter than the truth for one that skips days, never longer."""
    seconds_first = len(expression.split(" ")) == 6
    try:
        fields = croniter.expand(expression, second_at_beginning=seconds_first)[0]
    except Exception:  # a form expand does not know: step through a few firings instead
        return _stepped_gap(expression)
    minutes, hours = _values(fields[0], 60), _values(fields[1], 24)
    seconds = _values(fields[5], 60) if len(fields) > 5 else [0]
    times = sorted({h * 3600 + m * 60 + s for h in hours for m in minutes for s in seconds})
    gaps = [b - a for a, b in zip(times, times[1:])]
    gaps.append(_DAY - times[-1] + times[0])
    return float(min(gaps))


def next_after(expression: str, when: datetime) -> datetime:
    """The first firing strictly after `when`, in UTC."""
    seconds_first = len(expression.split(" ")) == 6
    step = croniter(expression, when.astimezone(timezone.utc), second_at_beginning=seconds_first)
    following: datetime = step.get_next(datetime)
    return following.astimezone(timezone.utc)


_DAY = 86400


def _values(field: Sequence[int | str], size: int) -> list[int]:
    return list(range(size)) if "*" in field else sorted({int(v) for v in field})


def _stepped_gap(expression: str, firings: int = 100) -> float:
    when = next_after(expression, datetime.now(timezone.utc))
    shortest = float(_DAY)
    for _ in range(firings):
        following = next_after(expression, when)
        shortest = min(shortest, (following - when).total_seconds())
        when = following
    return shortest
