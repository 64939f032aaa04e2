"""Stream tokens: short-lived, signed, scoped to one task of one tenant.

Browsers cannot send headers on an `EventSource`; a token in `?token=` stands in for the key,
without putting the key itself in a URL (and so in access logs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time


def make(secret: str, tenant: str, task_id: str, ttl: float) -> str:
    body = _b64(json.dumps({"t": tenant, "k": task_id, "e": int(time.time() + ttl)},
                           separators=(",", ":")).encode())
    return f"{body}.{_sign(secret, body)}"


def verify(secret: str, token: str, task_id: str) -> str | None:
    """The tenant the token was made for, if it is genuine, unexpired and for this task."""
    body, _, signature = token.partition(".")
    expected = _sign(secret, body).encode()
    if not body or not hmac.compare_digest(signature.encode("utf-8", "surrogateescape"),
                                           expected):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if claims.get("k") != task_id or claims.get("e", 0) < time.time():
        return None
    tenant = claims.get("t")
    return tenant if isinstance(tenant, str) else None


def _sign(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode("utf-8", "surrogateescape"),
                         hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
