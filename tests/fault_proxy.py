"""A TCP proxy on loopback in front of a real server (SeaweedFS, PostgreSQL) that a test can
make fail the way networks and servers do. The client and the server are the real ones;
only the wire between them misbehaves, on request:

* `faults`: reset or stall the response to an HTTP request whose request line contains
  some bytes, after a given number of response bytes (a connection reset or a stalled
  body mid-object). A stalled response stays silent until the client gives up (its read
  timeout), or the test resumes it or resets its connection;
* `refuse()` / `accept()`: stop listening (connections are refused, as by a server that is
  down), then listen again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

HTTP_METHODS = (b"GET ", b"HEAD ", b"PUT ", b"POST ", b"DELETE ")
CHUNK_BYTES = 64 * 1024


@dataclass
class ResponseFault:
    """Break the response to requests whose request line contains `request_contains`:
    after `after_bytes` of it (headers included), reset the connection or stop sending."""

    action: Literal["reset", "stall"]
    request_contains: bytes
    after_bytes: int = 0
    times: int | None = 1  # None: every matching response
    hits: int = 0
    stalled: int = 0  # responses stalled right now
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _reset_on_release: bool = False

    def resume(self) -> None:
        """Stalled responses go on (and later ones are not stalled)."""
        self._released.set()

    def reset_stalled(self) -> None:
        """Reset the connections of the stalled responses (and later ones, at once)."""
        self._reset_on_release = True
        self._released.set()

    def claim(self, request_line: bytes) -> bool:
        if self.request_contains not in request_line:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


class _Link:
    """One client connection and the proxy's connection to the server for it."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.fault: ResponseFault | None = None
        self.response_bytes = 0

    def reset(self) -> None:
        """Close both ends with a TCP RST, as a crashed peer or a middlebox would."""
        for writer in (self.client, self.server):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.faults: list[ResponseFault] = []
        # Every HTTP request line that went through, for assertions on retries.
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def requests_containing(self, part: bytes) -> int:
        return sum(part in line for line in self.requests)

    def refuse(self) -> None:
        assert self._server is not None
        self._server.close()
        self._server = None

    async def accept(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            self.refuse()
        for link in list(self._links):
            link.reset()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            try:
                server_reader, server = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                client.transport.abort()
                return
            link = _Link(client, server)
            self._links.add(link)
            pumps = [
                asyncio.create_task(self._upstream(link, client_reader)),
                asyncio.create_task(self._downstream(link, server_reader)),
            ]
            try:
                # One direction ending (EOF, reset, fault) ends the connection.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                self._links.discard(link)
                for writer in (client, server):
                    writer.transport.abort()
        finally:
            self._handlers.discard(handler)

    async def _upstream(self, link: _Link, reader: asyncio.StreamReader) -> None:
        """Client to server, noting each HTTP request line to match faults to responses."""
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK_BYTES):
                if data.startswith(HTTP_METHODS):
                    request_line = data.split(b"\r\n", 1)[0]
                    self.requests.append(request_line)
                    link.response_bytes = 0
                    link.fault = next((f for f in self.faults if f.claim(request_line)), None)
                link.server.write(data)
                await link.server.drain()

    async def _downstream(self, link: _Link, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK_BYTES):
                fault = link.fault
                if fault is not None and link.response_bytes + len(data) > fault.after_bytes:
                    link.fault = None
                    allowed = max(0, fault.after_bytes - link.response_bytes)
                    link.client.write(data[:allowed])
                    await link.client.drain()
                    link.response_bytes += allowed
                    data = data[allowed:]
                    if fault.action == "stall":
                        fault.stalled += 1
                        try:
                            await fault._released.wait()
                        finally:
                            fault.stalled -= 1
                    if fault.action == "reset" or fault._reset_on_release:
                        link.reset()
                        return
                link.response_bytes += len(data)
                link.client.write(data)
                await link.client.drain()
