"""Sending a campaign slice: claim-and-check, render, send, record — micro-batch by
micro-batch — and acknowledging opt-outs only once nothing is in flight for the person.

Invariants kept here (DESIGN.md section 3):

2. *Checked at send time*: the gate runs inside the claim statement, immediately before
   the SMTP transactions of that micro-batch; :func:`settle` makes an acknowledged opt-out
   exact (see ``repository.CLAIM_LOCK_KEY``).
5. *At most once*: a delivery is sent only by the worker whose claim moved it from
   ``pending``/``deferred`` to ``claimed``; outcomes are only written over ``claimed``;
   a worker that dies leaves ``claimed`` rows that recovery turns into ``unknown``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session, col
from sqlmodel import select as sqlmodel_select

from app.campaigns.rendering import CompiledCampaign, TemplateProblem, compile_campaign
from app.config import Settings, get_settings
from app.contacts.identifiers import normalise_email
from app.db import get_engine, session_scope
from app.delivery import repository
from app.delivery.dkim import DkimSigner
from app.delivery.message import CampaignAssembler, ascii_address, format_address, unique_token
from app.delivery.ratelimit import BUCKETS
from app.delivery.transport import Envelope, Outcome, get_transport
from app.models import Campaign, Delivery, Topic, utcnow
from app.recipients.tokens import (
    Sealer,
    TokenKind,
    address_spelling,
    make_url_token,
    sealer,
    url_spelling,
)

log = logging.getLogger("listwarden.delivery")

_d = Delivery.__table__  # type: ignore[attr-defined]
_campaigns = Campaign.__table__  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- per campaign
@dataclass(frozen=True)
class SendContext:
    """Everything about a campaign that is the same for every message, prepared once."""

    campaign_id: int
    topic: str | None
    compiled: CompiledCampaign
    from_header: str
    from_address: str
    sender_name: str
    topic_name: str | None
    list_id: str
    postal_address: str
    public_url: str
    bounce_domain: str
    reply_domain: str
    message_domain: str
    signer: DkimSigner | None
    rate_limit: float
    domain_rate_limit: float
    transport_url: str
    #: The header lines every message of the campaign shares, prepared once.
    assembler: CampaignAssembler


_contexts: dict[tuple[int, str], SendContext] = {}
_contexts_lock = threading.Lock()
_compile_lock = threading.Lock()


def send_context(session: Session, campaign: Campaign, settings: Settings | None = None) -> SendContext:
    settings = settings or get_settings()
    assert campaign.id is not None
    key = (campaign.id, campaign.updated_at.isoformat())
    with _contexts_lock:
        cached = _contexts.get(key)
    if cached is not None:
        return cached
    with _compile_lock:  # one thread compiles; the others wait for it rather than repeat it
        with _contexts_lock:
            cached = _contexts.get(key)
        if cached is not None:
            return cached
        return _new_send_context(session, campaign, settings, key)


def _new_send_context(
    session: Session, campaign: Campaign, settings: Settings, key: tuple[int, str]
) -> SendContext:
    assert campaign.id is not None
    topic = (
        session.exec(sqlmodel_select(Topic).where(col(Topic.slug) == campaign.topic)).first()
        if campaign.topic
        else None
    )
    topic_name = topic.name if topic is not None else None
    sender_name = campaign.from_name or settings.sender_name
    from_address = campaign.from_email or settings.from_email
    compiled = compile_campaign(
        campaign.subject,
        campaign.html,
        campaign.text or None,
        footer=True,
        sender_name=sender_name,
        topic_name=topic_name,
        postal_address=settings.postal_address,
    )
    signer = None
    if settings.dkim_key_path:
        signer = DkimSigner.from_file(
            settings.dkim_key_path,
            selector=settings.dkim_selector,
            domain=settings.dkim_domain or from_address.rpartition("@")[2],
        )
    list_label = (campaign.topic or "all").replace('"', "")
    from_header = format_address(sender_name, from_address)
    list_id = f'"{topic_name or sender_name}" <{list_label}.{settings.resolved_list_id_domain}>'
    context = SendContext(
        campaign_id=campaign.id,
        topic=campaign.topic,
        compiled=compiled,
        from_header=from_header,
        from_address=from_address,
        sender_name=sender_name,
        topic_name=topic_name,
        list_id=list_id,
        postal_address=settings.postal_address,
        public_url=settings.public_url.rstrip("/"),
        bounce_domain=settings.resolved_bounce_domain,
        reply_domain=settings.resolved_reply_domain,
        message_domain=from_address.rpartition("@")[2].lower(),
        signer=signer,
        rate_limit=campaign.rate_limit if campaign.rate_limit is not None else settings.campaign_rate_limit,
        domain_rate_limit=settings.domain_rate_limit,
        transport_url=settings.resolved_smtp_url,
        assembler=CampaignAssembler(
            from_header=from_header,
            list_id=list_id,
            feedback_id=f"{campaign.id}:{campaign.topic or 'all'}:listwarden",
            signer=signer,
        ),
    )
    with _contexts_lock:
        _contexts[key] = context
    return context


def recipient_links(
    ctx_public_url: str, contact_id: int, delivery_id: int | None, *, unsubscribe: str | None = None
) -> dict[str, str]:
    if unsubscribe is None:
        unsubscribe = make_url_token(TokenKind.UNSUBSCRIBE, contact_id, delivery_id)
    preferences = make_url_token(TokenKind.PREFERENCES, contact_id, delivery_id)
    return {
        "unsubscribe_url": f"{ctx_public_url}/u/{unsubscribe}",
        "preferences_url": f"{ctx_public_url}/preferences/{preferences}",
    }


def template_context(ctx: SendContext, contact: dict[str, Any], links: dict[str, str]) -> dict[str, Any]:
    name = contact.get("name") or ""
    first, _, last = name.partition(" ")
    return {
        **contact,
        "attributes": dict(contact.get("attributes") or {}),
        "first_name": first,
        "last_name": last,
        **links,
        "postal_address": ctx.postal_address,
        "sender_name": ctx.sender_name,
        "campaign_name": "",
        "topic_name": ctx.topic_name,
    }


def build_envelope(
    ctx: SendContext,
    delivery_id: int,
    contact_id: int,
    contact: dict[str, Any],
    *,
    subject_prefix: str = "",
    tokens: Sealer | None = None,
) -> tuple[Envelope, str]:
    """Render and assemble one campaign message (raises ``TemplateProblem``); ``tokens``:
    the current key's sealer, when the caller has it at hand.

    The message is what ``OutgoingMessage(...).to_bytes(ctx.signer)`` makes of these
    values (``ctx.assembler``: tests/delivery/test_service.py compares them)."""
    tokens = tokens or sealer()
    # One sealed unsubscribe token, spelt for the link and for the mailto address.
    unsubscribe = tokens.seal(TokenKind.UNSUBSCRIBE, contact_id, delivery_id)
    preferences = tokens.seal(TokenKind.PREFERENCES, contact_id, delivery_id)
    unsubscribe_url = f"{ctx.public_url}/u/{url_spelling(unsubscribe)}"
    links = {
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": f"{ctx.public_url}/preferences/{url_spelling(preferences)}",
    }
    rendered = ctx.compiled.render_encoded(template_context(ctx, contact, links))
    email = str(contact["email"])
    bounce = address_spelling(tokens.seal(TokenKind.BOUNCE, contact_id, delivery_id))
    reply = address_spelling(tokens.seal(TokenKind.REPLY, contact_id, delivery_id))
    mailto = address_spelling(unsubscribe)
    mail_from = f"bounce+{bounce}@{ctx.bounce_domain}"
    rcpt_to = ascii_address(email)
    to_header = format_address(contact.get("name"), email)
    message_id = f"<lw.{delivery_id}.{unique_token()[5:]}@{ctx.message_domain}>"
    data = ctx.assembler.to_bytes(
        to_header=to_header,
        subject=subject_prefix + rendered.subject,
        message_id=message_id,
        reply_to=f"reply+{reply}@{ctx.reply_domain}",
        list_unsubscribe=f"<{unsubscribe_url}>, <mailto:unsubscribe+{mailto}@{ctx.reply_domain}>",
        text_qp=rendered.text,
        html_qp=rendered.html,
        canonical_body=rendered.canonical,
    )
    smtputf8 = not (rcpt_to.isascii() and mail_from.isascii() and to_header.isascii())
    return Envelope(
        key=delivery_id, mail_from=mail_from, rcpt_to=rcpt_to, data=data, smtputf8=smtputf8, crlf=True
    ), message_id


# --------------------------------------------------------------------------- slices
@dataclass
class SliceResult:
    claimed: int = 0
    suppressed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None


def _retry_delay(attempts: int, settings: Settings) -> timedelta:
    return timedelta(seconds=min(3600.0, settings.retry_base_seconds * (2 ** max(0, attempts - 1))))


def process_slice(campaign_id: int, lo: int, hi: int, *, settings: Settings | None = None) -> SliceResult:
    """Send every due delivery of the slice [lo, hi] while the campaign is ``sending``."""
    settings = settings or get_settings()
    result = SliceResult()
    campaign: Campaign | None = None
    while True:
        with session_scope(settings) as session:
            # Its status and version each micro-batch; the campaign itself (a row with its
            # templates, made an ORM object) only when it changed.
            state = session.execute(
                select(_campaigns.c.status, _campaigns.c.updated_at).where(_campaigns.c.id == campaign_id)
            ).first()
            if state is None or state.status != "sending":
                result.stopped = state.status if state is not None else "missing"
                return result
            if campaign is None or campaign.updated_at != state.updated_at:
                campaign = session.get(Campaign, campaign_id)
                if campaign is None or campaign.status != "sending":
                    result.stopped = campaign.status if campaign else "missing"
                    return result
            ctx = send_context(session, campaign, settings)
            rows = repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=settings.send_batch_size)
        if not rows:
            break
        claimed = [r for r in rows if r.status == "claimed"]
        result.claimed += len(claimed)
        result.suppressed += len(rows) - len(claimed)
        _send_claimed(ctx, claimed, settings, result)
    finish_if_done(campaign_id, settings=settings)
    return result


def _send_claimed(
    ctx: SendContext, claimed: list[repository.ClaimedRow], settings: Settings, result: SliceResult
) -> None:
    records: list[dict[str, Any]] = []
    released: list[int] = []
    envelopes: list[Envelope] = []
    message_ids: dict[int, str] = {}
    by_id = {row.delivery_id: row for row in claimed}
    now = utcnow()
    tokens = sealer()
    for row in claimed:
        email = row.contact.get("email")
        if ctx.domain_rate_limit > 0 and email:
            domain = str(email).rpartition("@")[2].lower()
            if not BUCKETS.get(f"domain:{domain}", ctx.domain_rate_limit).try_take():
                released.append(row.delivery_id)
                continue
        try:
            envelope, message_id = build_envelope(
                ctx, row.delivery_id, row.contact_id, row.contact, tokens=tokens
            )
        except (TemplateProblem, ValueError) as exc:
            records.append(
                _record(row.delivery_id, "failed", f"render: {exc}"[:40], None, str(exc)[:500], None, None)
            )
            continue
        envelopes.append(envelope)
        message_ids[row.delivery_id] = message_id
    if ctx.rate_limit > 0 and envelopes:
        bucket = BUCKETS.get(f"campaign:{ctx.campaign_id}", ctx.rate_limit)
        for _ in envelopes:
            while not bucket.try_take():
                time.sleep(min(1.0, bucket.wait_time()))
    outcomes = get_transport(ctx.transport_url).send_batch(envelopes) if envelopes else []
    bounced: list[repository.ClaimedRow] = []
    for envelope, outcome in zip(envelopes, outcomes, strict=True):
        row = by_id[envelope.key]
        records.append(_outcome_record(row, outcome, message_ids[envelope.key], settings, now))
        result.outcomes[records[-1]["b_status"]] = result.outcomes.get(records[-1]["b_status"], 0) + 1
        if outcome.status == "bounced":
            bounced.append(row)
    with session_scope(settings) as session:
        repository.record_outcomes(session, records)
        if released:
            session.execute(
                update(_d)
                .where(_d.c.id.in_(released), _d.c.status == "claimed")
                .values(
                    status="pending", attempts=_d.c.attempts - 1, next_attempt_at=now + timedelta(seconds=1)
                )
            )
        for row in bounced:
            _suppress_hard_bounce(session, row)


#: The longest relay reply kept on a delivery (multi-line replies can run long).
MAX_STORED_REPLY = 2000


def _stored_reply(reply: str | None) -> str | None:
    """A relay's reply as the ledger keeps it: a NUL (which PostgreSQL's text refuses, so
    the whole micro-batch's outcomes failed to write) becomes U+FFFD, and a very long reply
    is cut."""
    if reply is None:
        return None
    if "\x00" in reply:
        reply = reply.replace("\x00", "\ufffd")
    return reply[:MAX_STORED_REPLY]


def _record(
    delivery_id: int,
    status: str,
    reason: str | None,
    code: int | None,
    reply: str | None,
    message_id: str | None,
    next_attempt: Any,
    sent_at: Any = None,
) -> dict[str, Any]:
    return {
        "b_id": delivery_id,
        "b_status": status,
        "b_reason": reason,
        "b_code": code,
        "b_reply": _stored_reply(reply),
        "b_message_id": message_id,
        "b_sent_at": sent_at,
        "b_next": next_attempt,
    }


def _outcome_record(
    row: repository.ClaimedRow, outcome: Outcome, message_id: str, settings: Settings, now: Any
) -> dict[str, Any]:
    if outcome.status == "sent":
        return _record(row.delivery_id, "sent", None, outcome.code, outcome.reply, message_id, None, now)
    if outcome.status == "deferred":
        if row.attempts >= settings.max_attempts:
            return _record(
                row.delivery_id, "failed", "retries exhausted", outcome.code, outcome.reply, message_id, None
            )
        retry_at = now + _retry_delay(row.attempts, settings)
        return _record(
            row.delivery_id,
            "deferred",
            "temporary failure",
            outcome.code,
            outcome.reply,
            message_id,
            retry_at,
        )
    if outcome.status == "unknown":
        return _record(
            row.delivery_id,
            "unknown",
            "connection lost after data",
            outcome.code,
            outcome.reply,
            message_id,
            None,
        )
    reason = "mailbox does not exist" if outcome.status == "bounced" else "rejected"
    return _record(row.delivery_id, outcome.status, reason, outcome.code, outcome.reply, message_id, None)


def _suppress_hard_bounce(session: Session, row: repository.ClaimedRow) -> None:
    from app.auth.actor import Actor
    from app.suppression.hashing import IdentifierKind, keyed_hash
    from app.suppression.policy import Origin, Reason
    from app.suppression.service import add_hashed

    email = row.contact.get("email")
    if not email:
        return
    key = normalise_email(str(email)).key
    add_hashed(
        session,
        address_hash=keyed_hash(IdentifierKind.EMAIL, key),
        kind=IdentifierKind.EMAIL,
        hint=None,
        channel="email",
        topic=None,
        reason=Reason.HARD_BOUNCE,
        origin=Origin.SYSTEM,
        method="smtp",
        note="5xx at send time: the mailbox does not exist",
        actor=Actor.system(),
        delivery_id=row.delivery_id,
    )


def finish_if_done(campaign_id: int, *, settings: Settings | None = None) -> bool:
    with session_scope(settings) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status != "sending" or campaign.audience_built_at is None:
            return False
        if repository.has_open(session, campaign_id):
            return False
        result = session.execute(
            update(Campaign.__table__)  # type: ignore[attr-defined]
            .where(Campaign.__table__.c.id == campaign_id, Campaign.__table__.c.status == "sending")  # type: ignore[attr-defined]
            .values(status="sent", finished_at=utcnow(), updated_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- opt-outs
def settle(contact_ids: list[int], *, timeout: float | None = None, settings: Settings | None = None) -> bool:
    """Wait until none of these contacts has a delivery in flight; True when settled.

    Call it after the opt-out has committed. On PostgreSQL it first takes the claim lock
    exclusively, which waits for every claim statement that may have started before the
    opt-out committed (claims hold the lock shared); claims that start later see the
    opt-out. Then it waits for the claimed rows of these contacts to be sent or failed."""
    settings = settings or get_settings()
    if not contact_ids:
        return True
    timeout = settings.optout_settle_seconds if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with Session(get_engine(settings)) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(repository.CLAIM_LOCK_KEY)))
            session.commit()
        while True:
            inflight = repository.inflight_for_contacts(session, contact_ids)
            session.rollback()  # a fresh snapshot for the next look (SQLite keeps one per transaction)
            if inflight == 0:
                return True
            if time.monotonic() >= deadline:
                log.warning(
                    "opt-out acknowledged with %d deliveries still claimed for %s", inflight, contact_ids
                )
                return False
            time.sleep(0.01)
