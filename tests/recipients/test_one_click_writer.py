"""The one-click hot path (``write_one_clicks`` and its writer/settler threads) writes exactly
what the general path (``apply_changes``) writes, refuses what it refuses, survives races,
and answers only once nothing is in flight for the person (DESIGN invariant 2)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func as sa_func
from sqlalchemy import text as sa_text
from sqlmodel import Session, select

from app.auth.actor import Actor
from app.config import Settings, use_settings
from app.contacts import service as contacts
from app.models import ConsentEvent, Delivery, Preference, Suppression
from app.models.base import Channel, PreferenceStatus
from app.preferences.service import PreferenceChange, apply_changes
from app.recipients import service
from app.recipients.tokens import TokenKind, make_url_token
from tests.recipients.conftest import mails_to, path_of

ACTOR = Actor.recipient("198.51.100.7", "Mail provider one-click")


def _rows(session: Session, contact_id: int) -> dict[str, Any]:
    session.expire_all()
    contact = contacts.get(session, contact_id)
    events = session.exec(
        select(ConsentEvent).where(ConsentEvent.contact_id == contact_id, ConsentEvent.method == "one_click")
    ).all()
    prefs = session.exec(select(Preference).where(Preference.contact_id == contact_id)).all()
    supps = session.exec(select(Suppression).where(Suppression.address_hash == contact.email_hash)).all()
    by_event = {e.id: i for i, e in enumerate(events)}
    assert all(e.address_hash == contact.email_hash for e in events)
    return {
        "events": [
            e.model_dump(exclude={"id", "contact_id", "address_hash", "occurred_at"})
            | {"evidence": _evidence(e)}
            for e in events
        ],
        "preferences": sorted(
            (p.channel, p.topic or "", p.status, by_event.get(p.consent_event_id, "other")) for p in prefs
        ),
        "suppressions": sorted(
            (
                s.channel or "",
                s.kind,
                s.topic or "",
                s.reason,
                s.origin,
                s.method or "",
                s.address_hint or "",
                str(s.lifted_at),
                by_event.get(s.consent_event_id, "other"),
                s.created_by_user_id,
                s.created_by_token_id,
            )
            for s in supps
        ),
    }


def _evidence(event: ConsentEvent) -> dict[str, Any]:
    """Evidence without the ids that differ between the two people."""
    return {k: v for k, v in event.evidence.items() if k not in ("delivery_id",)} | {
        "has_delivery": "delivery_id" in event.evidence
    }


@pytest.mark.parametrize("scope", ["all_marketing", "topic"])
@pytest.mark.parametrize("before", ["opted_in", "no_preference", "topic_opted_out_before"])
def test_the_hot_path_writes_what_apply_changes_writes(
    scope: str,
    before: str,
    db: Settings,
    session: Session,
    make_contact: Callable[..., int],
    send_campaign: Callable[..., int],
) -> None:
    use_settings(db.model_copy(update={"one_click_scope": scope}))
    fast = make_contact("fast@example.com")
    general = make_contact("general@example.com")
    send_campaign()
    for cid in (fast, general):
        contact = contacts.get(session, cid)
        if before == "no_preference":
            for pref in session.exec(select(Preference).where(Preference.contact_id == cid)).all():
                session.delete(pref)
        elif before == "topic_opted_out_before":
            apply_changes(
                session,
                contact,
                [PreferenceChange(Channel.EMAIL, "special-offers", PreferenceStatus.OPTED_OUT)],
                method="one_click",
                actor=ACTOR,
            )
    session.commit()
    deliveries = {d.contact_id: d.id for d in session.exec(select(Delivery)).all()}

    with_hot_path = service.run(
        lambda s: service.write_one_clicks(s, [service.OneClick(fast, deliveries[fast], ACTOR)])
    )
    token = make_url_token(TokenKind.UNSUBSCRIBE, general, deliveries[general])
    with_general_path = service.run(lambda s: service.one_click(s, token, ACTOR))
    assert with_hot_path == [with_general_path]
    assert _rows(session, fast) == _rows(session, general)


def test_a_batch_sorts_out_every_kind_of_request(
    db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]
) -> None:
    a = make_contact("a@example.com")
    b = make_contact("b@example.com")
    erased = make_contact("erased@example.com")
    send_campaign()
    deliveries = {d.contact_id: d.id for d in session.exec(select(Delivery)).all()}
    contacts.erase(session, contacts.get(session, erased), Actor(kind="staff", role="admin"))
    session.commit()
    clicks = [
        service.OneClick(a, deliveries[a], ACTOR),
        service.OneClick(a, deliveries[a], ACTOR),  # the same click twice
        service.OneClick(a, deliveries[b], ACTOR),  # someone else's delivery
        service.OneClick(987_654, None, ACTOR),  # nobody
        service.OneClick(2**40, None, ACTOR),  # out of range
        service.OneClick(erased, deliveries[erased], ACTOR),
        service.OneClick(b, None, ACTOR),  # no delivery named: still the person
    ]
    results = service.run(lambda s: service.write_one_clicks(s, clicks))
    assert results[0] is True and results[1] is False
    assert all(isinstance(r, service.LinkProblem) and r.kind == "invalid" for r in results[2:5])
    assert results[5] is False and results[6] is True
    session.expire_all()
    assert len(session.exec(select(Suppression).where(Suppression.reason == "one_click")).all()) == 2
    again = service.run(lambda s: service.write_one_clicks(s, clicks[:1]))
    assert again == [False]


def test_concurrent_clicks_on_one_link_make_one_opt_out(
    app, db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]
) -> None:
    cid = make_contact("eager@example.com")
    send_campaign()
    [mail] = mails_to(db, "eager@example.com")
    url = path_of(mail.list_unsubscribe()[0])
    statuses: list[int] = []

    def click() -> None:
        with TestClient(app, base_url="https://lists.example.test") as bare:
            statuses.append(bare.post(url, data={"List-Unsubscribe": "One-Click"}).status_code)

    threads = [threading.Thread(target=click) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 8
    session.expire_all()
    assert len(session.exec(select(Suppression).where(Suppression.reason == "one_click")).all()) == 1
    events = session.exec(select(ConsentEvent).where(ConsentEvent.method == "one_click")).all()
    assert [e.contact_id for e in events] == [cid]


def test_the_answer_waits_for_the_persons_message_in_flight(
    app, db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]
) -> None:
    use_settings(db.model_copy(update={"optout_settle_seconds": 10.0}))
    cid = make_contact("inflight@example.com")
    send_campaign()
    [mail] = mails_to(db, "inflight@example.com")
    delivery = session.exec(select(Delivery).where(Delivery.contact_id == cid)).one()
    delivery.status = "claimed"  # a worker is sending to them right now
    session.add(delivery)
    session.commit()

    r, waited = _one_click_while_sending(app, session, delivery.id, mail)
    assert r.status_code == 200
    assert waited >= 0.5, waited  # not before the message in flight had gone
    assert waited < 5, waited


def test_a_claim_in_progress_holds_back_the_answer_until_its_message_has_gone(
    app, db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]
) -> None:
    """A claim transaction that took the person and has not committed yet when they click
    (on PostgreSQL it holds every stripe of the claim lock; on SQLite the write lock): the
    answer waits for the claim, then for the message it claimed."""
    from app.delivery import repository as ledger

    use_settings(db.model_copy(update={"optout_settle_seconds": 10.0}))
    cid = make_contact("claimed@example.com")
    send_campaign()
    [mail] = mails_to(db, "claimed@example.com")
    delivery = session.exec(select(Delivery).where(Delivery.contact_id == cid)).one()
    delivery.status = "pending"
    session.add(delivery)
    session.commit()
    claiming = Session(session.get_bind())
    ledger.hold_claim_lock(claiming)
    claim = claiming.get(Delivery, delivery.id)
    assert claim is not None
    claim.status = "claimed"
    claiming.add(claim)
    claiming.flush()  # the claim statement ran; its transaction has not committed yet

    def claim_then_send() -> None:
        time.sleep(0.4)
        claiming.commit()
        claiming.close()
        time.sleep(0.4)
        with Session(session.get_bind()) as other:
            row = other.get(Delivery, delivery.id)
            assert row is not None and row.status == "claimed"
            row.status = "sent"
            other.add(row)
            other.commit()

    sender = threading.Thread(target=claim_then_send)
    started = time.monotonic()
    sender.start()
    with TestClient(app, base_url="https://lists.example.test") as bare:
        r = bare.post(path_of(mail.list_unsubscribe()[0]), data={"List-Unsubscribe": "One-Click"})
    waited = time.monotonic() - started
    sender.join()
    assert r.status_code == 200
    assert waited >= 0.8, waited  # the claim, then its message
    assert waited < 6, waited


def test_every_stripe_of_the_claim_lock_waits_for_a_claim_in_progress(db: Settings, session: Session) -> None:
    """PostgreSQL: one-click writers take different stripes of the claim lock, so that they
    do not wait for one another; each stripe still waits for every claim in progress."""
    from app.delivery import repository as ledger

    if session.get_bind().dialect.name != "postgresql":
        assert service.in_flight_after_commit([1], stripe=3) == set()
        return
    claiming = Session(session.get_bind())
    ledger.hold_claim_lock(claiming)
    done: dict[int, float] = {}

    def look(stripe: int) -> None:
        service.in_flight_after_commit([1], stripe=stripe, settings=db)
        done[stripe] = time.monotonic()

    lookers = [threading.Thread(target=look, args=(s,)) for s in range(ledger.CLAIM_LOCK_STRIPES)]
    for t in lookers:
        t.start()
    time.sleep(0.4)
    assert done == {}  # all held back by the claim
    released = time.monotonic()
    claiming.commit()
    claiming.close()
    for t in lookers:
        t.join(10)
    assert sorted(done) == list(range(ledger.CLAIM_LOCK_STRIPES))
    assert all(at >= released for at in done.values())


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)  # stripes are a PostgreSQL matter
def test_writers_on_different_stripes_do_not_wait_for_one_another(db: Settings, session: Session) -> None:
    from app.delivery import repository as ledger

    assert session.get_bind().dialect.name == "postgresql"
    holding = Session(session.get_bind())
    holding.execute(select(sa_func.pg_advisory_xact_lock(ledger.claim_lock_key(0))))
    try:
        started = time.monotonic()
        service.in_flight_after_commit([1], stripe=1, settings=db)
        assert time.monotonic() - started < 2
    finally:
        holding.rollback()
        holding.close()


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)  # one round trip: PostgreSQL
def test_commit_and_look_commits_then_waits_for_the_claim_in_progress_and_sees_what_it_took(
    db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]
) -> None:
    """The opt-out commits first (a claim that starts later sees it); the look waits for a
    claim that was running (its claimed row is then visible, so the answer waits for the
    message); and the lock is released with the statement (no claim waits for the answer)."""
    from app.delivery import repository as ledger

    cid = make_contact("committed@example.com")
    send_campaign()
    delivery = session.exec(select(Delivery).where(Delivery.contact_id == cid)).one()
    delivery.status = "pending"
    session.add(delivery)
    session.commit()
    claiming = Session(session.get_bind())
    ledger.hold_claim_lock(claiming)
    claim = claiming.get(Delivery, delivery.id)
    assert claim is not None
    claim.status = "claimed"
    claiming.add(claim)
    claiming.flush()  # the claim statement ran; its transaction has not committed yet

    looked: dict[str, Any] = {}

    def opt_out() -> None:
        with Session(session.get_bind()) as writing:
            results = service.write_one_clicks(writing, [service.OneClick(cid, delivery.id, ACTOR)])
            looked["results"] = results
            looked["busy"] = service.commit_and_look(writing, [cid], stripe=2)
            looked["at"] = time.monotonic()
            writing.commit()  # nothing left to commit: the transaction is over

    writer = threading.Thread(target=opt_out)
    writer.start()
    time.sleep(0.5)
    assert "busy" not in looked  # held back by the claim in progress
    with Session(session.get_bind()) as other:  # ... but the opt-out has committed already
        assert other.exec(select(Suppression).where(Suppression.reason == "one_click")).all()
    released = time.monotonic()
    claiming.commit()
    claiming.close()
    writer.join(10)
    assert looked["results"] == [True]
    assert looked["busy"] == {cid}  # the claim's row is seen: the answer waits for the message
    assert looked["at"] >= released
    with Session(session.get_bind()) as other:  # no advisory lock is left held
        held = other.execute(
            sa_text(  # in this test's database (other databases on the server are not ours)
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).scalar_one()
        assert held == 0
    assert service.commit_and_look(session, [cid]) == {cid}  # and with nothing to commit


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)  # SQLite's write lock
def test_the_one_click_writer_takes_sqlites_write_lock_as_soon_as_it_is_free(
    db: Settings, session: Session
) -> None:
    """``begin_immediate`` waits for another connection's write transaction (the sending
    process's claim) and takes the lock within a few milliseconds of its end, where
    SQLite's busy handler would sleep for 25 ms at a time by then."""
    import sqlite3

    from app.db import begin_immediate, get_engine

    path = get_engine(db).url.database
    assert path
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    got: dict[str, float] = {}

    def write() -> None:
        with Session(get_engine(db)) as writing:
            begin_immediate(writing)
            got["at"] = time.monotonic()
            writing.rollback()

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.24)  # the busy handler would be sleeping from 0.228 s to 0.328 s by now
    assert "at" not in got  # waiting for the other writer
    released = time.monotonic()
    other.execute("COMMIT")
    other.close()
    writer.join(10)
    assert released <= got["at"] < released + 0.05, got["at"] - released
    with Session(get_engine(db)) as again:  # the busy handler is back for everyone else
        raw = again.connection().connection.driver_connection
        assert raw is not None
        assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == 30000


