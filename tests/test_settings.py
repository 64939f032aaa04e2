"""Settings come from the environment and a bad value names its variable."""

from __future__ import annotations

import pytest

from longtask.core.errors import ConfigError
from longtask.broker.connection import redis_settings
from longtask.config import Settings


def test_defaults_and_values() -> None:
    s = Settings.from_env({"PORT": "9000", "DATABASE_URL": "postgres://u:p@h:5432/d",
                           "LONGTASK_RETRY_DELAYS": "1, 2,4", "LONGTASK_KINDS": "a.b, c"})
    assert (s.port, s.database_url, s.retry_delays, s.kinds) == \
        (9000, "postgres://u:p@h:5432/d", (1.0, 2.0, 4.0), ("a.b", "c"))
    assert [s.retry_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 4.0]
    assert Settings.from_env({}).redis_url is None  # unset: the embedded default
    assert Settings.from_env({}).metrics_port is None  # unset: a worker serves no metrics
    assert Settings.from_env({"LONGTASK_METRICS_PORT": "9100"}).metrics_port == 9100


@pytest.mark.parametrize("name, value", [
    ("PORT", "eighty"), ("PORT", "70000"), ("LONGTASK_WORKER_CONCURRENCY", "0"),
    ("LONGTASK_RETRY_DELAYS", "1,-2"), ("LONGTASK_LEASE_SECONDS", "nan"),
    ("LONGTASK_METRICS_PORT", "0"), ("LONGTASK_METRICS_PORT", "metrics"),
])
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_heartbeat_must_be_shorter_than_lease() -> None:
    with pytest.raises(ConfigError, match="LONGTASK_HEARTBEAT_SECONDS"):
        Settings.from_env({"LONGTASK_HEARTBEAT_SECONDS": "30", "LONGTASK_LEASE_SECONDS": "10"})


def test_heroku_style_redis_urls() -> None:
    tls = redis_settings("rediss://:secret@example.com:6380")
    assert (tls.ssl, tls.ssl_cert_reqs, tls.port, tls.password) == (True, "none", 6380, "secret")
    strict = redis_settings("rediss://example.com:6380?ssl_cert_reqs=required")
    assert strict.ssl_cert_reqs == "required"
    assert redis_settings("unix:///tmp/r.sock").unix_socket_path == "/tmp/r.sock"
