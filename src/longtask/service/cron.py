"""Cron expressions for schedules: parsed and stepped by croniter, in UTC.

Five fields (minute hour day month weekday) or six with seconds first (`*/2 * * * * *`, as in
Quartz and Spring), or an alias such as `@hourly`. No I/O: the scheduler and the API both use it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from croniter import croniter

from longtask.core.errors import Invalid

MAX_LENGTH = 200


def validate(expression: object) -> str:
    """The expression, stripped, if it is one that fires; Invalid otherwise."""
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
    return text


def next_after(expression: str, when: datetime) -> datetime:
    """The first firing strictly after `when`, in UTC."""
    seconds_first = len(expression.split(" ")) == 6
    step = croniter(expression, when.astimezone(timezone.utc), second_at_beginning=seconds_first)
    following: datetime = step.get_next(datetime)
    return following.astimezone(timezone.utc)
