"""Redis behind Sentinel: REDIS_URL names the Sentinels and the service it watches, and a bad
one stops a process at start with a message that names REDIS_URL."""

from __future__ import annotations

import pytest

from longtask.broker import connection
from longtask.core.errors import ConfigError

SERVICE = "mymaster"


@pytest.mark.parametrize("url, sentinels, service, database, password", [
    ("redis+sentinel://127.0.0.1/mymaster", [("127.0.0.1", 26379)], "mymaster", 0, None),
    ("redis+sentinel://:s3cret@a:26380,b:26381,c/cache/2",
     [("a", 26380), ("b", 26381), ("c", 26379)], "cache", 2, "s3cret"),
    ("redis+sentinel://[::1]:5000,sentinel-1.internal/mymaster/",
     [("::1", 5000), ("sentinel-1.internal", 26379)], "mymaster", 0, None),
])
def test_sentinel_urls(url: str, sentinels: list[tuple[str, int]], service: str,
                       database: int, password: str | None) -> None:
    settings = connection.redis_settings(url)
    assert isinstance(settings, connection.SentinelSettings) and settings.sentinel
    assert (settings.host, settings.sentinel_master, settings.database, settings.password,
            settings.ssl) == (sentinels, service, database, password, False)


def test_sentinel_url_options() -> None:
    tls = connection.redis_settings(
        "rediss+sentinel://app:p%40ss@s1,s2/mymaster?sentinel_password=other")
    assert isinstance(tls, connection.SentinelSettings)
    assert (tls.ssl, tls.ssl_cert_reqs, tls.username, tls.password, tls.sentinel_password) == \
        (True, "none", "app", "p@ss", "other")  # a self-signed certificate, as rediss://
    strict = connection.redis_settings("rediss+sentinel://s1/mymaster?ssl_cert_reqs=required")
    assert strict.ssl_cert_reqs == "required"


@pytest.mark.parametrize("url, says", [
    ("redis+sentinel://s1:26379", "name the monitored service"),
    ("redis+sentinel://s1/mymaster/zero", "database must be a number"),
    ("redis+sentinel://s1/mymaster/0/extra", "name the monitored service"),
    ("redis+sentinel:///mymaster", "list the Sentinels"),
    ("redis+sentinel://s1,,s2/mymaster", "list the Sentinels"),
    ("redis+sentinel://s1:port/mymaster", "'s1:port' has no valid port"),
    ("redis+sentinel://s1:99999/mymaster", "has no valid port"),
    ("redis+sentinel://[::1/mymaster", "IPv6"),
    ("redis+sentinel://s1/mymaster?master=x", "unknown option master"),
    ("redis+sentinel://s1/mymaster?ssl_cert_reqs=none", "TLS needs rediss+sentinel://"),
    ("sentinel://s1/mymaster", "not a Redis URL"),
    ("redis://localhost:sixty", "not a Redis URL"),
])
def test_a_bad_redis_url_names_redis_url(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as error:
        connection.redis_settings(url)
    assert says in str(error.value)


def test_a_bad_redis_url_shows_no_password() -> None:
    with pytest.raises(ConfigError) as error:
        connection.redis_settings("redis+sentinel://user:hunter2@s1/mymaster/x"
                                  "?sentinel_password=hunter3")
    assert "hunter" not in str(error.value) and "user:***@s1" in str(error.value)


def test_a_bad_redis_url_stops_the_web_and_the_worker_at_start() -> None:
    from longtask.config import Settings
    from longtask.web.app import create_app
    from longtask.worker.main import worker_settings

    settings = Settings(database_url="postgresql://localhost/x",
                        redis_url=f"redis+sentinel://s1/{SERVICE}/nine")
    for start in (create_app, worker_settings):
        with pytest.raises(ConfigError, match="REDIS_URL"):
            start(settings)
