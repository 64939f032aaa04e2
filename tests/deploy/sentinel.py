"""Redis as a Sentinel deployment runs it: a primary, one replica and one Sentinel watching
them, on free ports, with their config files and logs in a directory of the test's. The Sentinel
notices a dead primary within a second and promotes the replica a few seconds later."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from longtask.dev.embedded import free_port
from tests.support import wait_for

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000  # the primary is down after this long without an answer
FAILOVER_TIMEOUT_MS = 5000


class Server:
    """One redis-server process (a Sentinel with `sentinel=True`), from a config file."""

    def __init__(self, root: Path, name: str, config: str, *, sentinel: bool = False) -> None:
        self.name = name
        self.port = free_port()
        self.root = root
        self.log_path = root / f"{name}.log"
        self.config_path = root / f"{name}.conf"
        self.config_path.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {root}\nlogfile {self.log_path}\n{config}")
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None
        self.client = Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def start(self) -> Server:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make setup)"
        args = [binary, str(self.config_path), *(["--sentinel"] if self.sentinel else [])]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.process is not None and self.process.poll() is None, \
                f"{self.name} exited:\n{self.tail()}"
            try:
                return bool(await self.client.ping())
            except (RedisError, OSError):
                return False

        await wait_for(answers, 10, f"{self.name} to answer")

    def kill(self) -> None:
        """kill -9: no goodbye to anyone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    async def role(self) -> str:
        return str((await self.client.info("replication"))["role"])

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class SentinelRedis:
    """`async with SentinelRedis(dir) as redis:` a primary, its replica and a Sentinel, all
    killed at the end, even on failure (their logs' tails are printed then, for the report)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        # nothing on disk; a replica syncs at once (Redis 7 waits 5 s for more to come)
        nothing_on_disk = 'save ""\nappendonly no\nrepl-diskless-sync-delay 0\n'
        self.primary = Server(root, "primary", nothing_on_disk)
        self.replica = Server(root, "replica", nothing_on_disk
                              + f"replicaof 127.0.0.1 {self.primary.port}\n")
        self.sentinel = Server(root, "sentinel", (
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"), sentinel=True)

    @property
    def url(self) -> str:
        """REDIS_URL for longtask: the Sentinel and the service it watches."""
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    @property
    def servers(self) -> tuple[Server, Server, Server]:
        return self.primary, self.replica, self.sentinel

    async def __aenter__(self) -> SentinelRedis:
        try:
            await self.primary.start().ready()
            await self.replica.start().ready()
            await wait_for(lambda: self._synced(self.replica), 20, "the replica to sync")
            await self.sentinel.start().ready()
            await wait_for(self._watching, 20, "the Sentinel to see the primary and its replica")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for server in self.servers:
            server.kill()
            await server.client.aclose()
        for server in self.servers:  # pytest shows what a test printed when it fails
            print(f"--- {server.name} (port {server.port}) ---\n{server.tail()}")

    async def primary_port(self) -> int | None:
        """The port of the primary the Sentinel names now, None while it names none."""
        state: dict[str, Any] = await self.sentinel.client.sentinel_master(SERVICE)
        if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
            return None
        return int(state["port"])

    async def wait_promoted(self, timeout: float = 60) -> None:
        """Until the Sentinel names the replica the primary and the replica acts as one."""
        async def promoted() -> bool:
            return (await self.primary_port() == self.replica.port
                    and await self.replica.role() == "master")

        await wait_for(promoted, timeout, "the Sentinel to promote the replica", interval=0.1)

    async def _synced(self, server: Server) -> bool:
        info = await server.client.info("replication")
        return bool(info.get("master_link_status") == "up")

    async def _watching(self) -> bool:
        if await self.primary_port() != self.primary.port:
            return False
        replicas = await self.sentinel.client.sentinel_slaves(SERVICE)
        return [(r["port"], r["is_sdown"], r["master-link-status"]) for r in replicas] \
            == [(self.replica.port, False, "ok")]
