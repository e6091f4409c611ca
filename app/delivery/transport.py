"""Transports: the local outbox (embedded default) and SMTP relays (aiosmtplib).

SMTP keeps a pool of persistent connections per relay in one asyncio loop per process;
worker threads hand it whole micro-batches. When the server offers PIPELINING (RFC 2920)
MAIL, RCPT and DATA go out in one write through ``smtp_client.FastSmtpClient``; relays
without it are served by aiosmtplib. Connections are re-opened when they drop.

Every message gets exactly one :class:`Outcome`:

- ``sent``: the server accepted it (2xx after the final dot);
- ``deferred``: 4xx, or the connection failed *before* the final dot — safe to retry;
- ``failed``: 5xx; ``bounced`` when the 5xx says the mailbox does not exist;
- ``unknown``: the connection failed *after* the final dot was written and before the
  reply, so the message may have been accepted. It is never retried (at most once).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlparse

import aiosmtplib
from aiosmtplib.errors import SMTPException, SMTPResponseException

from app.delivery.smtp_client import FastSmtpClient, SmtpProtocolError

_USER_UNKNOWN = re.compile(
    r"\b5\.1\.(0|1|2|3|6|10)\b|user unknown|unknown user|no such (user|mailbox|recipient)|"
    r"mailbox (unavailable|not found|does not exist)|recipient (address )?rejected|does not exist|"
    r"invalid (mailbox|recipient)|unrouteable",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Envelope:
    key: int  # delivery id, or any caller key
    mail_from: str
    rcpt_to: str
    data: bytes
    smtputf8: bool = False
    #: The data has CRLF line ends only (as ``OutgoingMessage.to_bytes`` makes it):
    #: no need to look for bare CR or LF before dot-stuffing.
    crlf: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # sent | deferred | failed | bounced | unknown
    code: int | None = None
    reply: str | None = None


def classify_reply(code: int, message: str) -> Outcome:
    if 200 <= code < 300:
        return Outcome("sent", code, message[:500])
    if 400 <= code < 500:
        return Outcome("deferred", code, message[:500])
    if code in (550, 551, 553, 554, 511) and _USER_UNKNOWN.search(f"{code} {message}"):
        return Outcome("bounced", code, message[:500])
    return Outcome("failed", code, message[:500])


class Transport(Protocol):
    def send_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- outbox
class OutboxTransport:
    """One ``.eml`` file per message under ``<dir>/<yyyy-mm-dd>/``, written atomically."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def send_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        from datetime import UTC, datetime

        day = self.directory / datetime.now(UTC).strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        outcomes = []
        for env in envelopes:
            head = f"Return-Path: <{env.mail_from}>\r\nX-Listwarden-Envelope-To: {env.rcpt_to}\r\n".encode()
            fd, tmp = tempfile.mkstemp(dir=day, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(head + env.data)
            final = day / f"{env.key}.eml"
            os.replace(tmp, final)
            outcomes.append(Outcome("sent", 250, f"written to {final.name}"))
        return outcomes

    def close(self) -> None:
        return None


# --------------------------------------------------------------------------- SMTP
@dataclass(frozen=True, slots=True)
class RelayConfig:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool | None = None  # None: when offered
    connections: int = 8
    timeout: float = 60.0
    helo: str | None = None
    validate_certs: bool = True
    pipelining: bool = True

    @classmethod
    def from_url(cls, url: str) -> RelayConfig:
        """``smtp://user:pass@host:port?starttls=1&connections=8&timeout=60&helo=name``,
        ``smtps://`` for implicit TLS."""
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps"):
            raise ValueError(f"unsupported SMTP URL {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}

        def flag(name: str) -> bool | None:
            if name not in query:
                return None
            return query[name].lower() in ("1", "true", "yes", "on")

        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (465 if parsed.scheme == "smtps" else 25),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            use_tls=parsed.scheme == "smtps",
            start_tls=flag("starttls"),
            connections=max(1, int(query.get("connections", 8))),
            timeout=float(query.get("timeout", 60)),
            helo=query.get("helo"),
            validate_certs=flag("verify") is not False,
            pipelining=flag("pipelining") is not False,
        )


class _Connection:
    """One persistent connection: our pipelining client, or aiosmtplib for relays that
    do not offer PIPELINING."""

    def __init__(self, config: RelayConfig, relay: _RelayState) -> None:
        self.config = config
        self.relay = relay
        self.fast: FastSmtpClient | None = None
        self.compat: aiosmtplib.SMTP | None = None
        self.smtputf8 = False

    @property
    def connected(self) -> bool:
        if self.fast is not None:
            return self.fast.connected
        return self.compat is not None and self.compat.is_connected

    async def ensure(self) -> None:
        if self.connected:
            return
        await self.drop()
        cfg = self.config
        if cfg.pipelining and self.relay.pipelining is not False:
            fast = FastSmtpClient(cfg.host, cfg.port, timeout=cfg.timeout, helo=cfg.helo)
            await fast.connect(
                use_tls=cfg.use_tls,
                start_tls=cfg.start_tls,
                username=cfg.username,
                password=cfg.password,
                ssl_context=_ssl_context(cfg) if cfg.use_tls or cfg.start_tls is not False else None,
            )
            if fast.supports("pipelining"):
                self.relay.pipelining = True
                self.fast, self.smtputf8 = fast, fast.supports("smtputf8")
                return
            self.relay.pipelining = False
            await fast.quit()
        compat = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=cfg.use_tls,
            start_tls=cfg.start_tls,
            timeout=cfg.timeout,
            local_hostname=cfg.helo,
            validate_certs=cfg.validate_certs,
            username=cfg.username,
            password=cfg.password,
        )
        await compat.connect()
        self.compat, self.smtputf8 = compat, compat.supports_extension("smtputf8")

    async def drop(self) -> None:
        fast, self.fast = self.fast, None
        compat, self.compat = self.compat, None
        if fast is not None:
            fast.close()
        if compat is not None:
            with contextlib.suppress(Exception):
                compat.close()

    async def send(self, job: _Job, queue: _JobQueue) -> _Job | None:
        """Send one message and settle its future. On a pipelining relay the next waiting
        message's MAIL, RCPT and DATA go out right behind this one's final dot (RFC 2920)
        and that message is returned: the caller must send it next, with ``job.sent``."""
        if job.sent and not self.connected:  # its commands went out on a connection now gone
            job.sent = False
        try:
            await self.ensure()
        except (TimeoutError, SMTPException, SmtpProtocolError, OSError) as exc:
            await self.drop()
            job.settle(Outcome("deferred", None, f"connection failed: {exc}"[:500]))
            return None
        if job.env.smtputf8 and not self.smtputf8:
            job.settle(Outcome("failed", None, "the relay does not support SMTPUTF8 for this address"))
            return None
        following: _Job | None = None
        try:
            if self.fast is not None:
                outcome, following = await self._pipelined(self.fast, job, queue)
            else:
                assert self.compat is not None
                outcome = await self._plain(self.compat, job.env)
        except _AfterDot as exc:
            await self.drop()
            reason = f"connection lost after the message was sent: {exc.cause}"
            outcome = Outcome("unknown", None, reason[:500])
            following = exc.following
        except (TimeoutError, SMTPException, SmtpProtocolError, OSError) as exc:
            await self.drop()
            outcome = Outcome("deferred", None, f"connection lost: {exc}"[:500])
        job.settle(outcome)
        if following is not None and not self.connected:
            # its commands went out on a connection that is gone: it never reached DATA
            following.settle(Outcome("deferred", None, "connection lost before the message was sent"))
            return None
        return following

    async def _pipelined(
        self, client: FastSmtpClient, job: _Job, queue: _JobQueue
    ) -> tuple[Outcome, _Job | None]:
        env = job.env
        if not job.sent:
            client.write(_commands(env))
        mail, rcpt, data = await client.read_replies(3)
        if data.code != 354:
            failed = next((r for r in (mail, rcpt, data) if r.code >= 400), data)
            await client.command("RSET")
            return classify_reply(failed.code, failed.text), None
        payload = _dot_stuff(env.data, crlf=env.crlf)
        following = queue.take_nowait(self.smtputf8)
        if following is not None:
            following.sent = True
            payload += _commands(following.env)
        client.write(payload)
        try:
            await client.drain()
            final = await client.read_reply()
        except (TimeoutError, SmtpProtocolError, OSError) as exc:
            raise _AfterDot(exc, following) from exc
        return classify_reply(final.code, final.text), following

    async def _plain(self, client: aiosmtplib.SMTP, env: Envelope) -> Outcome:
        options = ["SMTPUTF8"] if env.smtputf8 else []
        try:
            await client.mail(env.mail_from, options=options)
            await client.rcpt(env.rcpt_to)
        except SMTPResponseException as exc:
            await client.rset()
            return classify_reply(exc.code, exc.message)
        protocol = client.protocol
        assert protocol is not None
        start = await client.execute_command(b"DATA")
        if start.code != 354:
            await client.rset()
            return classify_reply(start.code, start.message)
        protocol.write(_dot_stuff(env.data, crlf=env.crlf))
        try:
            final = await protocol.read_response(timeout=self.config.timeout)
        except (TimeoutError, SMTPException, OSError) as exc:
            raise _AfterDot(exc) from exc
        return classify_reply(final.code, final.message)


