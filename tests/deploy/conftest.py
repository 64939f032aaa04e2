"""A PgBouncer for the session, in front of the test Postgres (started on first use)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Services
from tests.deploy.pgbouncer import PgBouncer


@pytest.fixture(scope="session")
async def pgbouncer(services: Services) -> AsyncIterator[PgBouncer]:
    assert services.postgres.port is not None
    bouncer = PgBouncer(services.root / "pgbouncer", ("127.0.0.1", services.postgres.port))
    try:
        yield await bouncer.start()
    finally:  # stopped even if it never came up
        bouncer.stop()
