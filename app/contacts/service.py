"""Contacts: create or update by email, rectify, erase, export.

Rules:
- email addresses are validated and normalised (email-validator), phones kept in E.164;
- a person under the minimum age (18 by default) is refused; one found out later is
  erased and suppressed with reason ``underage``;
- creating or updating a contact never lifts an opt-out or a suppression: opt-ins in the
  request that meet one are reported back in ``ignored_preferences`` and not applied;
- erasure removes personal data and the consent history, and leaves a keyed-hash
  suppression so the person is never contacted again, even if re-created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlmodel import Session, col, select

from app.auth import audit
from app.auth.actor import Actor
from app.config import get_settings
from app.contacts import repository
from app.contacts.identifiers import mask_email, mask_phone, normalise_email, normalise_phone, postal_key
from app.contacts.schemas import ContactFields, ContactIn, PreferenceItem
from app.errors import Conflict, NotFound, ValidationProblem
from app.models import (
    Campaign,
    ConsentEvent,
    Contact,
    DataRequest,
    Delivery,
    InboundMessage,
    Preference,
    Suppression,
    utcnow,
)
from app.preferences import service as preferences
from app.preferences.service import ChangeOutcome, PreferenceChange
from app.suppression import repository as suppression_repo
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.suppression.policy import Origin, Reason
from app.suppression.service import add_hashed

PROFILE_FIELDS = (
    "email",
    "name",
    "phone",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "zip",
    "country",
    "company",
    "position",
    "primary_business",
    "date_of_birth",
    "age_confirmed",
)
PERSONAL_FIELDS = (*PROFILE_FIELDS, "attributes", "source_detail")

METHOD_BY_SOURCE = {
    "registration": "form",
    "survey": "form",
    "survey_partial": "form",
    "event": "import",
    "import": "import",
    "api": "api",
    "manual": "staff",
}


@dataclass(slots=True)
class UpsertResult:
    contact: Contact
    created: bool
    preferences: ChangeOutcome = field(default_factory=ChangeOutcome)
    #: Set when the request revealed an existing contact to be under age: it was erased.
    erased_reason: str | None = None


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def underage_reason(
    date_of_birth: date | None, age_confirmed: bool | None, *, today: date | None = None
) -> str | None:
    minimum = get_settings().minimum_age
    today = today or date.today()
    if date_of_birth is not None:
        if date_of_birth > today:
            raise ValidationProblem("date of birth is in the future", field="date_of_birth")
        if age_on(date_of_birth, today) < minimum:
            return f"the person is under {minimum}"
    if age_confirmed is False:
        return f"the person has not confirmed being {minimum} or over"
    return None


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise the identifier fields present in ``values``."""
    settings = get_settings()
    out = dict(values)
    if out.get("email") is not None:
        out["email"] = normalise_email(
            out["email"], check_deliverability=settings.check_deliverability
        ).address
    if out.get("phone") is not None:
        out["phone"] = normalise_phone(out["phone"], region=out.get("country"))
    if out.get("country") is not None:
        out["country"] = out["country"].upper()
    for key in ("email", "phone", "name"):
        if key in out and out[key] == "":
            out[key] = None
    return out


def _refresh_hashes(contact: Contact) -> None:
    if contact.email:
        email = normalise_email(contact.email)
        contact.email_hash = keyed_hash(IdentifierKind.EMAIL, email.key)
        contact.domain_hash = keyed_hash(IdentifierKind.DOMAIN, email.domain)
    else:
        contact.email_hash = contact.domain_hash = None
    contact.phone_hash = keyed_hash(IdentifierKind.PHONE, contact.phone) if contact.phone else None
    key = postal_key(contact.address_line1, contact.zip, contact.country)
    contact.postal_hash = keyed_hash(IdentifierKind.POSTAL, key) if key else None


def _email_hash_of(email: str) -> str:
    return keyed_hash(IdentifierKind.EMAIL, normalise_email(email).key)


def find_by_email(session: Session, email: str) -> Contact | None:
    try:
        email_hash = _email_hash_of(email)
    except ValidationProblem:
        return None
    contact = repository.by_email_hash(session, email_hash)
    return contact if contact is not None and contact.erased_at is None else None


def get(session: Session, contact_id: int) -> Contact:
    contact = repository.get_live(session, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} not found")
    return contact


def _changes(items: list[PreferenceItem] | None) -> list[PreferenceChange]:
    return [PreferenceChange(i.channel, i.topic, i.status) for i in items or []]


