"""What a recipient can do from a link: unsubscribe (RFC 8058 one-click or the page), manage
their preferences, confirm an opt-in, ask for their data or its erasure, and ask for an
unsubscribe link by email address.

Rules:
- a link is a signed token (``app.recipients.tokens``): an altered, truncated, foreign or
  wrong-kind token, or one whose delivery belongs to someone else, is refused
  (:class:`LinkProblem`); tokens from messages never expire;
- every opt-out goes through ``app.preferences.service.apply_changes``: a consent event
  (method ``one_click``, ``link`` or ``preference_centre``; IP, user agent, the delivery)
  and the suppression the gate reads, and, after the commit, the wait for the person's
  in-flight sends (DESIGN invariant 2) — so the answer is given only after all that. The
  one exception is the hot path of RFC 8058 one-click (:func:`write_one_clicks`, driven by
  ``app.recipients.oneclick``), which writes the same rows for many people at once; a test
  holds the two paths to the same result;
- an opt-out is immediate; turning something back on that the person turned off needs a
  confirmation mail (double opt-in), and the confirmed opt-in is fresh consent
  (``confirmed_by_person=True``). Hard bounces, complaints, erasure and the like cannot be
  lifted here, nor an opt-out that covers every channel (staff lift those);
- nothing here changes state on GET: functions that change state are only called from POSTs;
- "unsubscribe by email address" answers the same whether or not the address is known,
  is rate-limited per client IP and per address, and mails a link that expires and works once;
- the mail sent from here is service mail: the gate is asked with purpose ``service`` first;
- the public forms (``app.forms``) use the same double opt-in (:func:`ask_for_confirmation`,
  :func:`confirm_opt_in`, the same tokens and pages); a form's confirmation never lifts
  an opt-out.

Services never commit: :func:`run` is the unit of work the endpoints use (it commits before
the answer and retries a request that lost a race with a concurrent one)."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from app.auth.actor import Actor
from app.compliance.service import open_request
from app.config import TEMPLATES_DIR, Settings, get_settings
from app.contacts.identifiers import mask_email, normalise_email
from app.db import get_engine, run_after_commit, session_scope
from app.delivery import repository as ledger
from app.delivery.message import OutgoingMessage, ascii_address, format_address
from app.delivery.transport import Envelope, get_transport
from app.errors import ValidationProblem
from app.models import (
    Campaign,
    ConsentEvent,
    Contact,
    DataRequest,
    Delivery,
    Preference,
    Suppression,
    Topic,
    utcnow,
)
from app.models.base import Channel, PreferenceStatus, Purpose
from app.preferences.service import (
    PreferenceChange,
    apply_changes,
    list_preferences,
    record_consent,
)
from app.recipients.ratelimit import LIMITER
from app.recipients.tokens import (
    BadToken,
    TokenKind,
    make_address_token,
    make_confirm_token,
    make_emailed_link_token,
    make_url_token,
    read_confirm_token,
    read_emailed_link_token,
    read_url_token,
)
from app.suppression import gate
from app.suppression import repository as suppressions
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.suppression.policy import BLOCKING_REASONS, OPT_OUT_REASONS, Origin, Reason
from app.topics.service import list_topics

log = logging.getLogger("listwarden.recipients")

T = TypeVar("T")
OUT = PreferenceStatus.OPTED_OUT
IN = PreferenceStatus.OPTED_IN
#: Status of the consent event that records an opt-in waiting for its confirmation mail.
REQUESTED = "requested"
#: Outbox / transport keys of service mail, far from delivery ids.
_SERVICE_KEY_BASE = 1 << 60


# --------------------------------------------------------------------------- unit of work
#: SQLite has one writer at a time, and a writer that finds it busy sleeps in growing
#: steps (1, 2, 5, 10, … ms): under a burst of one-clicks that makes the slow tail. Recipient
#: writes of this process queue here instead; other writers still meet SQLite's own lock.
_SQLITE_WRITES = threading.Lock()


def run(work: Callable[[Session], T], *, attempts: int = 3) -> T:
    """Run ``work`` in one unit of work: committed, and the opt-out settled (the wait for
    the person's in-flight sends), before this returns. A unit that lost a race (two
    clicks on the same link at once: a unique preference row, a lock) is run again from
    the start, on fresh data."""
    settings = get_settings()
    for attempt in range(1, attempts + 1):
        session = Session(get_engine(settings), expire_on_commit=False)
        try:
            with sqlite_writes(settings):
                result = work(session)
                session.commit()
        except (IntegrityError, OperationalError) as exc:
            _discard(session)
            if attempt == attempts:
                raise
            log.info("recipient request retried after %s", type(exc).__name__)
            time.sleep(0.01 * attempt)
            continue
        except BaseException:
            _discard(session)
            raise
        session.close()
        run_after_commit(session)  # outside the lock: the settle wait may take a while
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def sqlite_writes(settings: Settings) -> AbstractContextManager[object]:
    """Hold this around a recipient write transaction (see ``_SQLITE_WRITES``)."""
    return _SQLITE_WRITES if settings.is_sqlite else nullcontext()


def read(work: Callable[[Session], T]) -> T:
    """Run ``work`` that only reads (the pages shown on GET)."""
    with session_scope() as session:
        return work(session)


def _discard(session: Session) -> None:
    session.rollback()
    session.info.pop("after_commit", None)
    session.info.pop("settle_contacts", None)
    session.close()


# --------------------------------------------------------------------------- links
class LinkProblem(Exception):
    """A link that cannot be used. ``kind``: invalid | expired | used | erased."""

    def __init__(self, kind: Literal["invalid", "expired", "used", "erased"], detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind


@dataclass(frozen=True)
class Recipient:
    """The person a link speaks for, and the message it came from (when known)."""

    contact: Contact
    delivery_id: int | None = None
    campaign_id: int | None = None
    topic: str | None = None
    topic_name: str | None = None
    #: Set for a link mailed by the "unsubscribe by email address" form (Unix time).
    link_issued_at: int | None = None

    @property
    def contact_id(self) -> int:
        assert self.contact.id is not None
        return self.contact.id

    @property
    def erased(self) -> bool:
        return self.contact.erased_at is not None

    @property
    def email_hint(self) -> str | None:
        if not self.contact.email:
            return None
        return mask_email(normalise_email(self.contact.email).key)

    def evidence(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.delivery_id is not None:
            found["delivery_id"] = self.delivery_id
        if self.campaign_id is not None:
            found["campaign_id"] = self.campaign_id
        if self.link_issued_at is not None:
            found["link"] = "unsubscribe_by_email"
            found["link_issued_at"] = self.link_issued_at
        return found

    def preferences_url(self) -> str:
        token = make_url_token(TokenKind.PREFERENCES, self.contact_id, self.delivery_id)
        return f"{public_url()}/preferences/{token}"


def public_url() -> str:
    return get_settings().public_url.rstrip("/")


_contact = Contact.__table__  # type: ignore[attr-defined]
_delivery = Delivery.__table__  # type: ignore[attr-defined]
_campaign = Campaign.__table__  # type: ignore[attr-defined]
_topic = Topic.__table__  # type: ignore[attr-defined]
_preference = Preference.__table__  # type: ignore[attr-defined]
_event = ConsentEvent.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database


def _load(session: Session, contact_id: int, delivery_id: int | None) -> Recipient:
    if contact_id > _MAX_ID or (delivery_id or 0) > _MAX_ID:
        raise LinkProblem("invalid", "id out of range")
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise LinkProblem("invalid", "no such contact")
    if delivery_id is None:
        return Recipient(contact)
    row = session.execute(
        sa.select(_delivery.c.contact_id, _campaign.c.id, _campaign.c.topic, _topic.c.name, _topic.c.active)
        .select_from(
            _delivery.join(_campaign, _campaign.c.id == _delivery.c.campaign_id).outerjoin(
                _topic, _topic.c.slug == _campaign.c.topic
            )
        )
        .where(_delivery.c.id == delivery_id)
    ).first()
    if row is None:  # the campaign was deleted since: the link still speaks for the person
        return Recipient(contact, delivery_id=delivery_id)
    owner, campaign_id, topic, topic_name, topic_active = row
    if owner != contact_id:
        raise LinkProblem("invalid", "the delivery belongs to someone else")
    if not topic_active:  # a retired topic is not offered: "all marketing email" covers it
        topic = topic_name = None
    return Recipient(contact, delivery_id, campaign_id, topic, topic_name or topic)


def resolve_unsubscribe(session: Session, token: str) -> Recipient:
    """The recipient of an unsubscribe link: from a message (``UNSUBSCRIBE``, never
    expires) or mailed by the "unsubscribe by email address" form (expires, works once)."""
    try:
        payload = read_url_token(token, TokenKind.UNSUBSCRIBE)
    except BadToken:
        pass
    else:
        return _load(session, payload.contact_id, payload.delivery_id)
    try:
        contact_id, issued_at = read_emailed_link_token(token)
    except BadToken as exc:
        raise LinkProblem("invalid", str(exc)) from exc
    now = time.time()
    if issued_at > now + 300:
        raise LinkProblem("invalid", "issued in the future")
    if now - issued_at > get_settings().unsubscribe_link_hours * 3600:
        raise LinkProblem("expired")
    if emailed_link_used(session, contact_id, issued_at):
        raise LinkProblem("used")
    return replace(_load(session, contact_id, None), link_issued_at=issued_at)


def resolve_preferences(session: Session, token: str) -> Recipient:
    try:
        payload = read_url_token(token, TokenKind.PREFERENCES)
    except BadToken as exc:
        raise LinkProblem("invalid", str(exc)) from exc
    recipient = _load(session, payload.contact_id, payload.delivery_id)
    if recipient.erased:
        raise LinkProblem("erased")
    return recipient


def emailed_link_used(session: Session, contact_id: int, issued_at: int) -> bool:
    """A mailed link works once: it is spent when an opt-out was made through it."""
    since = datetime.fromtimestamp(issued_at, UTC) - timedelta(seconds=1)
    events = session.exec(
        select(ConsentEvent).where(
            ConsentEvent.contact_id == contact_id,
            col(ConsentEvent.occurred_at) >= since,
            col(ConsentEvent.method).in_(["link", "one_click"]),
        )
    )
    return any((e.evidence or {}).get("link_issued_at") == issued_at for e in events)


# --------------------------------------------------------------------------- unsubscribe
class Scope(StrEnum):
    TOPIC = "topic"
    MARKETING = "marketing"
    EVERYTHING = "everything"


@dataclass(frozen=True)
class Choice:
    scope: Scope
    label: str
    hint: str


@dataclass(frozen=True)
class OptOutResult:
    recipient: Recipient
    scope: Scope
    #: Says plainly what the person will no longer get.
    statement: str
    changed: bool


def choices(recipient: Recipient) -> list[Choice]:
    sender = get_settings().sender_name
    found = []
    if recipient.topic:
        found.append(
            Choice(
                Scope.TOPIC,
                f"Only emails about “{recipient.topic_name}”",
                "You keep getting our emails about other topics.",
            )
        )
    found.append(
        Choice(
            Scope.MARKETING,
            f"All marketing email from {sender}",
            "No newsletters or offers by email, whatever the topic.",
        )
    )
    found.append(
        Choice(
            Scope.EVERYTHING,
            "All marketing by email, post and phone",
            "No newsletters, offers, letters or calls.",
        )
    )
    return found


def statement(scope: Scope, recipient: Recipient) -> str:
    sender = get_settings().sender_name
    if scope is Scope.TOPIC:
        return f"You will no longer get emails about “{recipient.topic_name}” from {sender}."
    if scope is Scope.MARKETING:
        return f"You will no longer get marketing email from {sender}."
    return f"You will no longer get marketing from {sender} by email, post or phone."


def _scope_changes(scope: Scope, topic: str | None) -> list[PreferenceChange]:
    if scope is Scope.TOPIC and topic:
        return [PreferenceChange(Channel.EMAIL, topic, OUT)]
    if scope is Scope.EVERYTHING:
        return [PreferenceChange(channel, None, OUT) for channel in Channel]
    return [PreferenceChange(Channel.EMAIL, None, OUT)]


def parse_scope(raw: str | None, recipient: Recipient) -> Scope | None:
    try:
        scope = Scope(raw or "")
    except ValueError:
        return None
    if scope is Scope.TOPIC and not recipient.topic:
        return None
    return scope


def unsubscribe(
    session: Session, recipient: Recipient, scope: Scope, actor: Actor, *, method: str, text_shown: str
) -> OptOutResult:
    """Opt the person out as chosen. Erased people are suppressed already."""
    if scope is Scope.TOPIC and not recipient.topic:
        scope = Scope.MARKETING
    said = statement(scope, recipient)
    if recipient.erased:
        return OptOutResult(recipient, scope, said, changed=False)
    outcome = apply_changes(
        session,
        recipient.contact,
        _scope_changes(scope, recipient.topic),
        method=method,
        actor=actor,
        text_shown=text_shown,
        evidence={**recipient.evidence(), "scope": scope.value},
    )
    return OptOutResult(recipient, scope, said, changed=bool(outcome.applied))


def one_click(session: Session, token: str, actor: Actor) -> bool:
    """RFC 8058: the body said ``List-Unsubscribe=One-Click``. Its scope is the setting
    ``one_click_scope`` (all marketing email, or the campaign's topic). True when it
    changed something (False: the person was opted out already).

    This is the general path, through ``apply_changes``. The web endpoint sends the
    common case (a link from a message to a person with an email address) through
    :func:`write_one_clicks` instead, many at a time (``app.recipients.oneclick``)."""
    recipient = resolve_unsubscribe(session, token)
    topical = get_settings().one_click_scope == "topic" and recipient.topic is not None
    scope = Scope.TOPIC if topical else Scope.MARKETING
    emailed = recipient.link_issued_at is not None
    return unsubscribe(
        session,
        recipient,
        scope,
        actor,
        method="link" if emailed else "one_click",
        text_shown=ONE_CLICK_TEXT + statement(scope, recipient),
    ).changed


ONE_CLICK_TEXT = "List-Unsubscribe=One-Click (RFC 8058) from the mail program: "


@dataclass(frozen=True)
class OneClick:
    """A one-click POST whose token named this contact and delivery (already verified)."""

    contact_id: int
    delivery_id: int | None
    actor: Actor


#: True: opted out now; False: opted out already; LinkProblem: refused; None: not the
#: common case, take :func:`one_click`.
OneClickResult = bool | LinkProblem | None


def write_one_clicks(session: Session, clicks: Sequence[OneClick]) -> list[OneClickResult]:
    """Many one-click opt-outs in one unit of work, in five statements (compiled once)
    whatever their number: for each, exactly the rows ``apply_changes(..., method="one_click")`` writes
    for one opt-out on the email channel (a consent event; the preference; a suppression
    of the email address's hash, unless the same one is active). A test checks that both
    paths write the same.

    The caller acknowledges an opt-out (True) only after it has committed and nothing is
    in flight for the person any more (``app.delivery.service.settle``, DESIGN invariant
    2), as ``apply_changes`` arranges with ``settle_after_commit``;
    ``app.recipients.oneclick`` does so for each batch."""
    results: list[OneClickResult] = [None] * len(clicks)
    settings = get_settings()
    topical = settings.one_click_scope == "topic"
    conn = session.connection()  # Core, statements built once, few rows: this is the hot path
    usable = [c for c in clicks if c.contact_id <= _MAX_ID and (c.delivery_id or 0) <= _MAX_ID]
    by_delivery: dict[int, Any] = {}
    delivery_ids = sorted({c.delivery_id for c in usable if c.delivery_id})
    if delivery_ids:
        by_delivery = {row.delivery_id: row for row in conn.execute(_CLICK_TARGETS, {"ids": delivery_ids})}
    by_contact: dict[int, Any] = {}
    bare_ids = sorted({c.contact_id for c in usable if not c.delivery_id or c.delivery_id not in by_delivery})
    if bare_ids:
        by_contact = {row.contact_id: row for row in conn.execute(_CLICK_CONTACTS, {"ids": bare_ids})}

    todo: dict[tuple[int, str | None], _Pending] = {}
    for index, click in enumerate(clicks):
        target = by_delivery.get(click.delivery_id) if click.delivery_id else None
        if target is not None and target.contact_id != click.contact_id:
            results[index] = LinkProblem("invalid", "the delivery belongs to someone else")
            continue
        if target is None:  # no delivery named, or its campaign was deleted since
            target = by_contact.get(click.contact_id)
        if target is None:
            results[index] = LinkProblem("invalid", "no such contact")
            continue
        if target.erased_at is not None:
            results[index] = False  # erasure left a suppression of every channel
            continue
        if not target.email_hash:
            continue  # None: the general path
        topic = target.topic if topical and target.topic and target.topic_active else None
        if topic is None:
            known = (target.all_id, target.all_status, target.all_suppressed)
        else:
            known = (target.topic_id, target.topic_status, target.topic_suppressed)
        preference_id, previous, suppressed = known
        if previous == OUT.value or (click.contact_id, topic) in todo:
            results[index] = False  # apply_changes: unchanged (or the same click twice here)
            continue
        evidence: dict[str, Any] = {}
        if click.delivery_id is not None:
            evidence["delivery_id"] = click.delivery_id
        if target.campaign_id is not None:
            evidence["campaign_id"] = target.campaign_id
        evidence["scope"] = (Scope.TOPIC if topic else Scope.MARKETING).value
        said = (
            f"You will no longer get emails about “{target.topic_name or topic}” from {settings.sender_name}."
            if topic
            else f"You will no longer get marketing email from {settings.sender_name}."
        )
        todo[(click.contact_id, topic)] = _Pending(
            index=index,
            click=click,
            address_hash=target.email_hash,
            topic=topic,
            evidence=evidence,
            text_shown=ONE_CLICK_TEXT + said,
            preference_id=preference_id,
            previous=previous,
            suppressed=bool(suppressed),
        )
    if not todo:
        return results

    now = utcnow()
    events = conn.execute(
        _CLICK_EVENTS,
        [
            {
                "contact_id": item.click.contact_id,
                "address_hash": item.address_hash,
                "channel": Channel.EMAIL.value,
                "topic": item.topic,
                "status": OUT.value,
                "previous_status": item.previous,
                "method": "one_click",
                "actor": item.click.actor.kind,
                "actor_user_id": item.click.actor.user_id,
                "actor_token_id": item.click.actor.token_id,
                "text_shown": item.text_shown,
                "text_version": None,
                "ip": item.click.actor.ip,
                "user_agent": item.click.actor.user_agent,
                "evidence": item.evidence,
                "occurred_at": now,
            }
            for item in todo.values()
        ],
    )
    for event_id, contact_id, topic in events:  # one statement, rows in any order
        todo[(contact_id, topic)].event_id = event_id
    items = list(todo.values())
    new_preferences = [
        {
            "contact_id": item.click.contact_id,
            "channel": Channel.EMAIL.value,
            "topic": item.topic,
            "status": OUT.value,
            "updated_at": now,
            "consent_event_id": item.event_id,
        }
        for item in items
        if item.preference_id is None
    ]
    if new_preferences:
        conn.execute(_preference.insert(), new_preferences)
    changed = [
        {"preference_id": item.preference_id, "now": now, "event_id": item.event_id}
        for item in items
        if item.preference_id is not None
    ]
    if changed:
        conn.execute(_CLICK_PREFERENCE_UPDATE, changed)
    new_suppressions = [
        {
            "channel": Channel.EMAIL.value,
            "kind": IdentifierKind.EMAIL.value,
            "address_hash": item.address_hash,
            "address_hint": None,
            "topic": item.topic,
            "reason": Reason.ONE_CLICK.value,
            "origin": Origin.RECIPIENT.value,
            "method": "one_click",
            "note": None,
            "consent_event_id": item.event_id,
            "created_by_user_id": item.click.actor.user_id,
            "created_by_token_id": item.click.actor.token_id,
            "created_at": now,
        }
        for item in items
        if not item.suppressed  # add_hashed: not when the same suppression is active
    ]
    if new_suppressions:
        conn.execute(_suppression.insert(), new_suppressions)
    for item in items:
        results[item.index] = True
    return results


def in_flight_after_opt_out(session: Session, contact_ids: Sequence[int], *, stripe: int = 0) -> set[int]:
    """In the transaction that wrote these people's opt-outs, after the writes: who has
    a delivery claimed (being sent) that began before the opt-out and must be waited for.

    The protocol of ``app.delivery.service.settle``, inside the transaction: no claim that
    begins after this one can take these people any more. On PostgreSQL, claim statements
    hold the claim lock shared (every stripe of it); taking one ``stripe`` exclusively here
    waits for those running now (so their ``claimed`` rows are visible below) and holds off
    new ones until the commit, after which they see the suppressions; transactions on other
    stripes (other writer threads) go on meanwhile. On SQLite, writers take turns: a claim either
    committed before this transaction wrote (and is visible below) or runs after its
    commit."""
    if not contact_ids:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(ledger.claim_lock_key(stripe))))
    return in_flight(session, contact_ids)


def in_flight_after_commit(
    contact_ids: Sequence[int], *, stripe: int = 0, settings: Settings | None = None
) -> set[int]:
    """Once these people's opt-outs have committed: who has a delivery claimed that began
    before them and must be waited for. The protocol of ``app.delivery.service.settle``:
    on PostgreSQL, taking a stripe of the claim lock exclusively waits for the claims
    running now (a claim that began later sees the opt-outs) and releases it at once, so
    that claims wait for an instant and not for this transaction's commit; their
    ``claimed`` rows are then visible. (On SQLite :func:`in_flight_after_opt_out`, in the
    writing transaction, is as exact and costs nothing.)"""
    if not contact_ids:
        return set()
    with session_scope(settings) as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(ledger.claim_lock_key(stripe))))
            session.commit()  # released: nothing written, so no wait for the disk either
        return in_flight(session, contact_ids)


def commit_and_look(session: Session, contact_ids: Sequence[int], *, stripe: int = 0) -> set[int]:
    """PostgreSQL: commit the transaction that wrote these people's opt-outs, then look
    who has a delivery claimed that began before them, in one round trip: the protocol of
    :func:`in_flight_after_commit` (commit; take a ``stripe`` of the claim lock exclusively,
    which waits for the claims running now and lets no new one start; look; release), sent
    as one simple-protocol query of three statements. In READ COMMITTED each statement
    takes its own snapshot, so the look sees every claim the lock waited for; the lock
    lives in the implicit transaction of the last two statements and is released with it.

    Raises when the commit or the look failed: the opt-outs may or may not have committed,
    and they are not known to be settled (no 200). The session's transaction is over
    either way (its own commit then changes nothing)."""
    key = int(ledger.claim_lock_key(stripe))
    ids = ",".join(str(int(i)) for i in sorted(set(contact_ids)))
    look = f"SELECT DISTINCT contact_id FROM delivery WHERE status = 'claimed' AND contact_id IN ({ids})"  # noqa: S608 (integers)
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        # No parameters: psycopg sends it with the simple query protocol, all at once.
        cursor.execute(f"COMMIT; SELECT pg_advisory_xact_lock({key}); {look}" if ids else "COMMIT")
        while cursor.nextset():
            pass
        rows = cursor.fetchall() if ids else []
    return {int(contact_id) for (contact_id,) in rows}


def in_flight(session: Session, contact_ids: Sequence[int]) -> set[int]:
    """Which of these people have a delivery claimed right now (being sent)."""
    if not contact_ids:
        return set()
    rows = session.execute(_CLAIMED, {"ids": sorted(set(contact_ids))})
    return {int(contact_id) for (contact_id,) in rows}


@dataclass
class _Pending:
    """One opt-out of a batch of one-clicks, as it is being written."""

    index: int
    click: OneClick
    address_hash: str
    topic: str | None
    evidence: dict[str, Any]
    text_shown: str
    preference_id: int | None
    previous: str | None
    suppressed: bool = False
    event_id: int | None = None


def _click_preference(alias: str, topic: Any) -> Any:
    table = _preference.alias(alias)
    condition = sa.and_(
        table.c.contact_id == _contact.c.id,
        table.c.channel == Channel.EMAIL.value,
        table.c.topic.is_(None) if topic is None else table.c.topic == topic,
    )
    return table, condition


def _click_suppressed(topic: Any) -> Any:
    """Whether the one-click suppression of that scope is active already (``add_hashed``)."""
    return (
        sa.select(sa.literal(1))
        .where(
            _suppression.c.address_hash == _contact.c.email_hash,
            _suppression.c.lifted_at.is_(None),
            _suppression.c.reason == Reason.ONE_CLICK.value,
            _suppression.c.channel == Channel.EMAIL.value,
            _suppression.c.topic.is_(None) if topic is None else _suppression.c.topic == topic,
        )
        .exists()
    )


_all_pref, _all_pref_on = _click_preference("pref_all", None)
_topic_pref, _topic_pref_on = _click_preference("pref_topic", _campaign.c.topic)
#: Everything a batch needs about the people named by these deliveries, a row each.
_CLICK_TARGETS = (
    sa.select(
        _delivery.c.id.label("delivery_id"),
        _delivery.c.contact_id,
        _delivery.c.campaign_id,
        _contact.c.email_hash,
        _contact.c.erased_at,
        _campaign.c.topic,
        _topic.c.name.label("topic_name"),
        _topic.c.active.label("topic_active"),
        _all_pref.c.id.label("all_id"),
        _all_pref.c.status.label("all_status"),
        _click_suppressed(None).label("all_suppressed"),
        _topic_pref.c.id.label("topic_id"),
        _topic_pref.c.status.label("topic_status"),
        _click_suppressed(_campaign.c.topic).label("topic_suppressed"),
    )
    .select_from(
        _delivery.join(_contact, _contact.c.id == _delivery.c.contact_id)
        .join(_campaign, _campaign.c.id == _delivery.c.campaign_id)
        .outerjoin(_topic, _topic.c.slug == _campaign.c.topic)
        .outerjoin(_all_pref, _all_pref_on)
        .outerjoin(_topic_pref, _topic_pref_on)
    )
    .where(_delivery.c.id.in_(sa.bindparam("ids", expanding=True)))
)
#: The same for people named without a (still existing) delivery: no campaign, no topic.
_CLICK_CONTACTS = (
    sa.select(
        _contact.c.id.label("contact_id"),
        sa.null().label("campaign_id"),
        _contact.c.email_hash,
        _contact.c.erased_at,
        sa.null().label("topic"),
        sa.null().label("topic_name"),
        sa.null().label("topic_active"),
        _all_pref.c.id.label("all_id"),
        _all_pref.c.status.label("all_status"),
        _click_suppressed(None).label("all_suppressed"),
        sa.null().label("topic_id"),
        sa.null().label("topic_status"),
        sa.false().label("topic_suppressed"),
    )
    .select_from(_contact.outerjoin(_all_pref, _all_pref_on))
    .where(_contact.c.id.in_(sa.bindparam("ids", expanding=True)))
)
_CLICK_EVENTS = _event.insert().returning(_event.c.id, _event.c.contact_id, _event.c.topic)
_CLICK_PREFERENCE_UPDATE = (
    _preference.update()
    .where(_preference.c.id == sa.bindparam("preference_id"))
    .values(status=OUT.value, updated_at=sa.bindparam("now"), consent_event_id=sa.bindparam("event_id"))
)
_CLAIMED = (
    sa.select(_delivery.c.contact_id)
    .where(_delivery.c.contact_id.in_(sa.bindparam("ids", expanding=True)), _delivery.c.status == "claimed")
    .distinct()
)


def unsubscribe_from_page(session: Session, token: str, scope: Scope, actor: Actor) -> OptOutResult:
    recipient = resolve_unsubscribe(session, token)
    label = next((c.label for c in choices(recipient) if c.scope is scope), scope.value)
    return unsubscribe(
        session, recipient, scope, actor, method="link", text_shown=f"Unsubscribe page: {label}"
    )


@dataclass(frozen=True)
class UnsubscribePage:
    recipient: Recipient
    choices: list[Choice]
    #: What is already off (a plain sentence), when the person is unsubscribed already.
    already: str | None


def unsubscribe_page(session: Session, token: str) -> UnsubscribePage:
    recipient = resolve_unsubscribe(session, token)
    already = None
    if not recipient.erased:
        marketing = gate.check_one(
            session, recipient.contact_id, channel=Channel.EMAIL, topic=None, purpose=Purpose.MARKETING
        )
        if marketing.reason and marketing.reason != "no_consent":
            already = "You are not getting our marketing email at the moment."
        elif recipient.topic:
            topical = gate.check_one(
                session,
                recipient.contact_id,
                channel=Channel.EMAIL,
                topic=recipient.topic,
                purpose=Purpose.MARKETING,
            )
            if topical.reason and topical.reason != "no_consent":
                already = f"You are not getting our emails about “{recipient.topic_name}” at the moment."
    return UnsubscribePage(recipient, choices(recipient), already)


# --------------------------------------------------------------------------- preference centre
_LOCKED = {
    "hard_bounce": "Mail to this address bounced, so we no longer send email to it.",
    "complaint": "A message from us was reported as spam from this address, so we no longer email it.",
    "erasure": "Your data was erased at your request, so we no longer contact you.",
    "underage": "We do not contact people under the minimum age.",
    "invalid": "This address was found not to work, so we no longer use it.",
    "domain_block": "We do not send to this address's domain.",
}
_NO_ADDRESS = {
    Channel.EMAIL: "We have no email address for you.",
    Channel.POSTAL: "We have no postal address for you.",
    Channel.PHONE: "We have no phone number for you.",
}
_CHANNEL_LABELS = {
    Channel.EMAIL: "Email",
    Channel.POSTAL: "Letters and catalogues by post",
    Channel.PHONE: "Phone calls",
}


@dataclass(frozen=True)
class Option:
    """One switch of the preference centre: a topic of email, or the postal / phone channel."""

    channel: Channel
    topic: str | None
    label: str
    #: Form field name and value.
    field: str
    value: str
    on: bool
    #: Why it cannot be changed here (it stays as it is); None when it can.
    locked: str | None = None
    #: Turning it on sends a confirmation mail first (the person turned it off before).
    needs_confirmation: bool = False

    @property
    def id(self) -> str:
        return f"{self.field}-{self.value}"


@dataclass(frozen=True)
class PreferenceView:
    recipient: Recipient
    email_topics: list[Option]
    channels: list[Option]
    requests: list[DataRequest]

    @property
    def options(self) -> list[Option]:
        return [*self.email_topics, *self.channels]


def _staff_only_block(supps: Sequence[Suppression], topic: str | None) -> bool:
    """An opt-out that covers every channel (recorded by staff from a call or a letter):
    the person cannot lift it here."""
    return any(
        s.channel is None and s.reason in OPT_OUT_REASONS and (s.topic is None or s.topic == topic)
        for s in supps
    )


def _option(
    session: Session,
    recipient: Recipient,
    supps: Sequence[Suppression],
    channel: Channel,
    topic: str | None,
    label: str,
    field_name: str,
    value: str,
) -> Option:
    decision = gate.check_one(
        session, recipient.contact_id, channel=channel, topic=topic, purpose=Purpose.MARKETING
    )
    reason = decision.reason or ""
    locked = None
    if reason.startswith("suppressed:") and reason.removeprefix("suppressed:") in BLOCKING_REASONS:
        locked = _LOCKED.get(reason.removeprefix("suppressed:"), "This cannot be changed here.")
    elif reason == "underage":
        locked = _LOCKED["underage"]
    elif reason == "no_address":
        locked = _NO_ADDRESS[channel]
    elif not decision.allowed and _staff_only_block(supps, topic):
        sender = get_settings().sender_name
        locked = (
            "You asked us to stop contacting you on every channel. "
            f"To change that, please contact {sender} directly."
        )
    needs_confirmation = reason == "opted_out" or (
        reason.startswith("suppressed:") and reason.removeprefix("suppressed:") in OPT_OUT_REASONS
    )
    return Option(
        channel=channel,
        topic=topic,
        label=label,
        field=field_name,
        value=value,
        on=decision.allowed,
        locked=locked,
        needs_confirmation=needs_confirmation and locked is None,
    )


def _person_suppressions(session: Session, contact: Contact) -> list[Suppression]:
    hashes = [
        h for h in (contact.email_hash, contact.phone_hash, contact.postal_hash, contact.domain_hash) if h
    ]
    return suppressions.active_for_hashes(session, hashes)


def preference_view(session: Session, recipient: Recipient) -> PreferenceView:
    supps = _person_suppressions(session, recipient.contact)
    topics = list_topics(session)
    email = [
        _option(session, recipient, supps, Channel.EMAIL, t.slug, t.name, "email_topic", t.slug)
        for t in topics
    ]
    others = [
        _option(session, recipient, supps, channel, None, _CHANNEL_LABELS[channel], "channel", channel.value)
        for channel in (Channel.POSTAL, Channel.PHONE)
    ]
    requests = list(
        session.exec(
            select(DataRequest)
            .where(DataRequest.contact_id == recipient.contact_id, DataRequest.status == "open")
            .order_by(col(DataRequest.id))
        )
    )
    return PreferenceView(recipient, email, others, requests)


def open_preferences(session: Session, token: str) -> PreferenceView:
    return preference_view(session, resolve_preferences(session, token))


@dataclass
class SaveResult:
    view: PreferenceView
    turned_off: list[str] = field(default_factory=list)
    turned_on: list[str] = field(default_factory=list)
    #: Waiting for the person to follow the link in the confirmation mail.
    awaiting_confirmation: list[str] = field(default_factory=list)
    #: (label, why) of what could not be turned on here.
    not_possible: list[tuple[str, str]] = field(default_factory=list)
    #: Why no confirmation mail could be sent, when one was needed.
    confirmation_unavailable: str | None = None
    mail: OutgoingMail | None = None


def _email_channel_opted_out(session: Session, contact: Contact, supps: Sequence[Suppression]) -> bool:
    assert contact.id is not None
    for pref in list_preferences(session, contact.id):
        if pref.channel == Channel.EMAIL and pref.topic is None and pref.status == OUT:
            return True
    return any(s.channel == Channel.EMAIL and s.topic is None and s.reason in OPT_OUT_REASONS for s in supps)


def _label_for(view: PreferenceView, change: PreferenceChange) -> str | None:
    for option in view.options:
        if option.channel is change.channel and option.topic == change.topic:
            return option.label
    return None


def _is_blocking(refusal: str) -> bool:
    return refusal.removeprefix("suppressed:") in BLOCKING_REASONS


def save_preferences(
    session: Session, token: str, wanted_topics: Iterable[str], wanted_channels: Iterable[str], actor: Actor
) -> SaveResult:
    """Apply the form of the preference centre: what is unticked is turned off now; what
    is ticked is turned on now when the person never turned it off, else after they
    confirm by following the link in a confirmation mail."""
    recipient = resolve_preferences(session, token)
    contact = recipient.contact
    topics, channels = set(wanted_topics), set(wanted_channels)
    view = preference_view(session, recipient)
    result = SaveResult(view)
    offs: list[PreferenceChange] = []
    ons: list[PreferenceChange] = []
    for option in view.options:
        if option.locked:
            continue
        want = option.value in (topics if option.field == "email_topic" else channels)
        if option.on and not want:
            offs.append(PreferenceChange(option.channel, option.topic, OUT))
            result.turned_off.append(option.label)
        elif want and not option.on:
            ons.append(PreferenceChange(option.channel, option.topic, IN))
    if any(c.channel is Channel.EMAIL for c in ons) and _email_channel_opted_out(
        session, contact, _person_suppressions(session, contact)
    ):
        # Email as a whole was turned off: turning one topic back on means email again,
        # but only for the ticked topics, so the unticked ones are turned off one by one.
        ons.insert(0, PreferenceChange(Channel.EMAIL, None, IN))
        for option in view.email_topics:
            change = PreferenceChange(Channel.EMAIL, option.topic, OUT)
            if not option.locked and option.value not in topics and change not in offs:
                offs.append(change)
    evidence = recipient.evidence()
    if offs:
        apply_changes(
            session,
            contact,
            offs,
            method="preference_centre",
            actor=actor,
            text_shown="Preference centre: unticked",
            evidence=evidence,
        )
    if ons:
        outcome = apply_changes(
            session,
            contact,
            ons,
            method="preference_centre",
            actor=actor,
            text_shown="Preference centre: ticked",
            evidence=evidence,
        )
        result.turned_on = [label for c in outcome.applied if (label := _label_for(view, c))]
        pending: list[PreferenceChange] = []
        for change, refusal in outcome.refused:
            label = _label_for(view, change)
            if _is_blocking(refusal):
                if label:
                    why = _LOCKED.get(refusal.removeprefix("suppressed:"), "It cannot be changed here.")
                    result.not_possible.append((label, why))
            else:
                pending.append(change)
        if pending:
            _ask_confirmation(session, recipient, view, pending, actor, result)
    result.view = preference_view(session, recipient)
    return result


def _ask_confirmation(
    session: Session,
    recipient: Recipient,
    view: PreferenceView,
    pending: list[PreferenceChange],
    actor: Actor,
    result: SaveResult,
) -> None:
    labels = [label for c in pending if (label := _label_for(view, c))]
    settings = get_settings()
    mail = ask_for_confirmation(
        session,
        recipient.contact,
        pending,
        labels,
        actor,
        method="preference_centre",
        text_shown="Preference centre: ticked again after an opt-out; confirmation mail sent ("
        + ", ".join(labels)
        + ")",
        evidence=recipient.evidence(),
        subject=f"Please confirm: email from {settings.sender_name}",
        template="confirm_opt_in",
    )
    if mail is None:
        result.confirmation_unavailable = (
            "We cannot send a confirmation email to your address, so this cannot be turned back on here."
        )
        result.not_possible.extend((label, result.confirmation_unavailable) for label in labels)
        return
    result.awaiting_confirmation = labels
    result.mail = mail


def labels_for(session: Session, contact: Contact, changes: Iterable[PreferenceChange]) -> list[str]:
    """What the preference centre calls these changes ("Special offers", "Phone calls")."""
    view = preference_view(session, Recipient(contact))
    return [label for c in changes if (label := _label_for(view, c))]


def ask_for_confirmation(
    session: Session,
    contact: Contact,
    changes: list[PreferenceChange],
    labels: list[str],
    actor: Actor,
    *,
    method: str,
    text_shown: str,
    subject: str,
    template: str,
    text_version: str | None = None,
    evidence: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> OutgoingMail | None:
    """Double opt-in, first half: record the person's request (a consent event with status
    ``requested``: what they asked for, the wording shown, IP and user agent) and make the
    mail whose link (``/preferences/confirm/{token}``) lets them confirm it. Nothing is
    opted in here. None, and nothing recorded, when no service mail can reach them."""
    assert contact.id is not None
    service_ok = gate.check_one(
        session, contact.id, channel=Channel.EMAIL, topic=None, purpose=Purpose.SERVICE
    )
    if not contact.email or not service_ok.allowed:
        return None
    channels = {c.channel.value for c in changes}
    event = record_consent(
        session,
        contact=contact,
        status=REQUESTED,
        method=method,
        actor=actor,
        channel=channels.pop() if len(channels) == 1 else None,
        text_shown=text_shown,
        text_version=text_version,
        evidence={
            **(evidence or {}),
            "requested": [{"channel": c.channel.value, "topic": c.topic} for c in changes],
            "labels": labels,
        },
    )
    assert event.id is not None
    token = make_confirm_token(contact.id, event.id)
    settings = get_settings()
    return service_mail(
        contact,
        subject=subject,
        template=template,
        context={
            **(context or {}),
            "labels": labels,
            "confirm_url": f"{public_url()}/preferences/confirm/{token}",
            "hours": settings.opt_in_confirm_hours,
        },
    )


# --------------------------------------------------------------------------- confirmation
@dataclass(frozen=True)
class Confirmation:
    recipient: Recipient
    request_id: int
    changes: list[PreferenceChange]
    labels: list[str]
    #: pending | confirmed | expired | superseded
    state: str
    #: Where the request was made: ``preference_centre``, or ``form`` (a public form,
    #: ``app.forms``: its wording and version are recorded again with the opt-in).
    method: str = "preference_centre"
    text_shown: str | None = None
    text_version: str | None = None
    form: str | None = None


def resolve_confirmation(session: Session, token: str) -> Confirmation:
    try:
        contact_id, request_id = read_confirm_token(token)
    except BadToken as exc:
        raise LinkProblem("invalid", str(exc)) from exc
    recipient = _load(session, contact_id, None)
    if recipient.erased:
        raise LinkProblem("erased")
    request = session.get(ConsentEvent, request_id)
    if request is None or request.contact_id != contact_id or request.status != REQUESTED:
        raise LinkProblem("invalid", "no such request")
    try:
        changes = [
            PreferenceChange(Channel(item["channel"]), item["topic"], IN)
            for item in (request.evidence or {})["requested"]
        ]
        labels = [str(label) for label in (request.evidence or {}).get("labels", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise LinkProblem("invalid", "unreadable request") from exc
    delivery_id = (request.evidence or {}).get("delivery_id")
    recipient = replace(recipient, delivery_id=delivery_id if isinstance(delivery_id, int) else None)
    later = list(
        session.exec(
            select(ConsentEvent).where(
                ConsentEvent.contact_id == contact_id, col(ConsentEvent.id) > request_id
            )
        )
    )
    channels = {c.channel.value for c in changes}
    if any((e.evidence or {}).get("confirms") == request_id for e in later):
        state = "confirmed"
    elif any(e.status == OUT and (e.channel is None or e.channel in channels) for e in later):
        state = "superseded"
    elif utcnow() - request.occurred_at > timedelta(hours=get_settings().opt_in_confirm_hours):
        state = "expired"
    else:
        state = "pending"
    form = (request.evidence or {}).get("form")
    return Confirmation(
        recipient,
        request_id,
        changes,
        labels,
        state,
        method=request.method,
        text_shown=request.text_shown,
        text_version=request.text_version,
        form=form if isinstance(form, str) else None,
    )


@dataclass(frozen=True)
class ConfirmResult:
    confirmation: Confirmation
    turned_on: list[str]
    #: (label, why) of what stays off.
    not_possible: list[tuple[str, str]]


def confirm_opt_in(session: Session, token: str, actor: Actor) -> ConfirmResult:
    """The person followed the link in the confirmation mail and pressed the button: the
    opt-in is applied as fresh consent. From the preference centre it lifts their own
    opt-outs of that scope; from a public form it never does (an opt-in there meets an
    opt-out as a refusal, like an import's), and the event repeats the form's wording
    and version."""
    confirmation = resolve_confirmation(session, token)
    if confirmation.state != "pending":
        return ConfirmResult(confirmation, [], [])
    recipient = confirmation.recipient
    if confirmation.method == "form":
        outcome = apply_changes(
            session,
            recipient.contact,
            confirmation.changes,
            method="form",
            actor=actor,
            text_shown=confirmation.text_shown,
            text_version=confirmation.text_version,
            evidence={
                **recipient.evidence(),
                "confirms": confirmation.request_id,
                "double_opt_in": True,
                **({"form": confirmation.form} if confirmation.form else {}),
            },
        )
    else:
        outcome = apply_changes(
            session,
            recipient.contact,
            confirmation.changes,
            method="preference_centre",
            actor=actor,
            text_shown="Confirmed by following the link in the confirmation email (double opt-in)",
            evidence={**recipient.evidence(), "confirms": confirmation.request_id},
            confirmed_by_person=True,
        )
    view = preference_view(session, recipient)
    turned_on = [o.label for o in view.options if o.on and o.label in confirmation.labels]
    not_possible = [
        (label, _LOCKED.get(refusal.removeprefix("suppressed:"), "It cannot be changed here."))
        for change, refusal in outcome.refused
        if (label := _label_for(view, change))
    ]
    refused = {label for label, _ in not_possible}
    for option in view.options:
        if (
            option.label in confirmation.labels
            and not option.on
            and option.locked
            and option.label not in refused
        ):
            not_possible.append((option.label, option.locked))
    applied = replace(confirmation, state="confirmed") if outcome.applied else confirmation
    return ConfirmResult(applied, turned_on, not_possible)


# --------------------------------------------------------------------------- data requests
def request_data(
    session: Session, token: str, kind: Literal["access", "erasure"], actor: Actor
) -> tuple[PreferenceView, DataRequest, bool]:
    """Record an access or erasure request for compliance staff, due in a month.
    Returns (view, request, created); an open request of the same kind is not repeated."""
    recipient = resolve_preferences(session, token)
    existing, created = open_request(
        session,
        kind=kind,
        contact_id=recipient.contact_id,
        address_hash=recipient.contact.email_hash,
        channel="web",
        note="Asked for in the preference centre"
        + (f" (link from delivery {recipient.delivery_id})" if recipient.delivery_id else ""),
        received_at=utcnow(),
    )
    return preference_view(session, recipient), existing, created


# --------------------------------------------------------------------------- by email address
@dataclass(frozen=True)
class LinkRequest:
    #: accepted (the same answer whether or not the address is known) | invalid | rate_limited
    status: Literal["accepted", "invalid", "rate_limited"]
    address: str
    error: str | None = None
    mail: OutgoingMail | None = None


def request_emailed_link(session: Session, address: str, client_ip: str | None) -> LinkRequest:
    """The "unsubscribe by email address" form. The answer does not tell whether the
    address is known; a link is mailed only to a known, reachable address, at most
    ``unsubscribe_by_email_per_address_per_hour`` times an hour."""
    settings = get_settings()
    typed = (address or "").strip()[:320]
    if not LIMITER.allow(f"ip:{client_ip or '?'}", settings.unsubscribe_by_email_per_ip_per_hour):
        return LinkRequest("rate_limited", typed)
    try:
        email = normalise_email(typed, field="email")
    except ValidationProblem:
        return LinkRequest("invalid", typed, error="Enter your email address, for example name@example.com.")
    email_hash = keyed_hash(IdentifierKind.EMAIL, email.key)
    if not LIMITER.allow(f"address:{email_hash}", settings.unsubscribe_by_email_per_address_per_hour):
        return LinkRequest("accepted", typed)
    contact = session.exec(select(Contact).where(Contact.email_hash == email_hash)).first()
    if contact is None or contact.id is None or contact.erased_at is not None or not contact.email:
        return LinkRequest("accepted", typed)
    decision = gate.check_one(session, contact.id, channel=Channel.EMAIL, topic=None, purpose=Purpose.SERVICE)
    if not decision.allowed:
        return LinkRequest("accepted", typed)
    token = make_emailed_link_token(contact.id, int(time.time()))
    mail = service_mail(
        contact,
        subject=f"Your unsubscribe link for {settings.sender_name}",
        template="unsubscribe_link",
        context={"unsubscribe_url": f"{public_url()}/u/{token}", "hours": settings.unsubscribe_link_hours},
    )
    return LinkRequest("accepted", typed, mail=mail)


# --------------------------------------------------------------------------- service mail
@dataclass(frozen=True)
class OutgoingMail:
    """A service message to send after the answer (rendered then, so that the answer to
    "unsubscribe by email address" takes the same time whether or not a mail goes out)."""

    kind: str
    contact_id: int
    email: str
    name: str | None
    subject: str
    context: dict[str, Any]

    def envelope(self) -> Envelope:
        settings = get_settings()
        values = {
            **self.context,
            "subject": self.subject,
            "sender_name": settings.sender_name,
            "postal_address": settings.postal_address,
            "name": self.name or "",
        }
        env = _mail_environment()
        html = env.get_template(f"web/recipient/mail/{self.kind}.html").render(values)
        text = env.get_template(f"web/recipient/mail/{self.kind}.txt").render(values)
        bounce = make_address_token(TokenKind.BOUNCE, self.contact_id)
        message = OutgoingMessage(
            mail_from=f"bounce+{bounce}@{settings.resolved_bounce_domain}",
            rcpt_to=ascii_address(self.email),
            from_header=format_address(settings.sender_name, settings.from_email),
            to_header=format_address(self.name, self.email),
            subject=self.subject,
            html=html,
            text=text,
            message_id=f"<lw.svc.{secrets.token_hex(8)}@{settings.sender_domain}>",
            extra_headers=(("Auto-Submitted", "auto-generated"),),
        )
        data = message.to_bytes()
        if settings.dkim_key_path:
            from app.delivery.dkim import DkimSigner

            signer = DkimSigner.from_file(
                settings.dkim_key_path,
                selector=settings.dkim_selector,
                domain=settings.dkim_domain or settings.sender_domain,
            )
            data = signer.sign(data)
        return Envelope(
            key=_SERVICE_KEY_BASE + secrets.randbits(48),
            mail_from=message.mail_from,
            rcpt_to=message.rcpt_to,
            data=data,
            smtputf8=message.needs_smtputf8,
        )


@lru_cache(maxsize=1)
def _mail_environment() -> Environment:
    """Templates of the mail sent from here: HTML autoescaped, plain text as it is."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False, default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def service_mail(contact: Contact, *, subject: str, template: str, context: dict[str, Any]) -> OutgoingMail:
    """A service message to the contact (the caller asked the gate with purpose service)."""
    assert contact.id is not None and contact.email
    return OutgoingMail(template, contact.id, contact.email, contact.name, subject, dict(context))


def send_mail(mail: OutgoingMail | None) -> None:
    """Send after the answer (a background task): failures are logged, never shown — the
    page said the same whatever happens here."""
    if mail is None:
        return
    try:
        [outcome] = get_transport(get_settings().resolved_smtp_url).send_batch([mail.envelope()])
    except Exception:
        log.exception("could not send the %s mail", mail.kind)
        return
    if outcome.status != "sent":
        log.warning("the %s mail was not sent: %s %s", mail.kind, outcome.status, outcome.reply)
