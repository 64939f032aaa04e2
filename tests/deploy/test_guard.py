"""The production guard: the Procfile's processes never start on a throwaway database.

On a platform each process type runs on a disk of its own that is wiped at every restart, so an
embedded Postgres or Redis there splits the data between processes and loses it. Without
DATABASE_URL or REDIS_URL, `release`, `web` and `worker` (and `uvicorn server:app`,
`arq worker.WorkerSettings`) exit at once with one line naming the variable, and write nothing;
LONGTASK_EMBEDDED=1 asks for the embedded services on purpose.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from longtask.dev.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.installs import user_env
from tests.support import ROOT

# no service answers here: a process that tried to connect would fail differently, and later
UNREACHABLE = {"DATABASE_URL": "postgres://longtask@127.0.0.1:9/longtask",
               "REDIS_URL": "redis://127.0.0.1:9"}


def procfile() -> dict[str, str]:
    """The Procfile's process types and their commands."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict((name.strip(), command.strip()) for name, _, command in
                (line.partition(":") for line in lines if line.strip()))


COMMANDS = {**procfile(), "uvicorn server:app": "uvicorn server:app",
            "arq worker.WorkerSettings": "arq worker.WorkerSettings"}


def checkout_env(**extra: str) -> dict[str, str]:
    """A user's environment with this checkout's commands and code (its venv on PATH)."""
    return user_env(PATH=f"{Path(sys.executable).parent}:{user_env()['PATH']}",
                    PYTHONPATH=f"{ROOT / 'src'}:{ROOT}", **extra)


def test_the_procfile_names_release_web_and_worker() -> None:
    assert set(procfile()) == {"release", "web", "worker"}


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL"])
@pytest.mark.parametrize("process", list(COMMANDS))
def test_a_process_without_its_service_url_exits_naming_it(process: str, missing: str,
                                                          tmp_path: Path) -> None:
    env = checkout_env(**{k: v for k, v in UNREACHABLE.items() if k != missing})
    done = subprocess.run(["bash", "-c", COMMANDS[process]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert done.returncode != 0, done.stdout + done.stderr
    message = done.stderr.strip()
    assert "\n" not in message, message  # one line, no traceback
    assert f"{missing} is not set" in message
    assert list(tmp_path.iterdir()) == []  # no .data/, nothing at all


def test_longtask_embedded_asks_for_embedded_services(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # the pgserver system user must reach the data directory
    env = checkout_env(LONGTASK_EMBEDDED="1", LONGTASK_PG_FAST="1")
    try:
        done = subprocess.run(["bash", "-c", procfile()["release"]], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    finally:
        EmbeddedRedis(tmp_path / ".data" / "redis").stop()
        EmbeddedPostgres(tmp_path / ".data" / "pg").stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("applied: 0001_")
    assert (tmp_path / ".data" / "pg" / "PG_VERSION").exists()
