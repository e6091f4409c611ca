"""A small SMTP client for the sending hot path: RFC 5321 with PIPELINING (RFC 2920).

aiosmtplib reads exactly one reply per command written, so it cannot pipeline (its
``read_response`` drops replies that arrive together). This client reads replies from an
``asyncio.StreamReader`` line by line, so MAIL, RCPT and DATA can go out in one write and
their three replies be read back in order. It does what a relay session needs and no
more: EHLO, STARTTLS, AUTH PLAIN/LOGIN, SMTPUTF8, transactions, RSET and QUIT. Relays
that do not offer PIPELINING are served by aiosmtplib (see ``transport``)."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field

_MAX_LINE = 2**20


class SmtpProtocolError(Exception):
    """The server's answer was not SMTP, or the connection closed."""


@dataclass(slots=True)
class Reply:
    code: int
    text: str


@dataclass(slots=True)
class FastSmtpClient:
    host: str
    port: int
    timeout: float = 60.0
    helo: str | None = None
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    #: Reply lines read but not yet consumed, and the start of a line still incomplete:
    #: replies to pipelined commands usually arrive in one read.
    _lines: deque[bytes] = field(default_factory=deque)
    _partial: bytes = b""
    #: Since when (``time.monotonic``) the client waits for the server, 0.0 while it does
    #: not; a watchdog task aborts the connection once that is ``timeout`` ago. (An
    #: ``asyncio.timeout`` around each read armed and cancelled a timer twice a message,
    #: a sixth of the SMTP thread's CPU.)
    _waiting_since: float = 0.0
    _timed_out: bool = False
    _watchdog: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    def supports(self, name: str) -> bool:
        return name.lower() in self.extensions

    async def connect(
        self,
        *,
        use_tls: bool = False,
        start_tls: bool | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if ssl_context is None and (use_tls or start_tls is not False):
            ssl_context = ssl.create_default_context()
        context = ssl_context
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=context if use_tls else None, limit=2**20),
            self.timeout,
        )
        self.reader, self.writer = reader, writer
        self._timed_out = False
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(writer))
        try:
            await self._open_session(writer, use_tls, start_tls, username, password, context)
        except BaseException:
            self.close()
            raise

    async def _open_session(
        self,
        writer: asyncio.StreamWriter,
        use_tls: bool,
        start_tls: bool | None,
        username: str | None,
        password: str | None,
        context: ssl.SSLContext | None,
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greeting = await self.read_reply()
        if greeting.code != 220:
            raise SmtpProtocolError(f"greeting: {greeting.code} {greeting.text}")
        await self.ehlo()
        if not use_tls and (start_tls or (start_tls is None and self.supports("starttls"))):
            reply = await self.command("STARTTLS")
            if reply.code != 220:
                raise SmtpProtocolError(f"STARTTLS: {reply.code} {reply.text}")
            if self._lines or self._partial:  # plain text sent after 220 must not count as TLS
                raise SmtpProtocolError("the server sent data after agreeing to STARTTLS")
            assert context is not None
            await asyncio.wait_for(writer.start_tls(context, server_hostname=self.host), self.timeout)
            await self.ehlo()
        if username is not None:
            await self._auth(username, password or "")

    async def ehlo(self) -> None:
        reply = await self.command(f"EHLO {self.helo or socket.getfqdn() or 'localhost'}")
        if reply.code != 250:
            raise SmtpProtocolError(f"EHLO: {reply.code} {reply.text}")
        self.extensions = {}
        for line in reply.text.split("\n")[1:]:
            name, _, params = line.strip().partition(" ")
            self.extensions[name.lower()] = params

    async def _auth(self, username: str, password: str) -> None:
        methods = self.extensions.get("auth", "").upper().split()
        if "PLAIN" in methods or not methods:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            reply = await self.command(f"AUTH PLAIN {token}")
        elif "LOGIN" in methods:
            reply = await self.command("AUTH LOGIN")
            if reply.code == 334:
                reply = await self.command(base64.b64encode(username.encode()).decode())
            if reply.code == 334:
                reply = await self.command(base64.b64encode(password.encode()).decode())
        else:
            raise SmtpProtocolError(f"no supported AUTH method among {methods}")
        if reply.code != 235:
            raise SmtpProtocolError(f"AUTH: {reply.code} {reply.text}")

    def write(self, data: bytes) -> None:
        if self.writer is None:
            raise SmtpProtocolError("not connected")
        self.writer.write(data)

    async def read_reply(self) -> Reply:
        """The next reply; ``TimeoutError`` when the server sends nothing for ``timeout``."""
        return await self._reply()

    async def read_replies(self, count: int) -> list[Reply]:
        """``count`` replies (to pipelined commands), in order."""
        replies = []
        for _ in range(count):
            reply = self._ready_reply()  # usually all of them came in one read
            replies.append(reply if reply is not None else await self._reply())
        return replies

    async def _watch(self, writer: asyncio.StreamWriter) -> None:
        """Abort the connection when the client has waited ``timeout`` for the server; the
        read or drain that waits then fails (``TimeoutError``). Ends with the connection."""
        interval = min(1.0, max(0.05, self.timeout / 10))
        while self.writer is writer and not writer.is_closing():
            await asyncio.sleep(interval)
            since = self._waiting_since
            if since and time.monotonic() - since >= self.timeout and self.writer is writer:
                self._timed_out = True
                writer.transport.abort()
                return

    def _gone(self, what: str) -> Exception:
        if self._timed_out:
            return TimeoutError(f"no answer from the server in {self.timeout:g} s")
        return SmtpProtocolError(what)

    async def _fill(self) -> None:
        reader = self.reader
        if reader is None:
            raise self._gone("not connected")
        self._waiting_since = time.monotonic()
        try:
            data = await reader.read(65536)
        finally:
            self._waiting_since = 0.0
        if not data:
            raise self._gone("connection closed by the server")
        if b"\n" not in data:
            self._partial += data
            if len(self._partial) > _MAX_LINE:
                raise SmtpProtocolError("reply line too long")
            return
        *complete, rest = (self._partial + data).split(b"\n")
        self._lines.extend(complete)
        self._partial = rest

    async def _reply(self) -> Reply:
        while True:
            reply = self._ready_reply()
            if reply is not None:
                return reply
            await self._fill()

    def _ready_reply(self) -> Reply | None:
        """The next reply, taken from the lines read, if all its lines are there; else
        None, and nothing is taken."""
        pending = self._lines
        if not pending:
            return None
        first = pending[0]
        if first[3:4] == b" " and first[:3].isdigit():  # a one-line reply: the usual case
            pending.popleft()
            return Reply(int(first[:3]), first[4:].rstrip(b"\r").decode("utf-8", "replace"))
        lines: list[str] = []
        for raw in pending:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if len(line) < 3 or not line[:3].isdigit():
                raise SmtpProtocolError(f"malformed reply line {line[:80]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                for _ in lines:
                    pending.popleft()
                return Reply(int(line[:3]), "\n".join(lines))
        return None  # the last line of a multi-line reply is still to come

    async def command(self, text: str) -> Reply:
        self.write(text.encode("utf-8") + b"\r\n")
        await self.drain()
        return await self.read_reply()

    async def drain(self) -> None:
        """Wait until the written data has gone to the socket (the server reads it);
        ``TimeoutError`` when it has not taken any for ``timeout``."""
        writer = self.writer
        if writer is None:
            return
        self._waiting_since = time.monotonic()
        try:
            await writer.drain()
        except ConnectionError as exc:
            if self._timed_out:
                raise self._gone("") from exc
            raise
        finally:
            self._waiting_since = 0.0

    async def quit(self) -> None:
        try:
            if self.connected:
                await self.command("QUIT")
        finally:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.reader = self.writer = None
        self._lines.clear()
        self._partial = b""