def test_a_second_click_waits_for_the_message_in_flight_too(
    app, db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]
) -> None:
    """The person clicked once (opted out: committed, its answer waiting for the message in
    flight) and clicks again: the second answer, "opted out already", waits as well."""
    use_settings(db.model_copy(update={"optout_settle_seconds": 10.0}))
    cid = make_contact("twice@example.com")
    send_campaign()
    [mail] = mails_to(db, "twice@example.com")
    delivery = session.exec(select(Delivery).where(Delivery.contact_id == cid)).one()
    assert service.run(
        lambda s: service.write_one_clicks(s, [service.OneClick(cid, delivery.id, ACTOR)])
    ) == [True]
    delivery.status = "claimed"  # claimed before that first click; being sent right now
    session.add(delivery)
    session.commit()

    r, waited = _one_click_while_sending(app, session, delivery.id, mail)
    assert r.status_code == 200
    assert waited >= 0.5, waited  # not before the message in flight had gone
    assert waited < 5, waited


def _one_click_while_sending(app: Any, session: Session, delivery_id: Any, mail: Any) -> tuple[Any, float]:
    """POST the message's one-click while another thread finishes sending it (marks the
    delivery ``sent``) half a second later; the answer and how long it took."""

    def finish_sending() -> None:
        time.sleep(0.5)
        with Session(session.get_bind()) as other:
            row = other.get(Delivery, delivery_id)
            assert row is not None
            row.status = "sent"
            other.add(row)
            other.commit()

    finisher = threading.Thread(target=finish_sending)
    started = time.monotonic()
    finisher.start()
    with TestClient(app, base_url="https://lists.example.test") as bare:
        r = bare.post(path_of(mail.list_unsubscribe()[0]), data={"List-Unsubscribe": "One-Click"})
    waited = time.monotonic() - started
    finisher.join()
    return r, waited
