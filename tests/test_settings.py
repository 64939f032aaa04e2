"""Settings come from the environment and a bad value names its variable."""

from __future__ import annotations

import base64
import re
from dataclasses import fields
from pathlib import Path

import pytest

from longtask.broker.connection import redis_settings
from longtask.client.calls import DEFAULT_URL
from longtask.config import CLIENT, Computed, Settings, read, variables
from longtask.config.__main__ import main as config_main
from longtask.core.errors import ConfigError
from tests.support import WEBHOOK_SECRET

SRC = Path(__file__).resolve().parents[1] / "src" / "longtask"


def test_defaults_and_values() -> None:
    s = Settings.from_env({"PORT": "9000", "DATABASE_URL": "postgres://u:p@h:5432/d",
                           "LONGTASK_RETRY_DELAYS": "1, 2,4", "LONGTASK_KINDS": "a.b, c"})
    assert (s.port, s.database_url, s.retry_delays, s.kinds) == \
        (9000, "postgres://u:p@h:5432/d", (1.0, 2.0, 4.0), ("a.b", "c"))
    assert [s.retry_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 4.0]
    assert Settings.from_env({}).redis_url is None  # unset: the embedded default
    assert Settings.from_env({}).metrics_port is None  # unset: published through Redis
    assert Settings.from_env({"LONGTASK_METRICS_PORT": "9100"}).metrics_port == 9100


@pytest.mark.parametrize("name, value", [
    ("PORT", "eighty"), ("PORT", "70000"), ("LONGTASK_WORKER_CONCURRENCY", "0"),
    ("LONGTASK_RETRY_DELAYS", "1,-2"), ("LONGTASK_LEASE_SECONDS", "nan"),
    ("LONGTASK_METRICS_PORT", "0"), ("LONGTASK_METRICS_PORT", "metrics"),
    ("LONGTASK_METRICS_PUSH_SECONDS", "0"), ("LONGTASK_METRICS_TTL", "-1"),
    ("LOG_LEVEL", "loud"), ("LOG_FORMAT", "xml"), ("LONGTASK_PG_FAST", "fast"),
    ("LONGTASK_WEBHOOK_URL", "hooks.example.com"), ("LONGTASK_WEBHOOK_TIMEOUT", "0"),
    ("LONGTASK_WEBHOOK_ATTEMPTS", "0"), ("LONGTASK_WEBHOOK_RETRY_DELAYS", "5,-1"),
])
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_heartbeat_must_be_shorter_than_lease() -> None:
    with pytest.raises(ConfigError, match="LONGTASK_HEARTBEAT_SECONDS"):
        Settings.from_env({"LONGTASK_HEARTBEAT_SECONDS": "30", "LONGTASK_LEASE_SECONDS": "10"})


def test_published_metrics_outlive_the_interval_they_are_published_at() -> None:
    with pytest.raises(ConfigError, match="LONGTASK_METRICS_TTL"):
        Settings.from_env({"LONGTASK_METRICS_PUSH_SECONDS": "30", "LONGTASK_METRICS_TTL": "30"})


def test_a_webhook_url_needs_a_secret_and_no_error_shows_one() -> None:
    with pytest.raises(ConfigError, match="LONGTASK_WEBHOOK_SECRET is not") as unset:
        Settings.from_env({"LONGTASK_WEBHOOK_URL": "https://hooks.example.com/longtask"})
    assert "whsec_" in str(unset.value)  # and how to make one
    short = "whsec_" + base64.b64encode(b"too short").decode()
    for bad in ("plain-text-secret-without-the-prefix", "whsec_!!not-base64!!", short):
        with pytest.raises(ConfigError, match=r"LONGTASK_WEBHOOK_SECRET \(secret 2\)") as caught:
            Settings.from_env({"LONGTASK_WEBHOOK_SECRET": f"{WEBHOOK_SECRET} {bad}"})
        assert bad not in str(caught.value) and WEBHOOK_SECRET not in str(caught.value)
    other = "whsec_" + base64.b64encode(bytes(range(64))).decode().rstrip("=")  # unpadded: fine
    s = Settings.from_env({"LONGTASK_WEBHOOK_URL": "https://hooks.example.com/longtask",
                           "LONGTASK_WEBHOOK_SECRET": f" {WEBHOOK_SECRET}  {other} ",
                           "LONGTASK_WEBHOOK_RETRY_DELAYS": "1,2"})
    assert s.webhook_secrets == (WEBHOOK_SECRET, other)
    assert [s.webhook_retry_delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 2.0]


