"""The gate against an independent model of its truth table (app/suppression/gate.py).

Hypothesis builds random worlds — contacts with or without each identifier, birth dates,
preferences, suppressions of every reason, channel, topic scope and identifier, some
lifted — and every (channel, topic, purpose, consent mode) answer of the SQL gate must
equal the model's, on SQLite and on PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import Session

from app.models import Contact, Preference, Suppression, utcnow
from app.suppression import gate
from app.suppression.hashing import keyed_hash
from app.suppression.policy import BLOCKING_REASONS, OPT_OUT_REASONS, REASON_PRIORITY, Reason

CHANNELS = ["email", "postal", "phone"]
TOPICS = ["member-updates", "special-offers", "partner-offers"]
TODAY = date(2026, 6, 15)
ADULT = date(1990, 1, 1)
MINOR = date(2010, 1, 1)
EXACTLY_18 = date(2008, 6, 15)  # 18 today: allowed
ONE_DAY_SHORT = date(2008, 6, 16)  # 18 tomorrow: refused


@dataclass
class PersonSpec:
    has_email: bool
    has_phone: bool
    has_postal: bool
    erased: bool
    born: date | None
    domain: int
    prefs: dict[tuple[str, str | None], str] = field(default_factory=dict)


@dataclass
class SuppressionSpec:
    person: int
    identifier: str  # email | phone | postal | domain
    channel: str | None
    topic: str | None
    reason: str
    lifted: bool


def identifiers(index: int, spec: PersonSpec) -> dict[str, str | None]:
    return {
        "email": keyed_hash("email", f"p{index}@d{spec.domain}.example")
        if spec.has_email and not spec.erased
        else None,
        "phone": keyed_hash("phone", f"+4930{index:07d}") if spec.has_phone and not spec.erased else None,
        "postal": keyed_hash("postal", f"{index} main st|1011{index}|de")
        if spec.has_postal and not spec.erased
        else None,
        "domain": keyed_hash("domain", f"d{spec.domain}.example")
        if spec.has_email and not spec.erased
        else None,
    }


def target_hash(index: int, spec: PersonSpec, identifier: str) -> str:
    """The hash a suppression names: the person's identifier even if they lack it now."""
    values = {
        "email": keyed_hash("email", f"p{index}@d{spec.domain}.example"),
        "phone": keyed_hash("phone", f"+4930{index:07d}"),
        "postal": keyed_hash("postal", f"{index} main st|1011{index}|de"),
        "domain": keyed_hash("domain", f"d{spec.domain}.example"),
    }
    return values[identifier]


def model(
    index: int,
    person: PersonSpec,
    people: list[PersonSpec],
    sups: list[SuppressionSpec],
    channel: str,
    topic: str | None,
    purpose: str,
    mode: str,
) -> str | None:
    """The truth table of the gate's docstring, row by row, in plain Python."""
    if person.erased:
        return "erased"
    ids = identifiers(index, person)
    has = {"email": ids["email"], "phone": ids["phone"], "postal": ids["postal"]}[channel]
    if not has:
        return "no_address"
    if person.born is not None and person.born > date(TODAY.year - 18, TODAY.month, TODAY.day):
        return "underage"
    mine = {h for h in ids.values() if h}
    active = [
        s
        for s in sups
        if not s.lifted
        and (s.channel is None or s.channel == channel)
        and target_hash(s.person, people[s.person], s.identifier) in mine
    ]

    def first(reasons: list[str]) -> str:
        return "suppressed:" + min(reasons, key=REASON_PRIORITY.index)

    blocking = [s.reason for s in active if s.reason in BLOCKING_REASONS]
    if blocking:
        return first(blocking)
    if purpose == "service":
        return None
    opt_outs = [
        s.reason for s in active if s.reason in OPT_OUT_REASONS and (s.topic is None or s.topic == topic)
    ]
    if opt_outs:
        return first(opt_outs)
    scopes = [(channel, None)] + ([(channel, topic)] if topic is not None else [])
    statuses = [person.prefs.get(scope) for scope in scopes]
    if "opted_out" in statuses:
        return "opted_out"
    if mode == "opt-in" and "opted_in" not in statuses:
        return "no_consent"
    return None


