"""A real SMTP server for tests (aiosmtpd, in this process), advertising PIPELINING.

It records every transaction: when its MAIL command arrived (``time.monotonic()``), the
envelope and the message. A script can make it answer a recipient with a 4xx or 5xx, or
drop the connection, on chosen attempts."""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt: str
    began: float
    data: bytes

    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    received: list[Received] = field(default_factory=list)
    #: rcpt -> list of actions for attempt 1, 2, …: "ok", "451", "550", "drop-rcpt", "drop-data"
    script: dict[str, list[str]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        last = responses[-1]
        return [*responses[:-1], "250-PIPELINING", last]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        session.began = time.monotonic()  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.attempts[address] += 1
            step = self.attempts[address]
        actions = self.script.get(address, [])
        action = actions[step - 1] if step <= len(actions) else "ok"
        if action == "451":
            return "451 4.7.1 Try again later"
        if action == "550":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if action == "554":
            return "554 5.7.1 Message refused by policy"
        if action == "drop-rcpt":
            assert server.transport is not None
            server.transport.close()
            return "421 closing"
        envelope.rcpt_tos.append(address)
        if action == "drop-data":
            session.drop_at_data = True  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if getattr(session, "drop_at_data", False):
            session.drop_at_data = False  # type: ignore[attr-defined]
            assert server.transport is not None
            server.transport.close()
            return "421 closing"
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(
                    Received(
                        str(envelope.mail_from),
                        rcpt,
                        getattr(session, "began", 0.0),
                        bytes(envelope.content or b""),
                    )  # type: ignore[arg-type]
                )
        return "250 2.0.0 Ok: queued"

    def by_rcpt(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = defaultdict(list)
        with self.lock:
            for item in self.received:
                out[item.rcpt.lower()].append(item)
        return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpServer:
    def __init__(self, port: int | None = None) -> None:
        self.handler = Handler()
        self.port = port or free_port()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls=0&connections=4&timeout=10"

    def start(self) -> SmtpServer:
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, data_size_limit=50_000_000
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