def test_a_parser_process_gets_enough_memory_to_start() -> None:
    with pytest.raises(ConfigError, match="LONGTASK_PARSE_MEMORY_MB"):
        Settings.from_env({"LONGTASK_PARSE_MEMORY_MB": "100"})
    assert Settings.from_env({"LONGTASK_PARSE_MEMORY_MB": "256"}).parse_memory_mb == 256


def test_heroku_style_redis_urls() -> None:
    tls = redis_settings("rediss://:secret@example.com:6380")
    assert (tls.ssl, tls.ssl_cert_reqs, tls.port, tls.password) == (True, "none", 6380, "secret")
    strict = redis_settings("rediss://example.com:6380?ssl_cert_reqs=required")
    assert strict.ssl_cert_reqs == "required"
    assert redis_settings("unix:///tmp/r.sock").unix_socket_path == "/tmp/r.sock"


def test_defaults_are_declared_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)  # a computed default, the same both ways
    assert Settings.from_env({}) == Settings()
    assert Settings().parse_processes == 4
    names = [var.env for var in variables().values()]
    assert len(names) == len(fields(Settings)) + len(CLIENT) == len(set(names))
    for var in variables().values():
        assert var.help and "\n" not in var.help, var.env
        # words in the README's default column only where the value itself says nothing
        assert not var.shown or var.default in (None, ""), var.env
        assert not isinstance(var.default, Computed) or var.default.shown, var.env


def test_logging_and_embedded_postgres_variables() -> None:
    s = Settings.from_env({"LOG_LEVEL": "debug", "LOG_FORMAT": " JSON ", "LONGTASK_PG_FAST": "1"})
    assert (s.log_level, s.log_format, s.pg_fast) == ("DEBUG", "json", True)
    assert (Settings().log_level, Settings().log_format, Settings().pg_fast) == ("INFO", "text",
                                                                                 False)
    assert read("LONGTASK_PG_FAST", {"LONGTASK_PG_FAST": "off"}) is False
    assert read("LONGTASK_PG_FAST", {}) is False
    with pytest.raises(ConfigError, match="LONGTASK_PG_FAST='maybe'"):
        read("LONGTASK_PG_FAST", {"LONGTASK_PG_FAST": "maybe"})


# modules that may touch os.environ without going through longtask.config, and why
OWN_ENV = {
    "client/calls.py": "the client imports nothing server-side; reads what CLIENT declares",
    "client/cli.py": "likewise",
    "dev/run.py": "hands its environment on to the web and worker processes it starts",
    "web/app.py": "`longtask web` hands the service URLs on to the web processes it starts",
    "obs/multiprocess.py": "prometheus_client's PROMETHEUS_MULTIPROC_DIR, which it reads at "
                           "import: set for the web processes uvicorn starts",
    "pipeline/embed.py": "sets Hugging Face's offline switches before loading the local model",
}
READ = re.compile(r"""(?:environ\.get|getenv)\(\s*["']([A-Z0-9_]+)["']|"""
                  r"""environ\[\s*["']([A-Z0-9_]+)["']\s*\](?!\s*=[^=])""")


def test_every_variable_read_in_src_is_declared() -> None:
    declared = variables()
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        if module.startswith("config/"):
            continue
        text = path.read_text()
        if re.search(r"\bos\.environ\b|\bgetenv\b", text):
            assert module in OWN_ENV, f"{module} reads the environment: declare the variable " \
                "in longtask.config and read it from Settings (or config.read)"
        for match in READ.finditer(text):
            name = match.group(1) or match.group(2)
            assert name in declared, f"{module} reads {name}, not declared in longtask.config"
    assert variables()["LONGTASK_URL"].default == DEFAULT_URL


def test_the_readme_table_is_written_from_the_declaration(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n| variable | default | meaning |\n|---|---|---|\n"
                      "| `OLD` | 1 | gone |\n\nafter\n")
    assert config_main(["--markdown", str(readme)]) == 0
    text = readme.read_text()
    assert "`OLD`" not in text and "| `LOG_FORMAT` | text |" in text and text.endswith("\nafter\n")


def test_the_trial_kinds_come_with_a_machine_of_ones_own() -> None:
    assert "longtask.kinds.trial" not in Settings.from_env({}).kind_modules
    for on in ({"LONGTASK_TRIAL_KINDS": "1"}, {"LONGTASK_EMBEDDED": "1"}):
        assert Settings.from_env(on).kind_modules[0] == "longtask.kinds.trial"
    mine = Settings.from_env({"LONGTASK_KINDS": "my.kinds"})
    assert mine.kind_modules == ("my.kinds",)