pref_keys = st.sampled_from([(c, t) for c in CHANNELS for t in [None, *TOPICS]])
people_st = st.lists(
    st.builds(
        PersonSpec,
        has_email=st.booleans(),
        has_phone=st.booleans(),
        has_postal=st.booleans(),
        erased=st.booleans().map(lambda b: b and False)
        | st.just(True).filter(lambda _: False)
        | st.booleans(),
        born=st.sampled_from([None, ADULT, MINOR, EXACTLY_18, ONE_DAY_SHORT]),
        domain=st.integers(0, 1),
        prefs=st.dictionaries(pref_keys, st.sampled_from(["opted_in", "opted_out"]), max_size=6),
    ),
    min_size=1,
    max_size=4,
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[PersonSpec], list[SuppressionSpec]]:
    people = draw(people_st)
    sups = draw(
        st.lists(
            st.builds(
                SuppressionSpec,
                person=st.integers(0, len(people) - 1),
                identifier=st.sampled_from(["email", "phone", "postal", "domain"]),
                channel=st.sampled_from([None, *CHANNELS]),
                topic=st.sampled_from([None, *TOPICS]),
                reason=st.sampled_from([r.value for r in Reason]),
                lifted=st.sampled_from([False, False, True]),
            ),
            max_size=6,
        )
    )
    return people, sups


def build(session: Session, people: list[PersonSpec], sups: list[SuppressionSpec]) -> list[int]:
    ids: list[int] = []
    for index, spec in enumerate(people):
        hashes = identifiers(index, spec)
        contact = Contact(
            email=f"p{index}@d{spec.domain}.example" if hashes["email"] else None,
            email_hash=hashes["email"],
            domain_hash=hashes["domain"],
            phone=f"+4930{index:07d}" if hashes["phone"] else None,
            phone_hash=hashes["phone"],
            postal_hash=hashes["postal"],
            date_of_birth=spec.born,
            erased_at=utcnow() if spec.erased else None,
            source="api",
        )
        session.add(contact)
        session.flush()
        assert contact.id is not None
        ids.append(contact.id)
        for (channel, topic), status in spec.prefs.items():
            session.add(Preference(contact_id=contact.id, channel=channel, topic=topic, status=status))
    for s in sups:
        session.add(
            Suppression(
                channel=s.channel,
                kind=s.identifier,
                address_hash=target_hash(s.person, people[s.person], s.identifier),
                topic=s.topic,
                reason=s.reason,
                origin="system",
                lifted_at=utcnow() if s.lifted else None,
            )
        )
    session.flush()
    return ids


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(world=worlds())
def test_gate_matches_its_truth_table(
    session: Session, world: tuple[list[PersonSpec], list[SuppressionSpec]]
) -> None:
    people, sups = world
    try:
        ids = build(session, people, sups)
        for channel in CHANNELS:
            for topic in [None, *TOPICS]:
                for purpose in ("marketing", "service"):
                    for mode in ("opt-in", "opt-out"):
                        decisions = gate.check(
                            session,
                            ids,
                            channel=channel,
                            topic=topic,
                            purpose=purpose,
                            consent_mode=mode,
                            today=TODAY,
                        )
                        for index, contact_id in enumerate(ids):
                            expected = model(
                                index, people[index], people, sups, channel, topic, purpose, mode
                            )
                            got = decisions[contact_id]
                            assert got.reason == expected, (
                                channel,
                                topic,
                                purpose,
                                mode,
                                index,
                                people,
                                sups,
                            )
                            assert got.allowed is (expected is None)
    finally:
        session.rollback()


# ---------------------------------------------------------------- the table, row by row
def _one(session: Session, **kw: object) -> int:
    values: dict[str, object] = {
        "email": "x@y.example",
        "email_hash": keyed_hash("email", "x@y.example"),
        "domain_hash": keyed_hash("domain", "y.example"),
        "source": "api",
        **kw,
    }
    contact = Contact(**values)  # type: ignore[arg-type]
    session.add(contact)
    session.flush()
    assert contact.id is not None
    return contact.id


def _supp(
    session: Session,
    reason: str,
    *,
    channel: str | None = "email",
    topic: str | None = None,
    kind: str = "email",
) -> None:
    value = {"email": "x@y.example", "domain": "y.example"}[kind]
    session.add(
        Suppression(
            channel=channel,
            kind=kind,
            address_hash=keyed_hash(kind, value),
            topic=topic,
            reason=reason,
            origin="system",
        )
    )
    session.flush()


