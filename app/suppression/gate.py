"""The gate: the one rule that decides whether a contact may be contacted.

Every path that selects recipients — campaign audiences, the claim-and-check step right
before each SMTP transaction, test sends, service notices, postal and phone list exports —
uses :func:`denial_reason` (as SQL inside its own statement) or :func:`check`. No other
query decides who is sendable.

Truth table, evaluated top to bottom; the first row that applies gives the answer. ``C`` is
the channel, ``T`` the topic (or none), ``P`` the purpose, ``M`` the consent mode.

====  =============================================================  ==================  ==========
row   condition                                                      marketing           service
====  =============================================================  ==================  ==========
1     contact erased                                                 deny ``erased``     deny
2     no identifier for C (email / phone / postal line1+zip)         deny ``no_address`` deny
3     date of birth says under the minimum age (default 18)          deny ``underage``   deny
4     active suppression, channel C or all, blocking reason          deny ``suppressed:<reason>``  deny
      (hard_bounce, complaint, erasure, underage, invalid,
      domain_block), any topic scope, matching any of the
      contact's identifier hashes (email, phone, postal, domain)
5     purpose is ``service``                                         —                   **allow**
6     active opt-out suppression (unsubscribe, one_click, reply,     deny ``suppressed:<reason>``
      manual_request, role), channel C or all, topic all or T
7     preference C/all or C/T is ``opted_out``                       deny ``opted_out``
8     M is ``opt-in`` and neither C/all nor C/T is ``opted_in``      deny ``no_consent``
9     otherwise                                                      **allow**
====  =============================================================  ==================  ==========

So a topic opt-out never blocks other topics, a channel-wide opt-out blocks every topic of
that channel, an opt-in to one topic does not undo a channel-wide opt-out, and service mail
(receipts, security notices) skips rows 6–8 but never rows 1–4. When several suppressions
apply, the reason named is the first in ``REASON_PRIORITY``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session
from sqlmodel import col

from app.config import ConsentMode, get_settings
from app.models import Contact, Preference, Suppression
from app.models.base import Channel, PreferenceStatus, Purpose
from app.suppression.policy import BLOCKING_REASONS, OPT_OUT_REASONS, REASON_PRIORITY

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Decision:
    contact_id: int
    allowed: bool
    reason: str | None


def _age_cutoff(today: date, minimum_age: int) -> date:
    try:
        return today.replace(year=today.year - minimum_age)
    except ValueError:  # 29 February
        return today.replace(year=today.year - minimum_age, day=28)


def _has_address(channel: Channel) -> ColumnElement[bool]:
    if channel is Channel.EMAIL:
        return Contact.email_hash.is_not(None)  # type: ignore[union-attr]
    if channel is Channel.PHONE:
        return Contact.phone_hash.is_not(None)  # type: ignore[union-attr]
    return Contact.postal_hash.is_not(None)  # type: ignore[union-attr]


def _suppression_reason(channel: Channel, topic: str | None, *, opt_outs: bool) -> ColumnElement[str | None]:
    """Row 4 (blocking reasons, any topic scope) and, with ``opt_outs``, row 6 (opt-out
    reasons scoped to all topics or ``topic``) in one look-up: the suppressions of the
    contact's hashes, the strongest first. Every blocking reason ranks before every opt-out
    reason (``REASON_PRIORITY``), so the strongest of both sets is row 4's answer when row 4
    applies and row 6's otherwise — what the two rows give one after the other, for half
    the index probes."""
    s = Suppression.__table__.c  # type: ignore[attr-defined]
    priority = case(
        {reason: index for index, reason in enumerate(REASON_PRIORITY)},
        value=s.reason,
        else_=len(REASON_PRIORITY),
    )
    blocking = s.reason.in_(sorted(BLOCKING_REASONS))
    which: ColumnElement[bool] = blocking
    if opt_outs:
        scope = or_(s.topic.is_(None), s.topic == topic) if topic is not None else s.topic.is_(None)
        which = or_(blocking, and_(s.reason.in_(sorted(OPT_OUT_REASONS)), scope))
    conditions = [
        s.lifted_at.is_(None),
        or_(s.channel.is_(None), s.channel == channel.value),
        s.address_hash.in_(
            [Contact.email_hash, Contact.phone_hash, Contact.postal_hash, Contact.domain_hash]
        ),
        which,
    ]
    return (
        select(literal("suppressed:") + s.reason)
        .where(and_(*conditions))
        .order_by(priority)
        .limit(1)
        .correlate(Contact)
        .scalar_subquery()
    )


_BLOCKING_RANKS = [REASON_PRIORITY.index(r) for r in BLOCKING_REASONS]
_OPT_OUT_RANKS = [REASON_PRIORITY.index(r) for r in OPT_OUT_REASONS]
if max(_BLOCKING_RANKS) > min(_OPT_OUT_RANKS):  # pragma: no cover - a policy edit would break row 4 + 6
    raise RuntimeError("REASON_PRIORITY must rank every blocking reason before every opt-out reason")


def _preference_reason(channel: Channel, topic: str | None, mode: ConsentMode) -> ColumnElement[str | None]:
    """Rows 7 and 8 in one look-up of the contact's preferences for the channel as a whole
    and for ``topic``: ``opted_out`` if any is opted out, else (opt-in mode) ``no_consent``
    if none is opted in. Portable aggregates (SQLite has no ``bool_or``)."""
    p = Preference.__table__.c  # type: ignore[attr-defined]
    topic_match = or_(p.topic.is_(None), p.topic == topic) if topic is not None else p.topic.is_(None)

    def any_with(status: str) -> ColumnElement[bool]:
        return func.coalesce(func.max(case((p.status == status, 1), else_=0)), 0) == 1

    whens: list[tuple[ColumnElement[bool], ColumnElement[str]]] = [
        (any_with(PreferenceStatus.OPTED_OUT), literal("opted_out"))
    ]
    if mode is ConsentMode.OPT_IN:
        whens.append((~any_with(PreferenceStatus.OPTED_IN), literal("no_consent")))
    return (
        select(case(*whens, else_=None))
        .where(p.contact_id == Contact.id, p.channel == channel.value, topic_match)
        .correlate(Contact)
        .scalar_subquery()
    )


def denial_reason(
    channel: Channel | str,
    topic: str | None,
    purpose: Purpose | str,
    *,
    consent_mode: ConsentMode | str | None = None,
    today: date | None = None,
    minimum_age: int | None = None,
) -> ColumnElement[str | None]:
    """SQL expression over ``contact``: NULL when the contact may be contacted, else why not.

    Use it inside the statement that needs it (a SELECT of the audience, the claim UPDATE):
    the decision is then made by the database at that moment, in one round trip."""
    settings = get_settings()
    channel = Channel(channel)
    purpose = Purpose(purpose)
    mode = ConsentMode(consent_mode or settings.consent_mode)
    cutoff = _age_cutoff(today or date.today(), settings.minimum_age if minimum_age is None else minimum_age)

    steps: list[ColumnElement[str | None]] = [
        case((Contact.erased_at.is_not(None), literal("erased")), else_=None),  # type: ignore[union-attr]
        case((~_has_address(channel), literal("no_address")), else_=None),
        case((col(Contact.date_of_birth) > cutoff, literal("underage")), else_=None),
        # rows 4 and 6 (marketing) or row 4 alone (service: row 5 allows what is left)
        _suppression_reason(channel, topic, opt_outs=purpose is Purpose.MARKETING),
    ]
    if purpose is Purpose.MARKETING:
        steps.append(_preference_reason(channel, topic, mode))  # rows 7 and 8
    return func.coalesce(*steps)


def sendable(
    channel: Channel | str, topic: str | None, purpose: Purpose | str, **kwargs: object
) -> ColumnElement[bool]:
    """SQL condition over ``contact``: true exactly when :func:`denial_reason` is NULL."""
    return denial_reason(channel, topic, purpose, **kwargs).is_(None)  # type: ignore[arg-type]


def check(
    session: Session,
    contact_ids: Iterable[int],
    *,
    channel: Channel | str,
    topic: str | None,
    purpose: Purpose | str,
    consent_mode: ConsentMode | str | None = None,
    today: date | None = None,
) -> dict[int, Decision]:
    """Decide for many contacts at once. Unknown ids are answered ``not_found``."""
    ids = list(dict.fromkeys(contact_ids))
    reason = denial_reason(channel, topic, purpose, consent_mode=consent_mode, today=today)
    decisions: dict[int, Decision] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk: Sequence[int] = ids[start : start + _CHUNK]
        rows = session.execute(select(col(Contact.id), reason).where(col(Contact.id).in_(chunk)))
        for found_id, why in rows:
            if found_id is not None:
                decisions[found_id] = Decision(found_id, why is None, why)
    for contact_id in ids:
        decisions.setdefault(contact_id, Decision(contact_id, False, "not_found"))
    return decisions


def check_one(
    session: Session,
    contact_id: int,
    *,
    channel: Channel | str,
    topic: str | None,
    purpose: Purpose | str,
) -> Decision:
    return check(session, [contact_id], channel=channel, topic=topic, purpose=purpose)[contact_id]


def check_address(
    session: Session,
    address_hashes: Sequence[str],
    *,
    channel: Channel | str,
    topic: str | None,
    purpose: Purpose | str,
) -> str | None:
    """For mail to an address that is not (necessarily) a contact — a test send to staff —
    the suppression rows of the table above (rows 4 and 6) decide: None when it may be
    sent, else ``suppressed:<reason>``. Consent rows do not apply: it is not marketing to
    that person."""
    s = Suppression.__table__.c  # type: ignore[attr-defined]
    channel = Channel(channel)
    reasons = set(BLOCKING_REASONS) | (
        set(OPT_OUT_REASONS) if Purpose(purpose) is Purpose.MARKETING else set()
    )
    rows = session.execute(
        select(s.reason, s.topic).where(
            s.lifted_at.is_(None),
            or_(s.channel.is_(None), s.channel == channel.value),
            s.address_hash.in_(list(address_hashes)),
            s.reason.in_(sorted(reasons)),
        )
    ).all()
    applying = [
        reason
        for reason, row_topic in rows
        if reason in BLOCKING_REASONS or row_topic is None or row_topic == topic
    ]
    if not applying:
        return None
    return "suppressed:" + min(
        applying, key=lambda r: REASON_PRIORITY.index(r) if r in REASON_PRIORITY else 99
    )
