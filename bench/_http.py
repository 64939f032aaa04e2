"""A minimal HTTP/1.1 client over one keep-alive connection, for load generation.

httpx costs several milliseconds of CPU per request under 50-way concurrency, so on a 2-core
machine it, not the server, would set the pace. This client does only what the benchmarks need:
requests with a Content-Length answer, and event streams read line by line.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlparse


class Connection:
    def __init__(self, url: str, key: str) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.key = key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port,
                                                                 limit=1 << 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.transport.abort()

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        assert self.writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {self.key}\r\n")
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)

    async def head(self) -> tuple[int, dict[str, str]]:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON body) of one request; the connection is kept for the next."""
        assert self.reader is not None
        self.send(method, path, b"" if body is None else json.dumps(body).encode())
        status, headers = await self.head()
        data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, json.loads(data) if data else None

    async def lines(self) -> Any:
        """The lines of a chunked event-stream answer (chunk framing is skipped, not checked)."""
        assert self.reader is not None
        while line := await self.reader.readline():
            yield line
