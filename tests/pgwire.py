"""A Postgres client that stops in the middle of a statement, as a frozen process's does.

asyncpg prepares a statement (Parse, Describe, Flush), reads the answer, and only then sends the
rest (Bind, Execute, Sync). A process frozen in between leaves its backend `active` on
`ClientRead`, in a transaction the Parse began, holding the locks the Parse took; neither
idle_in_transaction_session_timeout nor statement_timeout ends that. `StoppedClient` sends the
first half and never the second.
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


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body
