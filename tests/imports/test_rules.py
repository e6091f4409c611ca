"""The importer's set-based opt-in rule must say exactly what ``apply_changes`` says."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from app.auth.actor import Actor
from app.imports.batch import SuppressionRow, refusal
from app.models import Contact, Preference, Suppression
from app.models.base import Channel, PreferenceStatus
from app.preferences.service import PreferenceChange, apply_changes
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.suppression.policy import Reason

CHANNELS = [c.value for c in Channel]
TOPICS = [None, "special-offers", "surveys"]
_serial = itertools.count()

pref_st = st.dictionaries(
    st.tuples(st.sampled_from(CHANNELS), st.sampled_from(TOPICS)),
    st.sampled_from([PreferenceStatus.OPTED_IN.value, PreferenceStatus.OPTED_OUT.value]),
    max_size=5,
)
supp_st = st.lists(
    st.tuples(
        st.sampled_from(
            ["email", "phone", "other"]
        ),  # whose hash: the person's email, phone, or someone else
        st.sampled_from([None, *CHANNELS]),
        st.sampled_from(TOPICS),
        st.sampled_from([r.value for r in Reason]),
        st.booleans(),  # lifted
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefs=pref_st, supps=supp_st, channel=st.sampled_from(CHANNELS), topic=st.sampled_from(TOPICS))
def test_refusal_matches_apply_changes(session: Session, prefs, supps, channel, topic) -> None:  # type: ignore[no-untyped-def]
    n = next(_serial)
    hashes = {
        "email": keyed_hash(IdentifierKind.EMAIL, f"rule{n}@example.com"),
        "phone": keyed_hash(IdentifierKind.PHONE, f"+4930{n:07d}"),
        "other": keyed_hash(IdentifierKind.EMAIL, f"someone{n}@example.com"),
    }
    contact = Contact(
        email=f"rule{n}@example.com",
        email_hash=hashes["email"],
        phone=f"+4930{n:07d}",
        phone_hash=hashes["phone"],
        source="api",
        attributes={},
        source_detail={},
    )
    session.add(contact)
    session.flush()
    assert contact.id is not None
    for (pchannel, ptopic), status in prefs.items():
        session.add(Preference(contact_id=contact.id, channel=pchannel, topic=ptopic, status=status))
    rows: list[SuppressionRow] = []
    for whose, schannel, stopic, reason, lifted in supps:
        from app.models import utcnow

        session.add(
            Suppression(
                channel=schannel,
                kind="email" if whose != "phone" else "phone",
                address_hash=hashes[whose],
                topic=stopic,
                reason=reason,
                origin="staff",
                lifted_at=utcnow() if lifted else None,
            )
        )
        if not lifted and whose != "other":
            rows.append(SuppressionRow(hashes[whose], schannel, stopic, reason))
    session.flush()
    try:
        expected = apply_changes(
            session,
            contact,
            [PreferenceChange(Channel(channel), topic, PreferenceStatus.OPTED_IN)],
            method="import",
            actor=Actor(kind="staff", role="sales"),
        )
        want = expected.refused[0][1] if expected.refused else None
        got = refusal(prefs, rows, channel, topic)
        assert got == want, (prefs, supps, channel, topic)
    finally:
        session.rollback()