def upsert(session: Session, data: ContactIn, actor: Actor) -> UpsertResult:
    given = data.model_dump(include=set(PROFILE_FIELDS) | {"attributes"}, exclude_unset=True)
    values = _normalised(given)
    if not (values.get("email") or values.get("phone") or values.get("address_line1")):
        raise ValidationProblem("a contact needs an email, a phone number or a postal address", field="email")

    existing: Contact | None = None
    if values.get("email"):
        existing = repository.by_email_hash(session, _email_hash_of(values["email"]))
    elif values.get("phone"):
        existing = session.exec(
            select(Contact).where(
                Contact.phone_hash == keyed_hash(IdentifierKind.PHONE, values["phone"]),
                col(Contact.email).is_(None),
                col(Contact.erased_at).is_(None),
            )
        ).first()
    if existing is not None and existing.erased_at is not None:
        existing = None

    # ``age_confirmed: false`` refuses a new lead; for a known contact only a birth date
    # under the minimum age proves them under age (and then they are erased).
    refusal = underage_reason(
        values.get("date_of_birth", existing.date_of_birth if existing else None),
        values.get("age_confirmed") if existing is None else None,
    )
    if refusal:
        if existing is None:
            field_name = "date_of_birth" if values.get("date_of_birth") else "age_confirmed"
            raise ValidationProblem(f"refused: {refusal}", field=field_name)
        erase(session, existing, actor, reason=Reason.UNDERAGE, method=METHOD_BY_SOURCE[data.source])
        return UpsertResult(existing, created=False, erased_reason=Reason.UNDERAGE)

    created = existing is None
    if existing is None:
        contact = Contact(
            source=data.source.value,
            source_detail=dict(data.source_detail or {}),
            attributes={},
        )
        contact.age_confirmed = bool(values.pop("age_confirmed", False))
        for key, value in values.items():
            if key != "attributes":
                setattr(contact, key, value)
        contact.attributes = dict(values.get("attributes") or {})
    else:
        contact = existing
        _merge(contact, values, data.merge)
        if data.source_detail:
            contact.source_detail = {**(contact.source_detail or {}), "last_update": dict(data.source_detail)}
        contact.updated_at = utcnow()
    _refresh_hashes(contact)
    session.add(contact)
    session.flush()

    outcome = ChangeOutcome()
    if data.preferences:
        outcome = preferences.apply_changes(
            session,
            contact,
            _changes(data.preferences),
            method=METHOD_BY_SOURCE[data.source],
            actor=actor,
            text_shown=data.consent_text,
            text_version=data.consent_version,
            evidence={"source": data.source.value, **(data.source_detail or {})},
        )
    if actor.kind == "staff":
        audit.record(
            session,
            actor,
            "contact.create" if created else "contact.update",
            target_type="contact",
            target_id=contact.id,
            detail={"fields": sorted(given)},
        )
    return UpsertResult(contact, created, outcome)


def _merge(contact: Contact, values: dict[str, Any], policy: str) -> None:
    for key, value in values.items():
        if key == "attributes":
            merged = dict(contact.attributes or {})
            for attr, attr_value in (value or {}).items():
                if policy == "overwrite" or merged.get(attr) in (None, ""):
                    merged[attr] = attr_value
            contact.attributes = merged
            continue
        if key == "email" or value is None:
            continue  # the email is the key of the upsert; None never clears a field here
        current = getattr(contact, key)
        if policy == "overwrite" or current in (None, "", False):
            setattr(contact, key, value)


def rectify(session: Session, contact_id: int, patch: ContactFields, actor: Actor) -> UpsertResult:
    contact = get(session, contact_id)
    given = patch.model_dump(exclude_unset=True)
    values = _normalised(given)
    refusal = underage_reason(values.get("date_of_birth", contact.date_of_birth), None)
    if refusal:
        erase(session, contact, actor, reason=Reason.UNDERAGE, method="staff")
        return UpsertResult(contact, created=False, erased_reason=Reason.UNDERAGE)
    if values.get("email") and values["email"] != contact.email:
        other = repository.by_email_hash(session, _email_hash_of(values["email"]))
        if other is not None and other.id != contact.id:
            raise Conflict("another contact already has this email address", field="email")
    if "email" in values and values["email"] is None and not (values.get("phone") or contact.phone):
        raise ValidationProblem("a contact needs an email or a phone number", field="email")
    for key, value in values.items():
        if key == "attributes":
            contact.attributes = {**(contact.attributes or {}), **(value or {})}
        elif key == "age_confirmed":
            contact.age_confirmed = bool(value)
        else:
            setattr(contact, key, value)
    _refresh_hashes(contact)
    contact.updated_at = utcnow()
    session.add(contact)
    audit.record(
        session,
        actor,
        "contact.rectify",
        target_type="contact",
        target_id=contact.id,
        detail={"fields": sorted(given)},
    )
    session.flush()
    return UpsertResult(contact, created=False)