def _decide(
    session: Session,
    cid: int,
    *,
    topic: str | None = "special-offers",
    purpose: str = "marketing",
    mode: str = "opt-in",
) -> str | None:
    return gate.check(
        session, [cid], channel="email", topic=topic, purpose=purpose, consent_mode=mode, today=TODAY
    )[cid].reason


def test_unset_preference_follows_consent_mode(session: Session) -> None:
    cid = _one(session)
    assert _decide(session, cid, mode="opt-in") == "no_consent"
    assert _decide(session, cid, mode="opt-out") is None
    assert _decide(session, cid, purpose="service") is None


def test_channel_opt_out_beats_topic_opt_in(session: Session) -> None:
    cid = _one(session)
    session.add(Preference(contact_id=cid, channel="email", topic=None, status="opted_out"))
    session.add(Preference(contact_id=cid, channel="email", topic="special-offers", status="opted_in"))
    session.flush()
    assert _decide(session, cid) == "opted_out"
    assert _decide(session, cid, purpose="service") is None


def test_topic_opt_out_keeps_other_topics(session: Session) -> None:
    cid = _one(session)
    session.add(Preference(contact_id=cid, channel="email", topic=None, status="opted_in"))
    session.flush()
    _supp(session, "unsubscribe", topic="partner-offers")
    assert _decide(session, cid, topic="partner-offers") == "suppressed:unsubscribe"
    assert _decide(session, cid, topic="special-offers") is None


@pytest.mark.parametrize("reason", sorted(BLOCKING_REASONS))
def test_service_mail_never_skips_blocking_reasons(session: Session, reason: str) -> None:
    cid = _one(session)
    _supp(session, reason, topic="surveys")  # even a topic-scoped row of a blocking reason binds everything
    assert _decide(session, cid, purpose="service") == f"suppressed:{reason}"
    assert _decide(session, cid, purpose="marketing", mode="opt-out") == f"suppressed:{reason}"


@pytest.mark.parametrize("reason", sorted(OPT_OUT_REASONS))
def test_service_mail_skips_marketing_opt_outs(session: Session, reason: str) -> None:
    cid = _one(session)
    _supp(session, reason)
    assert _decide(session, cid, purpose="service") is None
    assert _decide(session, cid, mode="opt-out") == f"suppressed:{reason}"


def test_domain_block_and_all_channel_entries(session: Session) -> None:
    cid = _one(session)
    _supp(session, "domain_block", kind="domain")
    assert _decide(session, cid, purpose="service") == "suppressed:domain_block"
    other = _one(
        session, email_hash=keyed_hash("email", "z@q.example"), domain_hash=keyed_hash("domain", "q.example")
    )
    _supp(session, "erasure", channel=None)
    assert _decide(session, other, mode="opt-out") is None


def test_priority_names_the_strongest_reason(session: Session) -> None:
    cid = _one(session)
    for reason in ("unsubscribe", "hard_bounce", "complaint"):
        _supp(session, reason)
    assert _decide(session, cid) == "suppressed:complaint"


def test_age_boundary(session: Session) -> None:
    assert _decide(session, _one(session, date_of_birth=EXACTLY_18), mode="opt-out") is None
    short = _one(session, date_of_birth=ONE_DAY_SHORT, email_hash=keyed_hash("email", "k@y.example"))
    assert _decide(session, short, mode="opt-out") == "underage"


def test_unknown_contacts_are_not_found(session: Session) -> None:
    assert (
        gate.check(session, [987654], channel="email", topic=None, purpose="service")[987654].reason
        == "not_found"
    )


def test_gate_runs_inside_one_statement(session: Session) -> None:
    """``sendable`` is a SQL condition: it can sit inside the audience SELECT and the claim UPDATE."""
    from sqlmodel import select

    allowed = _one(session)
    session.add(Preference(contact_id=allowed, channel="email", topic=None, status="opted_in"))
    denied = _one(session, email_hash=keyed_hash("email", "d@y.example"))
    session.flush()
    rows = session.exec(
        select(Contact.id).where(
            gate.sendable("email", "special-offers", "marketing", consent_mode="opt-in", today=TODAY)
        )
    ).all()
    assert allowed in rows and denied not in rows
    assert session.execute(text("SELECT 1")).scalar() == 1
