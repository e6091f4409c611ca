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
import os
import re
import ssl
import tempfile
import threading
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
                ssl_context=_ssl_context(cfg),
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

    async def send(self, env: Envelope) -> Outcome:
        try:
            await self.ensure()
        except (TimeoutError, SMTPException, SmtpProtocolError, OSError) as exc:
            await self.drop()
            return Outcome("deferred", None, f"connection failed: {exc}"[:500])
        if env.smtputf8 and not self.smtputf8:
            return Outcome("failed", None, "the relay does not support SMTPUTF8 for this address")
        try:
            if self.fast is not None:
                return await self._pipelined(self.fast, env)
            assert self.compat is not None
            return await self._plain(self.compat, env)
        except _AfterDot as exc:
            await self.drop()
            return Outcome("unknown", None, f"connection lost after the message was sent: {exc.cause}"[:500])
        except (TimeoutError, SMTPException, SmtpProtocolError, OSError) as exc:
            await self.drop()
            return Outcome("deferred", None, f"connection lost: {exc}"[:500])

    async def _pipelined(self, client: FastSmtpClient, env: Envelope) -> Outcome:
        utf8 = " SMTPUTF8" if env.smtputf8 else ""
        client.write(f"MAIL FROM:<{env.mail_from}>{utf8}\r\nRCPT TO:<{env.rcpt_to}>\r\nDATA\r\n".encode())
        mail = await client.read_reply()
        rcpt = await client.read_reply()
        data = await client.read_reply()
        if data.code != 354:
            failed = next((r for r in (mail, rcpt, data) if r.code >= 400), data)
            await client.command("RSET")
            return classify_reply(failed.code, failed.text)
        client.write(_dot_stuff(env.data))
        try:
            await client.drain()
            final = await client.read_reply()
        except (TimeoutError, SmtpProtocolError, OSError) as exc:
            raise _AfterDot(exc) from exc
        return classify_reply(final.code, final.text)

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
        protocol.write(_dot_stuff(env.data))
        try:
            final = await protocol.read_response(timeout=self.config.timeout)
        except (TimeoutError, SMTPException, OSError) as exc:
            raise _AfterDot(exc) from exc
        return classify_reply(final.code, final.message)


@dataclass(slots=True)
class _RelayState:
    """What this process learned about a relay: None until the first EHLO."""

    pipelining: bool | None = None


def _ssl_context(cfg: RelayConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not cfg.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _AfterDot(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")


def _dot_stuff(data: bytes) -> bytes:
    """CRLF line endings, dots doubled at line starts, the terminating dot (RFC 5321 4.5.2)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:  # bare CR or LF: normalise
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
    """A pool of persistent connections to one relay, usable from any thread."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.relay = _RelayState()
        self._loop = _LoopThread.get()
        self._idle: asyncio.Queue[_Connection] | None = None

    async def _pool(self) -> asyncio.Queue[_Connection]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self.config.connections):
                self._idle.put_nowait(_Connection(self.config, self.relay))
        return self._idle

    async def _send_one(self, env: Envelope) -> Outcome:
        pool = await self._pool()
        conn = await pool.get()
        try:
            return await conn.send(env)
        finally:
            pool.put_nowait(conn)

    async def _send_all(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._send_one(env) for env in envelopes)))

    def send_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if not envelopes:
            return []
        future = asyncio.run_coroutine_threadsafe(self._send_all(envelopes), self._loop.loop)
        return future.result()

    async def _close(self) -> None:
        if self._idle is None:
            return
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            try:
                if conn.fast is not None:
                    await conn.fast.quit()
                elif conn.compat is not None and conn.compat.is_connected:
                    await conn.compat.quit()
            except (TimeoutError, SMTPException, SmtpProtocolError, OSError):
                await conn.drop()

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