def erase(
    session: Session,
    contact: Contact,
    actor: Actor,
    *,
    reason: str = Reason.ERASURE,
    method: str = "staff",
    note: str | None = None,
) -> None:
    """Remove personal data; keep (or add) an all-channel suppression per identifier."""
    assert contact.id is not None
    identifiers = [
        (
            IdentifierKind.EMAIL,
            contact.email_hash,
            mask_email(normalise_email(contact.email).key) if contact.email else None,
        ),
        (IdentifierKind.PHONE, contact.phone_hash, mask_phone(contact.phone) if contact.phone else None),
        (IdentifierKind.POSTAL, contact.postal_hash, None),
    ]
    hashes = [h for _, h, _ in identifiers if h]
    origin = (
        Origin.RECIPIENT
        if actor.kind == "recipient"
        else (Origin.STAFF if actor.kind == "staff" else Origin.SYSTEM)
    )

    # Consent history and preferences hold personal data (IP, user agent, wording seen).
    for pref in session.exec(select(Preference).where(Preference.contact_id == contact.id)):
        session.delete(pref)
    session.flush()
    for event in session.exec(select(ConsentEvent).where(ConsentEvent.contact_id == contact.id)):
        session.delete(event)
    session.flush()

    erasure_event = preferences.record_consent(
        session,
        contact=None,
        status="erased",
        method=method,
        actor=Actor(kind=actor.kind, role=actor.role, token_id=actor.token_id, user_id=actor.user_id),
        address_hash=hashes[0] if hashes else None,
        evidence={"reason": str(reason), **({"note": note} if note else {})},
    )
    for kind, address_hash, _hint in identifiers:
        if not address_hash:
            continue
        stronger = [
            s
            for s in suppression_repo.active_for_hashes(session, [address_hash])
            if s.channel is None and s.topic is None and s.reason in (Reason.ERASURE, Reason.UNDERAGE)
        ]
        if not stronger:
            add_hashed(
                session,
                address_hash=address_hash,
                kind=kind,
                hint=None,
                channel=None,
                topic=None,
                reason=reason,
                origin=origin,
                method=method,
                note=None,
                actor=actor,
                consent_event_id=erasure_event.id,
            )
    # Hints are partial personal data: clear them on every entry for these identifiers.
    if hashes:
        for row in session.exec(select(Suppression).where(col(Suppression.address_hash).in_(hashes))):
            row.address_hint = None
            session.add(row)
    for message in session.exec(select(InboundMessage).where(InboundMessage.contact_id == contact.id)):
        message.raw = b""
        message.envelope_from = None
        message.detail = {"erased": True, "kind": message.kind}
        session.add(message)
    for request in session.exec(
        select(DataRequest).where(DataRequest.contact_id == contact.id, DataRequest.status == "open")
    ):
        if request.kind == "erasure":
            request.status = "done"
            request.closed_at = utcnow()
            session.add(request)

    for name in PERSONAL_FIELDS:
        if name in ("attributes", "source_detail"):
            setattr(contact, name, {})
        elif name == "age_confirmed":
            contact.age_confirmed = False
        else:
            setattr(contact, name, None)
    contact.email_hash = contact.phone_hash = contact.postal_hash = contact.domain_hash = None
    contact.erased_at = contact.updated_at = utcnow()
    session.add(contact)
    audit.record(
        session,
        actor,
        "contact.erase",
        target_type="contact",
        target_id=contact.id,
        detail={"reason": str(reason)},
    )
    session.flush()


def export(session: Session, contact: Contact) -> dict[str, Any]:
    """Everything held about the person (an access request), as plain JSON data."""
    assert contact.id is not None
    hashes = [
        h for h in (contact.email_hash, contact.phone_hash, contact.postal_hash, contact.domain_hash) if h
    ]
    profile = contact.model_dump(
        exclude={"email_hash", "phone_hash", "postal_hash", "domain_hash", "erased_at"}, mode="json"
    )
    events = session.exec(
        select(ConsentEvent).where(ConsentEvent.contact_id == contact.id).order_by(col(ConsentEvent.id))
    ).all()
    supps = (
        session.exec(
            select(Suppression).where(col(Suppression.address_hash).in_(hashes)).order_by(col(Suppression.id))
        ).all()
        if hashes
        else []
    )
    deliveries = session.exec(
        select(Delivery, Campaign.name)
        .join(Campaign, col(Campaign.id) == Delivery.campaign_id)
        .where(Delivery.contact_id == contact.id)
        .order_by(col(Delivery.id))
    ).all()
    inbound = session.exec(select(InboundMessage).where(InboundMessage.contact_id == contact.id)).all()
    requests = session.exec(select(DataRequest).where(DataRequest.contact_id == contact.id)).all()
    return {
        "profile": profile,
        "preferences": [
            p.model_dump(include={"channel", "topic", "status", "updated_at"}, mode="json")
            for p in preferences.list_preferences(session, contact.id)
        ],
        "consent_history": [
            e.model_dump(exclude={"address_hash", "actor_token_id", "actor_user_id"}, mode="json")
            for e in events
        ],
        "suppressions": [
            s.model_dump(
                include={
                    "id",
                    "channel",
                    "kind",
                    "topic",
                    "reason",
                    "origin",
                    "method",
                    "created_at",
                    "lifted_at",
                },
                mode="json",
            )
            for s in supps
        ],
        "deliveries": [
            {
                "campaign": name,
                **d.model_dump(include={"campaign_id", "status", "sent_at", "message_id"}, mode="json"),
            }
            for d, name in deliveries
        ],
        "inbound_messages": [
            m.model_dump(include={"id", "kind", "received_at"}, mode="json") for m in inbound
        ],
        "data_requests": [
            r.model_dump(include={"id", "kind", "status", "received_at", "due_at"}, mode="json")
            for r in requests
        ],
        "exported_at": utcnow().isoformat(),
    }
