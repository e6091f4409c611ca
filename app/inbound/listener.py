"""The SMTP / LMTP listener for the bounce and reply domain (aiosmtpd).

Every accepted message is *stored* (one row per recipient, so each VERP address is
attributed on its own) before the server answers 250; classification follows in the
``classify_inbound`` actor. Recipients outside the accepted domains get 550 (this is not
a relay). A message larger than ``LISTWARDEN_INBOUND_MAX_BYTES`` is stored truncated and
marked; one larger than the hard limit is refused with 552 by the SMTP layer, so the
sending server returns it to its sender rather than it vanishing. If storing fails, the
answer is 451 and the sender retries later. In LMTP mode the DATA answer has one line
per recipient, as RFC 2033 requires.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from app.db import session_scope
from app.inbound import service
from app.inbound.settings import InboundSettings, get_inbound_settings

log = logging.getLogger("listwarden.inbound")


class InboundHandler:
    """aiosmtpd handler: check recipients, store the message, then answer."""

    def __init__(self, settings: InboundSettings | None = None, *, lmtp: bool = False) -> None:
        self.settings = settings or get_inbound_settings()
        self.lmtp = lmtp
        self.stored: list[int] = []

    def accepts(self, address: str) -> bool:
        domains = self.settings.accepted_domains()
        if "*" in domains:
            return True
        domain = address.rpartition("@")[2].strip().strip(">").lower()
        return any(domain == d or domain.endswith("." + d) for d in domains)

    async def handle_RCPT(  # noqa: N802  (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.accepts(address):
            return "550 5.1.1 Recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802  (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode("utf-8", "surrogateescape")
        mail_from = (
            (envelope.mail_from or "").strip().removeprefix("<").removesuffix(">")
        )  # "<>": null sender
        recipients = list(envelope.rcpt_tos) or [""]
        loop = asyncio.get_running_loop()
        try:
            ids = await loop.run_in_executor(None, self._store, data, mail_from, recipients)
        except Exception:
            log.exception("could not store an inbound message from %r", mail_from)
            answer = "451 4.3.0 Could not store the message; try again later"
            return "\r\n".join([answer] * len(recipients)) if self.lmtp else answer
        self.stored.extend(ids)
        answers = [f"250 2.0.0 Stored as {i}" for i in ids]
        return "\r\n".join(answers) if self.lmtp else answers[0]

    def _store(self, data: bytes, mail_from: str, recipients: list[str]) -> list[int]:
        received = service.Received.of(data, self.settings.max_bytes)
        ids: list[int] = []
        with session_scope() as db:
            for rcpt in recipients:
                row, _created = service.store(
                    db,
                    received,
                    envelope_from=mail_from,
                    envelope_to=rcpt or None,
                    source="lmtp" if self.lmtp else "smtp",
                )
                assert row.id is not None
                ids.append(row.id)
        return ids


class InboundController(Controller):
    """An aiosmtpd controller that speaks SMTP or, with ``lmtp=True``, LMTP."""

    def __init__(
        self,
        handler: InboundHandler,
        hostname: str = "127.0.0.1",
        port: int = 2525,
        *,
        lmtp: bool = False,
        **kwargs: Any,
    ) -> None:
        limit = handler.settings.resolved_hard_limit
        super().__init__(handler, hostname=hostname, port=port, data_size_limit=limit, **kwargs)
        self.lmtp = lmtp

    def factory(self) -> SMTP:
        server_class = LMTP if self.lmtp else SMTP
        return server_class(self.handler, **self.SMTP_kwargs)


def make_listener(
    host: str = "127.0.0.1", port: int = 2525, *, lmtp: bool = False, settings: InboundSettings | None = None
) -> InboundController:
    handler = InboundHandler(settings, lmtp=lmtp)
    return InboundController(handler, hostname=host, port=port, lmtp=lmtp)
