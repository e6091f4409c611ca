"""Contact routes: thin; the rules are in ``app.contacts.service``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from app.auth.actor import Actor
from app.contacts import repository, service
from app.contacts.schemas import (
    ContactIn,
    ContactList,
    ContactOut,
    ContactPatch,
    ErasureOut,
    IgnoredPreference,
    PreferenceOut,
    PreferencesIn,
    PreferencesOut,
)
from app.deps import ALL_STAFF, Require, SessionDep
from app.errors import Conflict
from app.models import Contact, Role
from app.preferences import service as preferences
from app.preferences.service import ChangeOutcome, PreferenceChange

router = APIRouter(prefix="/api/v1/contacts", tags=["contacts"])

ContactId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Reader = Annotated[Actor, Depends(Require(*ALL_STAFF))]
Writer = Annotated[Actor, Depends(Require(Role.SALES, Role.MARKETER))]
Rectifier = Annotated[Actor, Depends(Require(Role.SALES, Role.COMPLIANCE))]
Compliance = Annotated[Actor, Depends(Require(Role.COMPLIANCE))]


def contact_out(session: SessionDep, contact: Contact, outcome: ChangeOutcome | None = None) -> ContactOut:
    assert contact.id is not None
    prefs = preferences.list_preferences(session, contact.id)
    data: dict[str, Any] = contact.model_dump()
    data["preferences"] = [PreferenceOut.model_validate(p, from_attributes=True) for p in prefs]
    data["attributes"] = contact.attributes or {}
    data["source_detail"] = contact.source_detail or {}
    if outcome:
        data["ignored_preferences"] = [
            IgnoredPreference(channel=c.channel.value, topic=c.topic, status=c.status.value, reason=why)
            for c, why in outcome.refused
        ]
    return ContactOut.model_validate(data)


def _erased(contact: Contact, reason: str) -> JSONResponse:
    return JSONResponse({"id": contact.id, "erased": True, "reason": reason})


@router.post(
    "",
    response_model=ContactOut,
    responses={200: {"description": "updated"}, 201: {"description": "created"}},
    status_code=201,
)
def create_or_update(data: ContactIn, session: SessionDep, actor: Writer) -> Any:
    """Create a lead, or update the contact with the same email. Never undoes an opt-out."""
    result = service.upsert(session, data, actor)
    if result.erased_reason:
        return _erased(result.contact, result.erased_reason)
    out = contact_out(session, result.contact, result.preferences)
    out.created = result.created
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if result.created else 200)


@router.get("", response_model=ContactList)
def find(
    session: SessionDep,
    actor: Reader,
    email: Annotated[str | None, Query(max_length=320)] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> ContactList:
    """``?email=`` is an exact match in any letter case; ``?q=`` searches email, name, company."""
    if email is not None:
        contact = service.find_by_email(session, email)
        return ContactList(items=[contact_out(session, contact)] if contact else [])
    return ContactList(
        items=[contact_out(session, c) for c in repository.search(session, q=q, limit=limit, offset=offset)]
    )


@router.get("/{contact_id}", response_model=ContactOut)
def read(contact_id: ContactId, session: SessionDep, actor: Reader) -> ContactOut:
    return contact_out(session, service.get(session, contact_id))


@router.patch("/{contact_id}", response_model=ContactOut | ErasureOut)
def rectify(contact_id: ContactId, patch: ContactPatch, session: SessionDep, actor: Rectifier) -> Any:
    """Rectify fields. A date of birth under the minimum age erases and suppresses the person."""
    result = service.rectify(session, contact_id, patch, actor)
    if result.erased_reason:
        return _erased(result.contact, result.erased_reason)
    return contact_out(session, result.contact)


@router.delete("/{contact_id}", response_model=ErasureOut)
def erase(contact_id: ContactId, session: SessionDep, actor: Compliance) -> ErasureOut:
    """Erase personal data; the keyed-hash suppression stays, so they are never mailed again."""
    contact = service.get(session, contact_id)
    service.erase(session, contact, actor)
    return ErasureOut(id=contact_id, erased=True, reason="erasure")


@router.get("/{contact_id}/export")
def export(contact_id: ContactId, session: SessionDep, actor: Compliance) -> dict[str, Any]:
    """Everything held about the person: profile, preferences, consent history,
    suppressions that name them, deliveries, inbound mail, requests."""
    from app.auth import audit

    contact = service.get(session, contact_id)
    audit.record(session, actor, "contact.export", target_type="contact", target_id=contact_id)
    return service.export(session, contact)


@router.get("/{contact_id}/preferences", response_model=PreferencesOut)
def get_preferences(contact_id: ContactId, session: SessionDep, actor: Reader) -> PreferencesOut:
    service.get(session, contact_id)
    prefs = preferences.list_preferences(session, contact_id)
    return PreferencesOut(preferences=[PreferenceOut.model_validate(p, from_attributes=True) for p in prefs])


@router.put("/{contact_id}/preferences", response_model=PreferencesOut)
def put_preferences(
    contact_id: ContactId, data: PreferencesIn, session: SessionDep, actor: Rectifier
) -> PreferencesOut:
    """Set the given preferences (others are left as they are). Opting out is always
    accepted; opting back in after an opt-out is the person's own act (preference centre),
    so staff get 409 for it."""
    contact = service.get(session, contact_id)
    changes = [PreferenceChange(i.channel, i.topic, i.status) for i in data.preferences]
    outcome = preferences.apply_changes(
        session,
        contact,
        changes,
        method=data.method,
        actor=actor,
        text_shown=data.consent_text,
        text_version=data.consent_version,
        evidence={"note": data.note} if data.note else None,
    )
    if outcome.refused:
        refused = "; ".join(f"{c.channel.value}/{c.topic or 'all'}: {why}" for c, why in outcome.refused)
        raise Conflict(
            f"cannot opt back in on the person's behalf ({refused}); they can do it in the preference centre",
            field="preferences",
        )
    prefs = preferences.list_preferences(session, contact_id)
    return PreferencesOut(preferences=[PreferenceOut.model_validate(p, from_attributes=True) for p in prefs])
