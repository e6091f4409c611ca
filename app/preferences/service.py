"""Preferences and the consent ledger.

Rules:
- every change appends a :class:`ConsentEvent` (who, when, how, text shown, evidence);
- an opt-out is always accepted, at once, and also writes a suppression keyed by the
  person's address hash, so it outlives the contact row;
- an opt-in never undoes an opt-out or a suppression unless the person themself confirmed
  it (``confirmed_by_person=True``: the preference centre after a fresh confirmation), and
  even then never a hard bounce, complaint, erasure or other blocking suppression.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from app.auth.actor import Actor
from app.models import ConsentEvent, Contact, Preference, utcnow
from app.models.base import Channel, PreferenceStatus
from app.suppression import repository as suppressions
from app.suppression.policy import BLOCKING_REASONS, OPT_OUT_REASONS, Origin, Reason
from app.topics.service import require_topic


@dataclass(frozen=True, slots=True)
class PreferenceChange:
    channel: Channel
    topic: str | None
    status: PreferenceStatus


@dataclass(slots=True)
class ChangeOutcome:
    applied: list[PreferenceChange] = field(default_factory=list)
    unchanged: list[PreferenceChange] = field(default_factory=list)
    #: Opt-ins that were not applied, with the reason (``opted_out``, ``suppressed:<reason>``).
    refused: list[tuple[PreferenceChange, str]] = field(default_factory=list)


def record_consent(
    session: Session,
    *,
    contact: Contact | None,
    status: str,
    method: str,
    actor: Actor,
    channel: str | None = None,
    topic: str | None = None,
    previous_status: str | None = None,
    address_hash: str | None = None,
    text_shown: str | None = None,
    text_version: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> ConsentEvent:
    event = ConsentEvent(
        contact_id=contact.id if contact is not None else None,
        address_hash=address_hash or (contact_primary_hash(contact, channel) if contact else None),
        channel=channel,
        topic=topic,
        status=status,
        previous_status=previous_status,
        method=method,
        actor=actor.kind,
        actor_user_id=actor.user_id,
        actor_token_id=actor.token_id,
        text_shown=text_shown,
        text_version=text_version,
        ip=actor.ip,
        user_agent=actor.user_agent,
        evidence=evidence or {},
    )
    session.add(event)
    session.flush()
    return event


def contact_identifiers(contact: Contact) -> list[tuple[str, str]]:
    """(kind, keyed hash) of every identifier of the person, email first."""
    pairs = [("email", contact.email_hash), ("phone", contact.phone_hash), ("postal", contact.postal_hash)]
    return [(kind, h) for kind, h in pairs if h]


def contact_hashes(contact: Contact) -> list[str]:
    """Every keyed hash that identifies the person (the domain hash is not personal)."""
    return [h for _kind, h in contact_identifiers(contact)]


def contact_identifier_for(contact: Contact, channel: str | None) -> tuple[str, str] | None:
    """The identifier of the channel itself when the person has one, else their first one."""
    pairs = contact_identifiers(contact)
    for kind, h in pairs:
        if kind == channel:
            return kind, h
    return pairs[0] if pairs else None


def contact_primary_hash(contact: Contact, channel: str | None) -> str | None:
    found = contact_identifier_for(contact, channel)
    return found[1] if found else None


def list_preferences(session: Session, contact_id: int) -> list[Preference]:
    stmt = (
        select(Preference)
        .where(Preference.contact_id == contact_id)
        .order_by(col(Preference.channel), col(Preference.topic))
    )
    return list(session.exec(stmt))


def _find(prefs: Iterable[Preference], channel: str, topic: str | None) -> Preference | None:
    for pref in prefs:
        if pref.channel == channel and pref.topic == topic:
            return pref
    return None


_OPT_OUT_REASON_BY_METHOD = {
    "one_click": Reason.ONE_CLICK,
    "link": Reason.UNSUBSCRIBE,
    "preference_centre": Reason.UNSUBSCRIBE,
    "reply": Reason.REPLY,
}


def apply_changes(
    session: Session,
    contact: Contact,
    changes: Iterable[PreferenceChange],
    *,
    method: str,
    actor: Actor,
    text_shown: str | None = None,
    text_version: str | None = None,
    evidence: dict[str, Any] | None = None,
    confirmed_by_person: bool = False,
) -> ChangeOutcome:
    """Apply preference changes for one contact under the rules of this module."""
    assert contact.id is not None
    outcome = ChangeOutcome()
    prefs = list_preferences(session, contact.id)
    hashes = contact_hashes(contact)
    for change in changes:
        require_topic(session, change.topic, field="preferences.topic")
        current = _find(prefs, change.channel.value, change.topic)
        current_status = current.status if current else None
        if change.status is PreferenceStatus.OPTED_IN:
            refusal = _opt_in_refusal(session, prefs, hashes, change, confirmed_by_person)
            if refusal:
                outcome.refused.append((change, refusal))
                continue
        # A confirmed opt-in is fresh consent even when the preference already says
        # opted_in (an opt-out recorded as a suppression only, e.g. by staff): record it
        # and lift the person's own opt-outs of that scope.
        fresh_consent = confirmed_by_person and change.status is PreferenceStatus.OPTED_IN
        if current_status == change.status.value and not fresh_consent:
            outcome.unchanged.append(change)
            continue
        event = record_consent(
            session,
            contact=contact,
            channel=change.channel.value,
            topic=change.topic,
            status=change.status.value,
            previous_status=current_status,
            method=method,
            actor=actor,
            text_shown=text_shown,
            text_version=text_version,
            evidence=evidence,
        )
        if current is None:
            current = Preference(
                contact_id=contact.id, channel=change.channel.value, topic=change.topic, status=""
            )
            prefs.append(current)
        current.status = change.status.value
        current.updated_at = utcnow()
        current.consent_event_id = event.id
        session.add(current)
        if change.status is PreferenceStatus.OPTED_OUT:
            _suppress_opt_out(session, contact, change, method, actor, event.id)
            settle_after_commit(session, [contact.id], actor)
        elif confirmed_by_person:
            _lift_own_opt_outs(session, hashes, change, actor, event.id)
        outcome.applied.append(change)
    session.flush()
    return outcome


def settle_after_commit(session: Session, contact_ids: list[int], actor: Actor) -> None:
    """Before an opt-out is acknowledged, wait out the person's in-flight sends
    (``app.delivery.service.settle``). System paths (bounces) acknowledge nobody."""
    if actor.kind == "system" or not contact_ids:
        return
    from app.db import after_commit
    from app.delivery.service import settle

    pending: set[int] = session.info.setdefault("settle_contacts", set())
    if not pending:
        after_commit(session, lambda: settle(sorted(pending)))
    pending.update(contact_ids)


def _opt_in_refusal(
    session: Session,
    prefs: list[Preference],
    hashes: list[str],
    change: PreferenceChange,
    confirmed_by_person: bool,
) -> str | None:
    channel = change.channel.value
    blocking = suppressions.active_for_hashes(
        session, hashes, channel=channel, reasons=sorted(BLOCKING_REASONS)
    )
    if blocking:
        return f"suppressed:{blocking[0].reason}"
    if confirmed_by_person:
        return None
    for pref in prefs:
        if (
            pref.channel == channel
            and pref.status == PreferenceStatus.OPTED_OUT
            and (pref.topic is None or pref.topic == change.topic)
        ):
            return "opted_out"
    opt_outs = [
        s
        for s in suppressions.active_for_hashes(
            session, hashes, channel=channel, reasons=sorted(OPT_OUT_REASONS)
        )
        if s.topic is None or s.topic == change.topic
    ]
    if opt_outs:
        return f"suppressed:{opt_outs[0].reason}"
    return None


def _suppress_opt_out(
    session: Session,
    contact: Contact,
    change: PreferenceChange,
    method: str,
    actor: Actor,
    event_id: int | None,
) -> None:
    from app.suppression.service import add_hashed  # local import: the modules use each other

    found = contact_identifier_for(contact, change.channel.value)
    if found is None:
        return
    kind, key_hash = found
    reason = _OPT_OUT_REASON_BY_METHOD.get(method, Reason.MANUAL_REQUEST)
    origin = {"recipient": Origin.RECIPIENT, "staff": Origin.STAFF}.get(actor.kind, Origin.SYSTEM)
    add_hashed(
        session,
        address_hash=key_hash,
        kind=kind,
        hint=None,
        channel=change.channel.value,
        topic=change.topic,
        reason=reason,
        origin=origin,
        method=method,
        note=None,
        actor=actor,
        consent_event_id=event_id,
    )


def _lift_own_opt_outs(
    session: Session, hashes: list[str], change: PreferenceChange, actor: Actor, event_id: int | None
) -> None:
    """The person confirmed an opt-in: lift their own opt-outs of exactly that scope."""
    for supp in suppressions.active_for_hashes(
        session,
        hashes,
        channel=change.channel.value,
        reasons=sorted(OPT_OUT_REASONS),
        topic=change.topic,
        exact_topic=True,
    ):
        if supp.channel != change.channel.value:
            continue  # an all-channel request is lifted by staff only
        supp.lifted_at = utcnow()
        supp.lift_note = f"opted back in (consent event {event_id})"
        session.add(supp)
