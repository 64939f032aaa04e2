"""Postgres clients stopped in the middle of a statement, as a frozen process's are.

asyncpg prepares a statement (Parse, Describe, Flush), reads the answer, and only then sends the
rest (Bind, Execute, Sync). A process frozen in between leaves its backend `active` on
`ClientRead`, in a transaction the Parse began (or the one it was in), holding the locks the
Parse took and any the transaction holds; neither idle_in_transaction_session_timeout nor
statement_timeout ends that. `StoppedClient` sends the first half and never the second;
`HoldingProxy` stands between a real process and the server and stops that process's first
statement that matches, after the first half, so a test can freeze the process right there.
"""

from __future__ import annotations

import asyncio
import struct
from types import TracebackType
from urllib.parse import urlsplit


class StoppedClient:
    """One connection (trust authentication, TCP) to the server of `url`."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.user = parts.username or "postgres"
        self.database = parts.path.lstrip("/") or "postgres"
        self.backend_pid = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> StoppedClient:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        params = f"user\0{self.user}\0database\0{self.database}\0\0".encode()
        body = struct.pack("!i", 196608) + params  # protocol 3.0
        self._writer.write(struct.pack("!i", len(body) + 4) + body)
        for kind, data in await self._read_until(b"Z"):
            if kind == b"R" and struct.unpack("!i", data[:4])[0] != 0:
                raise NotImplementedError("the server asks for a password")
            if kind == b"K":
                self.backend_pid = struct.unpack("!i", data[:4])[0]
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._writer is not None
        self._writer.close()  # the backend sees the end of the stream and rolls back

    async def stop_in(self, sql: str) -> None:
        """Prepare `sql` as asyncpg does and stop there, holding what its Parse locked."""
        assert self._writer is not None
        self._writer.write(_message(b"P", b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))
                           + _message(b"D", b"S\0") + _message(b"H", b""))
        await self._read_until(b"Tn")  # RowDescription or NoData: the Parse is done

    async def _read_until(self, kinds: bytes) -> list[tuple[bytes, bytes]]:
        assert self._reader is not None and self._writer is not None
        await self._writer.drain()
        got = []
        while True:
            head = await self._reader.readexactly(5)
            kind, size = head[:1], struct.unpack("!i", head[1:])[0]
            data = await self._reader.readexactly(size - 4)
            if kind == b"E":
                raise RuntimeError(f"the server refused: {data!r}")
            got.append((kind, data))
            if kind in [bytes([k]) for k in kinds]:
                return got


class HoldingProxy:
    """A TCP proxy in front of the Postgres of `url` that passes everything until a client
    prepares a statement containing `statement`: from that connection it then holds back
    whatever follows the prepare, until `release()`. `held` is set once it holds."""

    def __init__(self, url: str, statement: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._url = parts
        self.statement = statement.encode()
        self.held = asyncio.Event()
        self.upstream_ports: set[int] = set()  # the client ports the server sees, ours
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return self._url._replace(netloc=f"{self._url.username or 'postgres'}@127.0.0.1:{port}"
                                  ).geturl()

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def release(self) -> None:
        self._released.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.upstream_ports.add(up_writer.get_extra_info("sockname")[1])
        for pipe in (self._client_to_server(reader, up_writer), _copy(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)

    async def _client_to_server(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        started = False  # the startup message (and an SSLRequest before it) has no type byte
        armed = False
        try:
            while True:
                if not started:
                    head = await reader.readexactly(4)
                    body = await reader.readexactly(struct.unpack("!i", head)[0] - 4)
                    started = body[:4] != struct.pack("!i", 80877103)  # not an SSLRequest
                    writer.write(head + body)
                    await writer.drain()
                    continue
                head = await reader.readexactly(5)
                body = await reader.readexactly(struct.unpack("!i", head[1:])[0] - 4)
                writer.write(head + body)
                await writer.drain()
                kind = head[:1]
                if kind == b"P" and not self.held.is_set() and self.statement in body:
                    armed = True
                elif armed and kind in (b"H", b"S"):  # the end of the prepare: hold the rest
                    armed = False
                    self.held.set()
                    await self._released.wait()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body
