"""The SMTP client pipelines the next transaction behind the end-of-data dot (RFC 2920)
when the relay offers PIPELINING, and never when it does not; every message gets exactly
one outcome, also when the connection drops between a dot and its reply."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from app.delivery.transport import Envelope, RelayConfig, SmtpTransport
from tests.smtp_server import SmtpServer, free_port


def _envelopes(n: int, start: int = 0) -> list[Envelope]:
    return [
        Envelope(
            key=i,
            mail_from=f"bounce+{i}@bounces.example.com",
            rcpt_to=f"person{i}@example.org",
            data=f"Subject: {i}\r\n\r\n.line starting with a dot\r\nmessage {i}\r\n".encode(),
        )
        for i in range(start, start + n)
    ]


def test_many_messages_over_few_connections_against_aiosmtpd() -> None:
    with SmtpServer() as server:
        transport = SmtpTransport(
            RelayConfig.from_url(f"smtp://127.0.0.1:{server.port}?starttls=0&connections=2")
        )
        try:
            outcomes = transport.send_batch(_envelopes(300))
            outcomes += transport.send_batch(_envelopes(50, start=300))
        finally:
            transport.close()
        assert [o.status for o in outcomes] == ["sent"] * 350
        received = server.handler.by_rcpt()
        assert sorted(received) == sorted(f"person{i}@example.org" for i in range(350))
        assert all(len(items) == 1 for items in received.values())
        item = received["person7@example.org"][0]
        assert item.mail_from == "bounce+7@bounces.example.com"
        assert b".line starting with a dot\r\nmessage 7" in item.data


@dataclass
class Scripted:
    """A raw SMTP server: records each chunk it reads and answers line by line.
    ``final``: the reply to the end-of-data dot of the n-th message (1-based), "drop"
    to close the connection instead of answering, or "silent" to answer nothing (and keep
    the connection open). ``silent_mail``: MAIL gets no answer, ever."""

    pipelining: bool
    final: dict[int, str] = field(default_factory=dict)
    silent_mail: bool = False
    chunks: list[bytes] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    count: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        in_data = False
        rcpt = ""
        buffer = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            self.chunks.append(chunk)
            buffer += chunk
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                if in_data:
                    if line == b".":
                        in_data = False
                        self.count += 1
                        answer = self.final.get(self.count, "250 2.0.0 queued")
                        if answer == "drop":
                            writer.close()
                            return
                        if answer == "silent":  # read on, answer nothing more
                            while await reader.read(65536):
                                pass
                            writer.close()
                            return
                        if answer == "accept-and-close":  # 250, then hang up on what follows
                            self.delivered.append(rcpt)
                            writer.write(b"250 2.0.0 queued\r\n")
                            await writer.drain()
                            writer.close()
                            return
                        if answer.startswith("250"):
                            self.delivered.append(rcpt)
                        writer.write(answer.encode() + b"\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    extra = b"250-PIPELINING\r\n" if self.pipelining else b""
                    writer.write(b"250-scripted\r\n" + extra + b"250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    if not self.silent_mail:
                        writer.write(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    rcpt = line.decode().split("<", 1)[1].rstrip(">")
                    writer.write(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    in_data = True
                    writer.write(b"354 go ahead\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    def pipelined_after_dot(self) -> int:
        return sum(1 for chunk in self.chunks if b"\r\n.\r\nMAIL FROM:" in chunk)

    def commands_after_dot_without_waiting(self) -> int:
        """Chunks in which anything follows the end-of-data dot."""
        return sum(1 for chunk in self.chunks if b"\r\n.\r\n" in chunk and not chunk.endswith(b"\r\n.\r\n"))


@pytest.fixture
def scripted() -> Iterator[tuple[Scripted, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    holder: dict[str, Scripted] = {}

    def make(**kwargs: object) -> Scripted:
        server = Scripted(**kwargs)  # type: ignore[arg-type]
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(server.handle, "127.0.0.1", server.port), loop
        ).result(5)
        holder["s"] = server
        return server

    yield make, loop  # type: ignore[misc]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _transport(port: int, connections: int = 1, timeout: float = 5) -> SmtpTransport:
    return SmtpTransport(
        RelayConfig.from_url(
            f"smtp://127.0.0.1:{port}?starttls=0&connections={connections}&timeout={timeout:g}"
        )
    )


def test_next_mail_follows_the_dot_when_pipelining_is_offered(scripted) -> None:  # type: ignore[no-untyped-def]
    make, _loop = scripted
    server = make(pipelining=True)
    transport = _transport(server.port)
    try:
        outcomes = transport.send_batch(_envelopes(20))
    finally:
        transport.close()
    assert [o.status for o in outcomes] == ["sent"] * 20
    assert server.delivered == [f"person{i}@example.org" for i in range(20)]
    assert server.pipelined_after_dot() == 19  # every message but the first came behind a dot


def test_nothing_follows_the_dot_without_pipelining(scripted) -> None:  # type: ignore[no-untyped-def]
    make, _loop = scripted
    server = make(pipelining=False)
    transport = _transport(server.port)
    try:
        outcomes = transport.send_batch(_envelopes(10))
    finally:
        transport.close()
    assert [o.status for o in outcomes] == ["sent"] * 10
    assert server.delivered == [f"person{i}@example.org" for i in range(10)]
    assert server.commands_after_dot_without_waiting() == 0
    assert not any(
        chunk.count(b"\r\n") > 1 and b"MAIL FROM" in chunk and b"RCPT TO" in chunk for chunk in server.chunks
    )


def test_a_rejected_message_does_not_disturb_the_pipelined_next(scripted) -> None:  # type: ignore[no-untyped-def]
    make, _loop = scripted
    server = make(pipelining=True, final={2: "451 4.3.0 try later", 3: "554 5.7.1 refused"})
    transport = _transport(server.port)
    try:
        outcomes = transport.send_batch(_envelopes(5))
    finally:
        transport.close()
    assert [o.status for o in outcomes] == ["sent", "deferred", "failed", "sent", "sent"]
    assert server.delivered == ["person0@example.org", "person3@example.org", "person4@example.org"]


def test_connection_lost_after_a_dot(scripted) -> None:  # type: ignore[no-untyped-def]
    """The message whose dot went out is ``unknown`` (never retried); the one whose MAIL
    was pipelined behind it never reached DATA, so it is ``deferred``; the rest go out
    on a new connection."""
    make, _loop = scripted
    server = make(pipelining=True, final={3: "drop"})
    transport = _transport(server.port)
    try:
        outcomes = transport.send_batch(_envelopes(6))
    finally:
        transport.close()
    statuses = [o.status for o in outcomes]
    assert statuses[:2] == ["sent", "sent"]
    assert statuses[2] == "unknown"
    assert statuses[3] == "deferred"
    assert statuses[4:] == ["sent", "sent"]
    assert server.delivered == [
        "person0@example.org",
        "person1@example.org",
        "person4@example.org",
        "person5@example.org",
    ]


def test_server_hangs_up_after_accepting(scripted) -> None:  # type: ignore[no-untyped-def]
    """The server accepts a message and closes: that one is sent; the one pipelined behind
    its dot never reached DATA and is deferred (not lost, not waiting for a timeout)."""
    make, _loop = scripted
    server = make(pipelining=True, final={2: "accept-and-close"})
    transport = _transport(server.port)
    try:
        started = time.monotonic()
        outcomes = transport.send_batch(_envelopes(4))
        elapsed = time.monotonic() - started
    finally:
        transport.close()
    statuses = [o.status for o in outcomes]
    assert statuses[:2] == ["sent", "sent"]
    assert statuses[2] == "deferred"
    assert statuses[3] == "sent"
    assert elapsed < 4  # well under the 5 s reply timeout
    assert server.delivered == ["person0@example.org", "person1@example.org", "person3@example.org"]


def test_no_answer_after_a_dot_times_out_as_unknown(scripted) -> None:  # type: ignore[no-untyped-def]
    """The server takes a message and never answers its dot: after the reply timeout that
    message is ``unknown`` (it may have been accepted: never retried), the one pipelined
    behind it never reached DATA (``deferred``), and the rest go out on a new connection."""
    make, _loop = scripted
    server = make(pipelining=True, final={2: "silent"})
    transport = _transport(server.port, timeout=1)
    try:
        started = time.monotonic()
        outcomes = transport.send_batch(_envelopes(4))
        elapsed = time.monotonic() - started
    finally:
        transport.close()
    assert [o.status for o in outcomes] == ["sent", "unknown", "deferred", "sent"]
    assert outcomes[1].reply is not None and "no answer from the server in 1 s" in outcomes[1].reply
    assert 0.9 <= elapsed < 4
    assert server.delivered == ["person0@example.org", "person3@example.org"]


def test_no_answer_before_the_data_times_out_as_deferred(scripted) -> None:  # type: ignore[no-untyped-def]
    """A server that never answers MAIL: the message is ``deferred`` after the reply
    timeout (nothing was sent), not left waiting."""
    make, _loop = scripted
    server = make(pipelining=True, silent_mail=True)
    transport = _transport(server.port, timeout=1)
    try:
        started = time.monotonic()
        outcomes = transport.send_batch(_envelopes(1))
        elapsed = time.monotonic() - started
    finally:
        transport.close()
    assert [o.status for o in outcomes] == ["deferred"]
    assert outcomes[0].reply is not None and "no answer from the server in 1 s" in outcomes[0].reply
    assert 0.9 <= elapsed < 4
    assert server.delivered == []
