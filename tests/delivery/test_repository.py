"""The claim: the gate decides per row inside the claim statement, due rows are taken in id
order, no more than the micro-batch (the rest of the slice left as it was), and on
PostgreSQL the plan stays a handful of index probes whatever the ledger's statistics say
(a ledger written a moment ago has none)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import update
from sqlmodel import Session

from app.auth.actor import Actor
from app.campaigns import service as campaigns
from app.campaigns.schemas import CampaignIn
from app.config import Settings, use_settings
from app.contacts import service as contacts
from app.db import get_engine
from app.delivery import repository
from app.delivery import service as _service
from app.models import Campaign, Delivery, Preference, utcnow
from app.models.base import Channel, PreferenceStatus
from app.preferences.service import PreferenceChange, apply_changes
from app.suppression import gate
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.suppression.policy import Origin, Reason
from app.suppression.service import add_for_address, add_hashed
from tests.campaigns.helpers import CAMPAIGN, bulk_contacts


def _campaign_with_ledger(session: Session, db: Settings) -> Campaign:
    created = campaigns.create(session, CampaignIn(**CAMPAIGN), Actor.system())
    session.commit()
    assert created.id is not None
    campaigns.build_audience(created.id, settings=db)
    session.execute(update(Campaign).where(Campaign.id == created.id).values(status="sending"))  # type: ignore[arg-type]
    session.commit()
    campaign = session.get(Campaign, created.id)
    assert campaign is not None
    session.refresh(campaign)
    return campaign


def _ledger(session: Session, campaign_id: int) -> dict[int, tuple[int, str]]:
    rows = session.execute(
        sa.select(Delivery.id, Delivery.contact_id, Delivery.status).where(
            Delivery.campaign_id == campaign_id
        )  # type: ignore[arg-type]
    ).all()
    return {int(d): (int(c), str(s)) for d, c, s in rows}


def test_claim_checks_the_gate_per_row_and_takes_due_rows_in_order(db: Settings, session: Session) -> None:
    ids = bulk_contacts(session, [f"c{i}@example.com" for i in range(12)])
    campaign = _campaign_with_ledger(session, db)
    assert campaign.id is not None
    ledger = _ledger(session, campaign.id)
    by_contact = {contact: delivery for delivery, (contact, _status) in ledger.items()}
    # After the ledger was written: an opt-out, a topic opt-out and a hard bounce.
    apply_changes(
        session,
        contacts.get(session, ids["c2@example.com"]),
        [PreferenceChange(Channel.EMAIL, None, PreferenceStatus.OPTED_OUT)],
        method="link",
        actor=Actor.recipient(),
    )
    apply_changes(
        session,
        contacts.get(session, ids["c5@example.com"]),
        [PreferenceChange(Channel.EMAIL, "special-offers", PreferenceStatus.OPTED_OUT)],
        method="preference_centre",
        actor=Actor.recipient(),
    )
    add_for_address(
        session,
        address="c7@example.com",
        channel="email",
        topic=None,
        reason="hard_bounce",
        method=None,
        note=None,
        actor=Actor.system(),
    )
    # … and consent that went away (row 8 of the gate: no opt-in left).
    session.execute(sa.delete(Preference).where(Preference.contact_id == ids["c9@example.com"]))  # type: ignore[arg-type]
    session.commit()
    expected = gate.check(
        session, list(ids.values()), channel="email", topic=campaign.topic, purpose=campaign.purpose
    )
    lo, hi = min(ledger), max(ledger)

    first = repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=5)
    session.commit()
    second = repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=100)
    session.commit()
    assert repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=100) == []
    session.commit()

    assert [r.delivery_id for r in first] == sorted(ledger)[:5]
    assert [r.delivery_id for r in first + second] == sorted(ledger)
    for row in first + second:
        decision = expected[row.contact_id]
        assert by_contact[row.contact_id] == row.delivery_id
        if decision.allowed:
            assert (row.status, row.reason, row.attempts) == ("claimed", None, 1)
            assert row.contact["email"] == f"c{list(ids.values()).index(row.contact_id)}@example.com"
        else:
            assert (row.status, row.reason, row.attempts) == ("suppressed", decision.reason, 0)
            assert row.contact == {}
    denied = {r.contact_id: r.reason for r in first + second if r.status == "suppressed"}
    assert denied == {
        ids["c2@example.com"]: "suppressed:unsubscribe",
        ids["c5@example.com"]: "suppressed:unsubscribe",
        ids["c7@example.com"]: "suppressed:hard_bounce",
        ids["c9@example.com"]: "no_consent",
    }
    assert {s for _c, s in _ledger(session, campaign.id).values()} == {"claimed", "suppressed"}


def test_a_claim_takes_its_micro_batch_in_order_and_checks_the_gate_for_those(
    db: Settings, session: Session
) -> None:
    emails = [f"claim{i:02d}@example.com" for i in range(30)]
    ids = bulk_contacts(session, emails)
    campaign = _campaign_with_ledger(session, db)
    assert campaign.id is not None
    deliveries = sorted(_ledger(session, campaign.id))  # in contact order, as the audience is
    for email in (emails[3], emails[25]):  # one inside the first micro-batch, one after it
        add_hashed(
            session,
            address_hash=keyed_hash(IdentifierKind.EMAIL, email),
            kind=IdentifierKind.EMAIL,
            hint=None,
            channel="email",
            topic=None,
            reason=Reason.ONE_CLICK,
            origin=Origin.RECIPIENT,
            method="one_click",
            note=None,
            actor=Actor.recipient(ip="192.0.2.1"),
        )
    session.commit()

    lo, hi = deliveries[0], deliveries[-1]
    rows = repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=10)
    session.commit()
    assert [r.delivery_id for r in rows] == deliveries[:10]
    by_contact = {r.contact_id: r for r in rows}
    assert by_contact[ids[emails[3]]].status == "suppressed"
    assert by_contact[ids[emails[3]]].reason == "suppressed:one_click"
    assert by_contact[ids[emails[3]]].contact == {}
    claimed = [r for r in rows if r.status == "claimed"]
    assert len(claimed) == 9
    assert all(r.attempts == 1 and r.reason is None for r in claimed)
    assert {r.contact["email"] for r in claimed} == {e for e in emails[:10] if e != emails[3]}

    session.expire_all()
    statuses = {d: status for d, (_contact, status) in _ledger(session, campaign.id).items()}
    assert [statuses[d] for d in deliveries[10:]] == ["pending"] * 20  # untouched, gate or not

    rest = repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=100)
    session.commit()
    assert [r.delivery_id for r in rest] == deliveries[10:]
    assert {r.contact_id for r in rest if r.status == "suppressed"} == {ids[emails[25]]}
    assert repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=100) == []


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_claim_skips_rows_another_claim_holds(db: Settings, session: Session) -> None:
    bulk_contacts(session, [f"s{i}@example.com" for i in range(6)])
    campaign = _campaign_with_ledger(session, db)
    assert campaign.id is not None
    ledger = sorted(_ledger(session, campaign.id))
    with get_engine(db).connect() as other:
        other.execute(
            sa.text("SELECT id FROM delivery WHERE id = ANY(:ids) FOR UPDATE"), {"ids": ledger[:2]}
        ).all()
        claimed = repository.claim_batch(session, campaign, lo=ledger[0], hi=ledger[-1], limit=3)
        session.commit()
        other.rollback()
    assert [r.delivery_id for r in claimed] == ledger[2:5]


def _sql_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, datetime):
        return "timestamptz"
    if isinstance(value, date):
        return "date"
    return "text"


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _plan_nodes(child)
    return found


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("analysed", [False, True], ids=["fresh-ledger", "analysed-ledger"])
def test_claim_plan_reads_only_the_rows_it_claims(db: Settings, session: Session, analysed: bool) -> None:
    """A ledger of 3,000 rows, written a moment ago (no statistics) or analysed, most of it
    claimed already: the claim of the next 50 rows, planned as a prepared statement is
    (without its parameters' values), reads them from the index of due rows in id order
    (neither the rows claimed before nor a sort of the campaign's due rows) and evaluates
    the gate by index probes for those 50 contacts (no scan, no hash of the preference,
    contact or delivery tables)."""
    bulk_contacts(session, [f"p{i}@example.com" for i in range(3000)])
    session.execute(sa.text("ANALYZE contact"))
    session.execute(sa.text("ANALYZE preference"))
    session.commit()
    campaign = _campaign_with_ledger(session, db)
    assert campaign.id is not None
    ledger = sorted(_ledger(session, campaign.id))
    for _ in range(3):
        repository.claim_batch(session, campaign, lo=ledger[0], hi=ledger[-1], limit=950)
        session.commit()
    if analysed:
        session.execute(sa.text("ANALYZE delivery"))
        session.commit()
    # The claim's transaction as claim_batch sends it (in one pipeline): the lock, the
    # planner setting, then the claim, prepared.
    engine = get_engine(db)
    statement, constants, processors = repository._claim_sql(
        campaign.channel, campaign.topic, campaign.purpose, repository._gate_settings(), engine.dialect
    )
    parameters = {
        **constants,
        "claim_campaign": campaign.id,
        "claim_lo": ledger[0],
        "claim_hi": ledger[-1],
        "claim_limit": 50,
        "claim_now": processors["claim_now"](utcnow()),
    }
    before: list[tuple[str, Any]] = [
        (repository._CLAIM_LOCK_SQL, None),
        (repository._INDEX_PROBES_ONLY, None),
    ]
    assert statement.lstrip().startswith("WITH") and "UPDATE delivery" in statement
    nodes = _plan_nodes(_generic_plan(engine, before, statement, parameters)["Plan"])

    scans = [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes if "Relation Name" in n
    ]
    assert ("Index Scan", "delivery", "ix_delivery_due") in scans, scans
    assert not [
        s for s in scans if s[0] in ("Seq Scan", "Bitmap Heap Scan") and s[1] in ("delivery", "contact")
    ], scans
    assert not [s for s in scans if s[0] == "Seq Scan" and s[1] == "preference"], scans
    assert not [n for n in nodes if "hashed" in str(n.get("Subplan Name", ""))], scans
    # No node looked at more rows than the claim's own (times the lookups for each).
    looked_at = [
        (
            n["Node Type"],
            (n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)) * n.get("Actual Loops", 1),
        )
        for n in nodes
    ]
    assert max(rows for _node, rows in looked_at) <= 50 * 2, looked_at


def _generic_plan(engine: sa.Engine, before: list[tuple[str, Any]], statement: str, parameters: Any) -> Any:
    """EXPLAIN ANALYZE of ``statement`` prepared and planned without its parameters' values
    (as PostgreSQL plans a statement psycopg prepares once it has run a few times), after
    replaying the statements of its transaction that ran ``before`` it."""
    names: list[str] = []

    def numbered(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    body = re.sub(r"%\((\w+)\)s", numbered, statement).replace("%%", "%")
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for earlier, earlier_parameters in before:
            cursor.execute(earlier, earlier_parameters)
        types = ", ".join(_sql_type(parameters[name]) for name in names)
        cursor.execute(f"PREPARE claim_probe ({types}) AS {body}")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        literal = psycopg.ClientCursor(raw.driver_connection)  # the values written into the SQL
        literal.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim_probe({', '.join(['%s'] * len(names))})",
            [str(v) if isinstance(v, str) else v for v in (parameters[name] for name in names)],
        )
        row = literal.fetchone()
        assert row is not None
        plan = row[0]
        cursor.execute("DEALLOCATE claim_probe")
        raw.rollback()
    finally:
        raw.close()
    return (json.loads(plan) if isinstance(plan, str) else plan)[0]


def test_claim_follows_the_consent_mode_in_force(db: Settings, session: Session) -> None:
    """The claim statement is built once per gate; the settings it reads are part of that."""
    ids = bulk_contacts(session, ["m1@example.com", "m2@example.com"])
    campaign = _campaign_with_ledger(session, db)
    assert campaign.id is not None
    ledger = sorted(_ledger(session, campaign.id))
    session.execute(sa.delete(Preference).where(Preference.contact_id.in_(list(ids.values()))))  # type: ignore[attr-defined]
    session.commit()
    (first,) = repository.claim_batch(session, campaign, lo=ledger[0], hi=ledger[-1], limit=1)
    session.commit()
    use_settings(db.model_copy(update={"consent_mode": "opt-out"}))
    try:
        (second,) = repository.claim_batch(session, campaign, lo=ledger[0], hi=ledger[-1], limit=1)
        session.commit()
    finally:
        use_settings(db)
    assert (first.status, first.reason) == ("suppressed", "no_consent")
    assert (second.status, second.reason) == ("claimed", None)


def test_record_outcomes_writes_every_field_over_claimed_rows_only(db: Settings, session: Session) -> None:
    """The outcomes of a micro-batch, in one statement: every field as given (None too,
    replies with quotes, backslashes, line breaks and non-ASCII text; a NUL in a reply is
    kept as U+FFFD), over ``claimed`` rows only — a row no longer claimed (expired to
    ``unknown`` meanwhile) keeps its state."""
    bulk_contacts(session, [f"o{i}@example.com" for i in range(4)])
    campaign = _campaign_with_ledger(session, db)
    assert campaign.id is not None
    ledger = sorted(_ledger(session, campaign.id))
    rows = repository.claim_batch(session, campaign, lo=ledger[0], hi=ledger[-1], limit=10)
    session.commit()
    assert [r.status for r in rows] == ["claimed"] * 4
    lost = ledger[3]
    session.execute(update(Delivery).where(Delivery.id == lost).values(status="unknown"))  # type: ignore[arg-type]
    session.commit()
    sent_at = datetime(2026, 12, 1, 6, 30, 15, 123456, tzinfo=UTC)
    retry_at = datetime(2026, 12, 1, 7, 0, 0, tzinfo=UTC)
    reply = 'queued as "A1\\B2"\n2.0.0 Ok: déjà vu ✓'
    outcomes = [
        _service._record(ledger[0], "sent", None, 250, reply, "<lw.1.x@example.com>", None, sent_at),
        _service._record(ledger[1], "deferred", "temporary failure", 451, "try later", "<m2>", retry_at),
        _service._record(ledger[2], "bounced", "mailbox does not exist", 550, "550 no\x00user", None, None),
        _service._record(lost, "sent", None, 250, "late", "<m4>", None, sent_at),
    ]
    repository.record_outcomes(session, outcomes)
    session.commit()
    session.expire_all()
    got = {
        d.id: d
        for d in session.execute(sa.select(Delivery).where(Delivery.campaign_id == campaign.id)).scalars()  # type: ignore[arg-type]
    }
    first, second, third, fourth = (got[i] for i in ledger)
    assert (first.status, first.reason, first.smtp_code, first.smtp_reply) == ("sent", None, 250, reply)
    assert (first.message_id, first.sent_at, first.next_attempt_at) == ("<lw.1.x@example.com>", sent_at, None)
    assert (second.status, second.reason, second.smtp_code, second.smtp_reply) == (
        "deferred",
        "temporary failure",
        451,
        "try later",
    )
    assert (second.message_id, second.sent_at, second.next_attempt_at) == ("<m2>", None, retry_at)
    assert (third.status, third.reason, third.smtp_code, third.smtp_reply, third.message_id) == (
        "bounced",
        "mailbox does not exist",
        550,
        "550 no\ufffduser",  # a NUL from the relay: PostgreSQL refuses it in text
        None,
    )
    assert (fourth.status, fourth.smtp_code, fourth.message_id) == ("unknown", None, None)
    assert fourth.sent_at is None
