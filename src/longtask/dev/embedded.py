"""Embedded PostgreSQL (with pgvector, from the `pgserver` package) and a private redis-server.

With `DATABASE_URL` or `REDIS_URL` unset, `resolve()` starts what is missing under the data
directory and leaves it running for the other processes of the same checkout (web, worker, CLI).
The test suite uses the same two classes on free TCP ports, so a test can kill and restart them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import replace
from pathlib import Path

from longtask import config
from longtask.config import Settings
from longtask.core.errors import ConfigError

log = logging.getLogger(__name__)

_PG_SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root; pgserver creates this user


def services(settings: Settings) -> Settings:
    """The settings a `release`, `web` or `worker` process runs on: its DATABASE_URL and
    REDIS_URL, or, with LONGTASK_EMBEDDED=1, embedded services for those left unset. Otherwise
    a ConfigError naming the missing variable, before anything is started or written: on a
    platform, an embedded database would live on one process's disk, apart from the others',
    and be gone at its next restart."""
    if settings.embedded:
        return resolve(settings)
    config.require_services(settings)
    return settings


def resolve(settings: Settings) -> Settings:
    """Fill in embedded services for the URLs left unset (`longtask dev`, `demo`)."""
    data_dir = settings.data_dir.resolve()
    database_url = settings.database_url
    redis_url = settings.redis_url
    if not database_url:
        database_url = EmbeddedPostgres(data_dir / "pg", fast=settings.pg_fast).ensure_running()
    if not redis_url:
        redis_url = EmbeddedRedis(data_dir / "redis").ensure_running()
    return replace(settings, database_url=database_url, redis_url=redis_url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Service:
    """A server process of ours in `data_dir`: on a unix socket there, or on `port`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float) -> None:
        raise NotImplementedError

    def running_pid(self) -> int | None:
        raise NotImplementedError

    def ensure_running(self, timeout: float = 30.0) -> str:
        """Start it unless it runs already (another process of this checkout started it)."""
        if self.running_pid() is None:
            self.start(timeout)
        return self.url


def shared_buffers_mb() -> int:
    """Postgres' own cache for the embedded server: an eighth of the machine's memory, from
    128 MB (Postgres' default) to 1 GB. At the default, a search for a word in 24,000 of a
    200,000-chunk tenant's chunks read most of their 18,000 heap pages from the OS cache every
    time: hybrid search's p99 was 119 ms, and 72-82 ms at 1 GB (bench/retrieval.py)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return max(128, min(1024, memory // 8))


class EmbeddedPostgres(_Service):
    """A PostgreSQL 16 + pgvector cluster (pgserver's binaries); `fast`: without fsync (None: as
    LONGTASK_PG_FAST says when it starts)."""

    def __init__(self, data_dir: Path, port: int | None = None, *,
                 fast: bool | None = None) -> None:
        super().__init__(data_dir, port)
        self.fast = fast

    @property
    def url(self) -> str:
        if self.port is None:
            return f"postgresql://postgres@/postgres?host={self.data_dir}"
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> None:
        self._initdb()
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        listen = "127.0.0.1" if self.port is not None else ""
        fast = config.read("LONGTASK_PG_FAST") if self.fast is None else self.fast
        args = [
            str(_pg_bin("postgres")),
            "-D", str(self.data_dir),
            "-k", str(self.data_dir),
            "-h", listen,
            "-p", str(self.port or 5432),
            "-c", "max_connections=300",
            "-c", f"shared_buffers={shared_buffers_mb()}MB",
            "-c", "fsync=off" if fast else "fsync=on",
        ]
        logfile = open(self.data_dir / "server.log", "ab")
        self.process = subprocess.Popen(
            args, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
            user=self._system_user(),
        )
        logfile.close()
        self._wait_ready(timeout)

    def running_pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            return None
        if self.port is None and not (self.data_dir / ".s.PGSQL.5432").exists():
            # running, but its socket was deleted under it: unusable, so restart it
            os.kill(pid, signal.SIGINT)
            _wait_gone(pid, 30.0)
            return None
        return pid

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown: open connections are ended, the data is kept."""
        self._signal(signal.SIGINT, timeout)

    def kill(self) -> None:
        """kill -9 the postmaster and its children: a crash, not a shutdown."""
        pid = self.running_pid()
        if pid is not None:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_gone(pid, 30.0)
        if self.process is not None:
            self.process.wait()

    def _signal(self, sig: int, timeout: float) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        os.kill(pid, sig)
        _wait_gone(pid, timeout)
        if self.process is not None:
            self.process.wait()

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._system_user()
        if user is not None:
            import pwd

            _pg_bin("postgres")  # imports pgserver quietly
            from pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [str(_pg_bin("initdb")), "-D", str(self.data_dir), "--auth=trust", "--encoding=utf8",
             "-U", "postgres", "--no-sync"],
            check=True, capture_output=True, user=user,
        )

    def _system_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        _pg_bin("postgres")
        from pgserver.utils import ensure_user_exists

        ensure_user_exists(_PG_SYSTEM_USER)
        return _PG_SYSTEM_USER

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        host = "127.0.0.1" if self.port is not None else str(self.data_dir)
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ConfigError(f"embedded PostgreSQL exited; see {self.data_dir / 'server.log'}")
            ready = subprocess.run(
                [str(_pg_bin("pg_isready")), "-q", "-h", host, "-p", str(self.port or 5432)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise ConfigError(f"embedded PostgreSQL did not start; see {self.data_dir / 'server.log'}")


class EmbeddedRedis(_Service):
    """A private redis-server that keeps nothing on disk."""

    @property
    def url(self) -> str:
        if self.port is None:
            return f"unix://{self.data_dir / 'redis.sock'}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "REDIS_URL is unset and redis-server is not installed: run `make setup` "
                "(it installs Debian's redis-server) or set REDIS_URL"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--pidfile", str(self.data_dir / "redis.pid"),
            "--logfile", str(self.data_dir / "redis.log"),
            "--save", "",
            "--appendonly", "no",
        ]
        if self.port is None:
            args += ["--unixsocket", str(self.data_dir / "redis.sock"), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"embedded redis-server exited; see {self.data_dir / 'redis.log'}")
            if self._ping():
                return
            time.sleep(0.02)
        raise ConfigError("embedded redis-server did not start")

    def running_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and self._ping() else None

    def stop(self, timeout: float = 10.0) -> None:
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: int, timeout: float) -> None:
        pid = self.running_pid()
        if pid is None and self.process is not None and self.process.poll() is None:
            pid = self.process.pid
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            _wait_gone(pid, timeout)
        if self.process is not None:
            self.process.wait()
        (self.data_dir / "redis.pid").unlink(missing_ok=True)

    def _ping(self) -> bool:
        try:
            if self.port is None:
                sock = socket.socket(socket.AF_UNIX)
                sock.settimeout(1)
                sock.connect(str(self.data_dir / "redis.sock"))
            else:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
            with sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _pg_bin(name: str) -> Path:
    with warnings.catch_warnings():  # pgserver's import warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        try:
            from pgserver._commands import POSTGRES_BIN_PATH
        except ModuleNotFoundError as exc:
            if exc.name != "pgserver":
                raise
            raise ConfigError("DATABASE_URL is unset and embedded PostgreSQL needs pgserver: "
                              "pip install 'longtask[dev]', or set DATABASE_URL") from exc

    return Path(POSTGRES_BIN_PATH) / name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
