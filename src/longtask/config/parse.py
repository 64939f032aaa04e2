"""Parsers of environment text: each takes the stripped text and returns the value, or raises
ValueError saying what it must be (the message follows `NAME='text':` in the ConfigError)."""

from __future__ import annotations

import base64
import logging
import re

WEBHOOK_SECRET_PREFIX = "whsec_"


def port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a port number between 1 and 65535")
    return value


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be zero or a positive whole number")
    return value


def divisor_of_60(raw: str) -> int:
    value = int(raw)
    if value <= 0 or 60 % value:
        raise ValueError("must be a whole number of seconds that divides 60 (1, 2, 3, 5, 10 ...)")
    return value


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # NaN too
        raise ValueError("must be 0 or more")
    return value


def flag(raw: str) -> bool:
    value = raw.lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError("must be 1 or 0 (true/false, yes/no, on/off)")
    return value in ("1", "true", "yes", "on")


def url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL, e.g. https://api.openai.com/v1")
    return raw.rstrip("/")


def csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def origins(raw: str) -> tuple[str, ...]:
    found = csv(raw)
    for origin in found:
        if origin == "*":
            raise ValueError("name the origins; a wildcard would let any site use the API")
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
    return found


def kind_caps(raw: str) -> tuple[tuple[str, int], ...]:
    """`ingest=4,agent=2`: a cap per kind name."""
    caps: dict[str, int] = {}
    for part in csv(raw):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError("must be kind=number pairs, comma-separated, e.g. ingest=4,agent=2")
        caps[name] = positive_int(value.strip())
    return tuple(caps.items())


def rates(raw: str) -> str:
    if raw.lower() in ("off", "none", "0"):
        return ""
    from limits import parse_many  # only here and in the web process

    parse_many(raw)  # ValueError for anything it cannot read
    return raw


def rate(raw: str) -> str:
    from limits import parse

    parse(raw)  # one limit, e.g. 500/minute; ValueError for anything else
    return raw


def delays(raw: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in csv(raw))
    if not values or any(v < 0 for v in values):
        raise ValueError("must be a comma-separated list of non-negative seconds, e.g. 60,120,240")
    return values


def words(raw: str) -> tuple[str, ...]:
    """Values separated by spaces or commas."""
    return tuple(part for part in re.split(r"[\s,]+", raw) if part)


def webhook_secret(raw: str) -> bytes:
    """The key of a Standard Webhooks secret, `whsec_` and base64. The message never quotes it."""
    if not raw.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"must start with {WEBHOOK_SECRET_PREFIX}")
    encoded = raw[len(WEBHOOK_SECRET_PREFIX):]
    try:  # padding may be left off, as the Standard Webhooks libraries allow
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        raise ValueError(f"must be {WEBHOOK_SECRET_PREFIX} followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"must hold 24 to 64 bytes, not {len(key)}")
    return key


def log_level(raw: str) -> str:
    value = raw.upper()
    if value not in logging.getLevelNamesMapping():
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def log_format(raw: str) -> str:
    value = raw.lower()
    if value not in ("text", "json"):
        raise ValueError("must be text or json")
    return value

