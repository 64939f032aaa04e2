"""A real PgBouncer (Debian's package) in front of the test Postgres, in transaction mode as
managed Postgres is pooled at scale, on a free port; for any test of a pooled deployment."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from pathlib import Path

from longtask.dev.embedded import _pg_bin, free_port
from tests.support import wait_for

# PgBouncer refuses to run as root; as root (these machines), it switches to this user
_UNPRIVILEGED = "nobody"


def binary() -> str | None:
    """The pgbouncer executable: Debian installs it in /usr/sbin, often not on a user's PATH."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


class PgBouncer:
    """`pool_mode = transaction`, `max_prepared_statements` unset (PgBouncer before 1.21 has no
    such thing): a prepared statement, a session's lock or setting stays on one server
    connection, and a client's next transaction may run on another. Any database name is
    passed on to Postgres at `upstream` (host, port), with the client's user name and no
    password (the test Postgres trusts loopback). `postgres` has `pool_size` server connections;
    any other database (a test's fresh one) has one, which every client shares: what one client
    leaves on it, the next one meets, every time."""

    def __init__(self, folder: Path, upstream: tuple[str, int], *, pool_size: int = 20) -> None:
        self.folder = folder
        self.upstream = upstream
        self.pool_size = pool_size
        self.port = free_port()
        self.log_path = folder / "pgbouncer.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        """A DATABASE_URL through the pooler, in the `postgres://` form Heroku gives."""
        return f"postgres://{user}@127.0.0.1:{self.port}/{database}"

    async def start(self, timeout: float = 15.0) -> PgBouncer:
        exe = binary()
        if exe is None:
            raise RuntimeError("pgbouncer is not installed: `make test-deps` installs Debian's")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # read by the unprivileged user it runs as under root
        config = self._write_config()
        args = [exe, str(config)]
        if os.geteuid() == 0:
            args[1:1] = ["-u", _UNPRIVILEGED]
        with open(self.log_path, "ab") as log:  # no logfile setting: it logs to stderr, here
            self.popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        await wait_for(self._listening, timeout, "pgbouncer to listen", interval=0.05)
        return self

    async def show(self, what: str) -> list[list[str]]:
        """A `SHOW` of PgBouncer's admin console (`CLIENTS`, `SERVERS`, `STATS` ...), by psql:
        the console speaks only the simple query protocol, which asyncpg does not offer for
        rows. The rows without their header, as text."""
        proc = await asyncio.create_subprocess_exec(
            str(_pg_bin("psql")), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-d", "pgbouncer", "--no-align", "--tuples-only", "--field-separator=|",
            "-c", f"SHOW {what}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")
        return [line.split("|") for line in out.decode().splitlines() if line]

    async def clients(self, database: str = "postgres") -> int:
        """Client connections to `database` through the pooler now."""
        return sum(1 for row in await self.show("CLIENTS") if row[2] == database)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (immediate shutdown before PgBouncer 1.23, after every client left since);
        SIGKILL if it is still there after `timeout`."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def _listening(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            raise AssertionError(f"pgbouncer exited:\n{self.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _write_config(self) -> Path:
        host, port = self.upstream
        users = self.folder / "userlist.txt"
        users.write_text('"postgres" ""\n')  # auth_type trust still wants the user listed
        config = self.folder / "pgbouncer.ini"
        config.write_text(f"""\
[databases]
postgres = host={host} port={port}
* = host={host} port={port} pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
admin_users = postgres
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 500
""")
        for path in (users, config):
            path.chmod(0o644)
        return config
