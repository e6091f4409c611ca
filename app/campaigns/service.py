"""Campaigns: compose (templates checked at save time), audience, and the status machine

    draft ─send→ sending ─pause→ paused ─resume→ sending ─(ledger done)→ sent
    draft ─send (scheduled_at in the future)→ scheduled ─(due)→ sending
    draft | scheduled | sending | paused ─cancel→ cancelled

Sending is done by actors (``workers/campaigns.py``); they are enqueued only after the
transaction that changed the status has committed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from app.auth import audit
from app.auth.actor import Actor
from app.campaigns.rendering import Rendered, TemplateProblem, compile_campaign, sample_context
from app.campaigns.schemas import Audience, AudienceFilter, CampaignIn, CampaignOut, CampaignPatch
from app.config import Settings, get_settings
from app.contacts.identifiers import normalise_email
from app.db import after_commit, session_scope
from app.delivery import repository as ledger
from app.errors import Conflict, NotFound, ValidationProblem
from app.models import Campaign, Contact, Delivery, utcnow
from app.suppression import gate
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.topics.service import require_topic

EDITABLE = ("draft", "scheduled")
AUDIENCE_CHUNK = 5_000


# --------------------------------------------------------------------------- compose
def _check(session: Session, values: dict[str, Any]) -> None:
    settings = get_settings()
    require_topic(session, values.get("topic"), field="topic")
    for name in ("from_email", "reply_to"):
        if values.get(name):
            values[name] = normalise_email(values[name], field=name).address
    if values.get("purpose") == "marketing" and not values.get("topic"):
        raise ValidationProblem("marketing campaigns need a topic (what people subscribed to)", field="topic")
    try:
        compile_campaign(
            values["subject"],
            values.get("html") or "",
            values.get("text") or None,
            sender_name=values.get("from_name") or settings.sender_name,
            postal_address=settings.postal_address,
        )
    except TemplateProblem:
        raise
    audience_clause(Audience.model_validate(values.get("audience") or {}))


def create(session: Session, data: CampaignIn, actor: Actor) -> Campaign:
    values = data.model_dump()
    values["audience"] = data.audience.model_dump(exclude_none=True)
    _check(session, values)
    campaign = Campaign(**values, created_by_token_id=actor.token_id)
    session.add(campaign)
    session.flush()
    audit.record(session, actor, "campaign.create", target_type="campaign", target_id=campaign.id)
    return campaign


def update_campaign(session: Session, campaign: Campaign, patch: CampaignPatch, actor: Actor) -> Campaign:
    if campaign.status not in EDITABLE:
        raise Conflict(f"a {campaign.status} campaign cannot be edited", field="status")
    given = patch.model_dump(exclude_unset=True)
    if "audience" in given and patch.audience is not None:
        given["audience"] = patch.audience.model_dump(exclude_none=True)
    merged = {**campaign.model_dump(), **given}
    _check(session, merged)
    for key, value in given.items():
        setattr(campaign, key, value)
    campaign.updated_at = utcnow()
    session.add(campaign)
    audit.record(
        session,
        actor,
        "campaign.update",
        target_type="campaign",
        target_id=campaign.id,
        detail={"fields": sorted(given)},
    )
    return campaign


def get(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"campaign {campaign_id} not found")
    return campaign


def out(session: Session, campaign: Campaign) -> CampaignOut:
    assert campaign.id is not None
    counts = ledger.counts(session, campaign.id)
    return CampaignOut(**campaign.model_dump(), counts=counts, total=sum(counts.values()))


# --------------------------------------------------------------------------- audience
def _filter_clause(f: AudienceFilter) -> ColumnElement[bool]:
    if f.field is not None and f.attribute is not None:
        raise ValidationProblem("a filter names a field or an attribute, not both", field="audience.filters")
    if f.field is None and f.attribute is None:
        raise ValidationProblem("a filter names a field or an attribute", field="audience.filters")
    sample = f.value[0] if isinstance(f.value, list) and f.value else f.value
    if f.field is not None:
        column: Any = getattr(Contact, f.field)
    else:
        element = Contact.attributes[f.attribute]  # type: ignore[index]
        if isinstance(sample, bool):
            column = element.as_boolean()
        elif isinstance(sample, int):
            column = element.as_integer()
        elif isinstance(sample, float):
            column = element.as_float()
        else:
            column = element.as_string()
    if f.op == "exists":
        return and_(column.is_not(None), column != "") if f.field else column.is_not(None)
    if f.op == "missing":
        return column.is_(None)
    if f.op == "in":
        if not isinstance(f.value, list):
            raise ValidationProblem("the 'in' filter takes a list", field="audience.filters")
        return column.in_(f.value)
    if isinstance(f.value, list):
        raise ValidationProblem(f"the {f.op!r} filter takes one value", field="audience.filters")
    if f.op == "contains":
        return func.lower(column).contains(str(f.value).lower())
    if f.op == "ne":
        return column != f.value
    return column == f.value


def audience_clause(audience: Audience) -> ColumnElement[bool]:
    clauses: list[ColumnElement[bool]] = [col(Contact.erased_at).is_(None)]
    if audience.sources:
        clauses.append(col(Contact.source).in_(audience.sources))
    clauses.extend(_filter_clause(f) for f in audience.filters)
    return and_(*clauses)


def build_audience(
    campaign_id: int, *, settings: Settings | None = None, on_chunk: Callable[[], object] | None = None
) -> int:
    """Write the delivery ledger: one ``pending`` row per contact of the audience that
    passes the gate now (it is checked again at send time). Chunked by contact id,
    idempotent (a row per campaign and contact at most), so a retry just continues.
    ``on_chunk`` runs after each chunk has committed (the actor enqueues the new slices
    there, so sending starts while the rest of the ledger is written).
    Returns the size of the ledger."""
    settings = settings or get_settings()
    with session_scope(settings) as session:
        campaign = get(session, campaign_id)
        if campaign.audience_built_at is not None:
            return sum(ledger.counts(session, campaign_id).values())
        bounds = session.execute(select(func.min(Contact.id), func.max(Contact.id))).one()
        where = and_(
            audience_clause(Audience.model_validate(campaign.audience or {})),
            gate.sendable(campaign.channel, campaign.topic, campaign.purpose),
        )
        dialect = session.get_bind().dialect.name
    low, high = bounds
    if low is not None:
        start = int(low)
        while start <= int(high):
            end = start + AUDIENCE_CHUNK - 1
            with session_scope(settings) as session:
                now = utcnow()
                chosen = (
                    select(
                        literal(campaign_id),
                        col(Contact.id),
                        literal("pending"),
                        literal(0),
                        literal(now),
                        literal(now),
                    )
                    .where(where, col(Contact.id).between(start, end))
                    .order_by(col(Contact.id))
                )
                target = ["campaign_id", "contact_id", "status", "attempts", "created_at", "updated_at"]
                stmt: Any
                if dialect == "postgresql":
                    stmt = postgresql.insert(Delivery).from_select(target, chosen).on_conflict_do_nothing()
                elif dialect == "sqlite":
                    stmt = sqlite.insert(Delivery).from_select(target, chosen).on_conflict_do_nothing()
                else:  # pragma: no cover
                    stmt = insert(Delivery).from_select(target, chosen)
                session.execute(stmt)
            if on_chunk is not None:
                on_chunk()
            start = end + 1
    with session_scope(settings) as session:
        session.execute(
            update(Campaign.__table__)  # type: ignore[attr-defined]
            .where(Campaign.__table__.c.id == campaign_id)  # type: ignore[attr-defined]
            .values(audience_built_at=utcnow())
        )
        return sum(ledger.counts(session, campaign_id).values())


# --------------------------------------------------------------------------- control
def _enqueue(kind: str, campaign_id: int) -> None:
    from app.campaigns import dispatch

    if kind == "build":
        dispatch.enqueue_build(campaign_id)
    else:
        dispatch.enqueue_slices(campaign_id)


def _transition(session: Session, campaign: Campaign, allowed: tuple[str, ...], to: str) -> None:
    """Conditional update: two racing requests cannot both move the campaign."""
    result = session.execute(
        update(Campaign.__table__)  # type: ignore[attr-defined]
        .where(Campaign.__table__.c.id == campaign.id, Campaign.__table__.c.status.in_(allowed))  # type: ignore[attr-defined]
        .values(status=to, updated_at=utcnow())
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        session.refresh(campaign)
        raise Conflict(f"a {campaign.status} campaign cannot become {to}", field="status")
    session.refresh(campaign)


def send(session: Session, campaign: Campaign, actor: Actor, *, now: datetime | None = None) -> Campaign:
    now = now or utcnow()
    compile_campaign(campaign.subject, campaign.html, campaign.text or None)
    if campaign.scheduled_at is not None and campaign.scheduled_at > now:
        _transition(session, campaign, ("draft",), "scheduled")
    else:
        _transition(session, campaign, ("draft", "scheduled"), "sending")
        campaign.started_at = now
        session.add(campaign)
        assert campaign.id is not None
        campaign_id = campaign.id
        after_commit(session, lambda: _enqueue("build", campaign_id))
    audit.record(
        session,
        actor,
        "campaign.send",
        target_type="campaign",
        target_id=campaign.id,
        detail={"status": campaign.status},
    )
    return campaign


def start_due(session: Session, campaign: Campaign) -> None:
    """The scheduler found a scheduled campaign due."""
    _transition(session, campaign, ("scheduled",), "sending")
    campaign.started_at = utcnow()
    session.add(campaign)
    assert campaign.id is not None
    campaign_id = campaign.id
    after_commit(session, lambda: _enqueue("build", campaign_id))


def pause(session: Session, campaign: Campaign, actor: Actor) -> Campaign:
    _transition(session, campaign, ("sending",), "paused")
    audit.record(session, actor, "campaign.pause", target_type="campaign", target_id=campaign.id)
    return campaign


def resume(session: Session, campaign: Campaign, actor: Actor) -> Campaign:
    _transition(session, campaign, ("paused",), "sending")
    assert campaign.id is not None
    campaign_id = campaign.id
    kind = "build" if campaign.audience_built_at is None else "slices"
    after_commit(session, lambda: _enqueue(kind, campaign_id))
    audit.record(session, actor, "campaign.resume", target_type="campaign", target_id=campaign.id)
    return campaign


def cancel(session: Session, campaign: Campaign, actor: Actor) -> Campaign:
    _transition(session, campaign, ("draft", "scheduled", "sending", "paused"), "cancelled")
    campaign.finished_at = utcnow()
    session.add(campaign)
    audit.record(session, actor, "campaign.cancel", target_type="campaign", target_id=campaign.id)
    return campaign


# --------------------------------------------------------------------------- preview, test
def preview(session: Session, campaign: Campaign, contact_id: int | None) -> Rendered:
    from app.delivery.service import recipient_links, send_context, template_context

    ctx = send_context(session, campaign)
    if contact_id is None:
        return ctx.compiled.render(sample_context())
    contact = session.get(Contact, contact_id)
    if contact is None or contact.erased_at is not None:
        raise NotFound(f"contact {contact_id} not found")
    data = contact.model_dump(include=set(ledger.CONTACT_COLUMNS))
    links = recipient_links(ctx.public_url, contact_id, None)
    return ctx.compiled.render(template_context(ctx, data, links))


def test_send(
    session: Session, campaign: Campaign, emails: list[str], contact_id: int | None, actor: Actor
) -> tuple[list[str], dict[str, str]]:
    """Send the campaign, marked as a test, to staff addresses. The suppression list is
    honoured (``gate.check_address``); nothing is written to the delivery ledger."""
    from app.delivery.service import build_envelope, send_context
    from app.delivery.transport import get_transport

    ctx = send_context(session, campaign)
    refused: dict[str, str] = {}
    envelopes = []
    sample = sample_context()
    if contact_id is not None:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.erased_at is not None:
            raise NotFound(f"contact {contact_id} not found")
        sample = contact.model_dump(include=set(ledger.CONTACT_COLUMNS))
    for index, raw in enumerate(emails):
        email = normalise_email(raw, field=f"emails.{index}")
        hashes = [
            keyed_hash(IdentifierKind.EMAIL, email.key),
            keyed_hash(IdentifierKind.DOMAIN, email.domain),
        ]
        why = gate.check_address(
            session, hashes, channel=campaign.channel, topic=campaign.topic, purpose=campaign.purpose
        )
        if why:
            refused[email.address] = why
            continue
        data = {**{k: sample.get(k) for k in ledger.CONTACT_COLUMNS}, "email": email.address}
        envelope, _ = build_envelope(ctx, 0, contact_id or 0, data, subject_prefix="[TEST] ")
        envelopes.append((email.address, envelope))
    outcomes = get_transport(ctx.transport_url).send_batch([e for _, e in envelopes])
    sent = []
    for (address, _), outcome in zip(envelopes, outcomes, strict=True):
        if outcome.status == "sent":
            sent.append(address)
        else:
            refused[address] = f"{outcome.status}: {outcome.reply}"
    audit.record(
        session,
        actor,
        "campaign.test",
        target_type="campaign",
        target_id=campaign.id,
        detail={"sent": len(sent)},
    )
    return sent, refused