@dataclass(slots=True)
class _RelayState:
    """What this process learned about a relay: None until the first EHLO."""

    pipelining: bool | None = None


@functools.lru_cache(maxsize=32)
def _ssl_context(cfg: RelayConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not cfg.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _AfterDot(Exception):
    def __init__(self, cause: BaseException, following: _Job | None = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.following = following


def _commands(env: Envelope) -> bytes:
    utf8 = " SMTPUTF8" if env.smtputf8 else ""
    return f"MAIL FROM:<{env.mail_from}>{utf8}\r\nRCPT TO:<{env.rcpt_to}>\r\nDATA\r\n".encode()


class _Job:
    """One message waiting for a connection, and the future its batch waits on."""

    __slots__ = ("batch", "env", "index", "sent")

    def __init__(self, env: Envelope, batch: _Batch, index: int) -> None:
        self.env = env
        self.batch = batch
        self.index = index
        self.sent = False  # MAIL, RCPT and DATA already written (pipelined after a dot)

    def settle(self, outcome: Outcome) -> None:
        self.batch.settle(self.index, outcome)


class _Batch:
    """The outcomes of one ``send_batch`` call; its future resolves when all are in."""

    __slots__ = ("future", "left", "outcomes")

    def __init__(self, size: int, future: asyncio.Future[list[Outcome]]) -> None:
        self.outcomes: list[Outcome | None] = [None] * size
        self.left = size
        self.future = future

    def settle(self, index: int, outcome: Outcome) -> None:
        if self.outcomes[index] is None:
            self.outcomes[index] = outcome
            self.left -= 1
            if self.left == 0 and not self.future.done():
                self.future.set_result([o for o in self.outcomes if o is not None])


class _JobQueue:
    """Messages waiting for a connection: a deque, and a future per idle connection."""

    def __init__(self) -> None:
        self.jobs: deque[_Job] = deque()
        self.idle: deque[asyncio.Future[None]] = deque()

    def put_all(self, jobs: Sequence[_Job]) -> None:
        self.jobs.extend(jobs)
        while self.idle and self.jobs:
            waiter = self.idle.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def take(self) -> _Job:
        while not self.jobs:
            waiter = asyncio.get_running_loop().create_future()
            self.idle.append(waiter)
            await waiter
        return self.jobs.popleft()

    def take_nowait(self, smtputf8: bool) -> _Job | None:
        """The next job if one waits (and this connection can send it), else None."""
        if self.jobs and (smtputf8 or not self.jobs[0].env.smtputf8):
            return self.jobs.popleft()
        return None


_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")


def _dot_stuff(data: bytes, *, crlf: bool = False) -> bytes:
    """CRLF line endings, dots doubled at line starts, the terminating dot (RFC 5321 4.5.2).
    ``crlf``: the caller knows the line ends are all CRLF already."""
    if not crlf:
        count = data.count(b"\r\n")
        if data.count(b"\n") != count or data.count(b"\r") != count:  # bare CR or LF: normalise
            data = _BARE_CR.sub(b"\r\n", _BARE_LF.sub(b"\r\n", data))
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class _LoopThread:
    """One asyncio loop per process, in a daemon thread, shared by all relays."""

    _instance: _LoopThread | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="listwarden-smtp", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or not cls._instance.thread.is_alive():
                cls._instance = cls()
            return cls._instance


class SmtpTransport:
    """Persistent connections to one relay, usable from any thread: one asyncio task per
    connection takes messages from a shared queue, so batches from several threads share
    the connections."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.relay = _RelayState()
        self._loop = _LoopThread.get()
        self._queue: _JobQueue | None = None
        self._connections: list[_Connection] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _start(self) -> _JobQueue:
        if self._queue is None:
            self._queue = _JobQueue()
            for _ in range(self.config.connections):
                conn = _Connection(self.config, self.relay)
                self._connections.append(conn)
                self._tasks.append(asyncio.get_running_loop().create_task(self._serve(conn, self._queue)))
        return self._queue

    async def _serve(self, conn: _Connection, queue: _JobQueue) -> None:
        following: _Job | None = None
        while True:
            job = following if following is not None else await queue.take()
            following = None
            try:
                following = await conn.send(job, queue)
            except asyncio.CancelledError:  # closing mid-send: it may have gone out
                job.settle(Outcome("unknown", None, "the transport closed while sending"))
                raise
            except Exception as exc:  # never leave a batch waiting: this is a bug
                await conn.drop()
                job.settle(Outcome("unknown", None, f"internal error while sending: {exc}"[:500]))

    async def _send_all(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        queue = self._start()
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        batch = _Batch(len(envelopes), future)
        queue.put_all([_Job(env, batch, i) for i, env in enumerate(envelopes)])
        return await future

    def send_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if not envelopes:
            return []
        future = asyncio.run_coroutine_threadsafe(self._send_all(envelopes), self._loop.loop)
        return future.result()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._queue is not None:
            for job in self._queue.jobs:
                job.settle(Outcome("deferred", None, "the transport closed before sending"))
            self._queue.jobs.clear()
        for conn in self._connections:
            try:
                if conn.fast is not None:
                    await conn.fast.quit()
                elif conn.compat is not None and conn.compat.is_connected:
                    await conn.compat.quit()
            except (TimeoutError, SMTPException, SmtpProtocolError, OSError):
                await conn.drop()
        self._connections.clear()
        self._queue = None

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop.loop).result(timeout=10)


_transports: dict[str, Transport] = {}
_transports_lock = threading.Lock()


def get_transport(url: str) -> Transport:
    """The transport for ``LISTWARDEN_SMTP_URL`` (``outbox:DIR``, ``smtp://…``, ``smtps://…``)."""
    with _transports_lock:
        transport = _transports.get(url)
        if transport is None:
            if url.startswith("outbox:"):
                transport = OutboxTransport(url.removeprefix("outbox:"))
            else:
                transport = SmtpTransport(RelayConfig.from_url(url))
            _transports[url] = transport
        return transport


def close_transports() -> None:
    with _transports_lock:
        for transport in _transports.values():
            try:
                transport.close()
            except Exception:  # noqa: S112 - best effort at shutdown
                continue
        _transports.clear()
