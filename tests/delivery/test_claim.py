"""The claim statement (``repository.claim_batch``): it takes the first due rows of the
slice in id order, no more than its micro-batch, checks the gate for exactly those, and
leaves the rest of the slice as it was."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlmodel import Session

from app.auth.actor import Actor
from app.config import Settings
from app.delivery import repository
from app.models import Campaign, Delivery, utcnow
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.suppression.policy import Origin, Reason
from app.suppression.service import add_hashed
from tests.campaigns.helpers import bulk_contacts


def _campaign_with_ledger(session: Session, emails: list[str]) -> tuple[Campaign, list[int], dict[str, int]]:
    ids = bulk_contacts(session, emails)
    now = utcnow()
    campaign = Campaign(
        name="Claims",
        topic="special-offers",
        subject="Hello",
        html="<p>Hello</p>",
        status="sending",
        audience_built_at=now,
        started_at=now,
    )
    session.add(campaign)
    session.flush()
    session.execute(
        insert(Delivery),
        [
            {
                "campaign_id": campaign.id,
                "contact_id": ids[email],
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for email in emails
        ],
    )
    deliveries = list(
        session.execute(
            select(Delivery.id).where(Delivery.campaign_id == campaign.id).order_by(Delivery.id)
        ).scalars()
    )
    session.commit()
    return campaign, [int(d) for d in deliveries], ids


def test_a_claim_takes_its_micro_batch_in_order_and_checks_the_gate_for_those(
    db: Settings, session: Session
) -> None:
    emails = [f"claim{i:02d}@example.com" for i in range(30)]
    campaign, deliveries, ids = _campaign_with_ledger(session, emails)
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
    statuses = dict(session.execute(select(Delivery.id, Delivery.status)).all())
    assert [statuses[d] for d in deliveries[10:]] == ["pending"] * 20  # untouched, gate or not

    rest = repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=100)
    session.commit()
    assert [r.delivery_id for r in rest] == deliveries[10:]
    assert {r.contact_id for r in rest if r.status == "suppressed"} == {ids[emails[25]]}
    assert repository.claim_batch(session, campaign, lo=lo, hi=hi, limit=100) == []
