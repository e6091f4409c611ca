"""The delivery ledger: claim-and-check, outcomes, recovery, counts.

The claim is one statement: it picks a micro-batch of due rows of one slice (skipping rows
another worker holds, on PostgreSQL), evaluates the gate for each contact right there,
and moves them to ``claimed`` or ``suppressed`` (with the gate's reason), returning what
is needed to render the claimed ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    Integer,
    Row,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import Campaign, Contact, Delivery, utcnow
from app.suppression import gate

#: Advisory lock: claim transactions hold it shared; an opt-out takes it exclusively.
CLAIM_LOCK_KEY = 0x4C57_434C  # "LWCL"
#: Claims hold this many consecutive keys from ``CLAIM_LOCK_KEY`` (all shared), so that an
#: opt-out waits for every claim in progress by taking any one of them exclusively, and
#: opt-outs written at once by different threads, on different keys, do not wait for
#: one another (``claim_lock_key``).
CLAIM_LOCK_STRIPES = 4

DUE_STATUSES = ("pending", "deferred")
OPEN_STATUSES = ("pending", "claimed", "deferred")

_d = Delivery.__table__  # type: ignore[attr-defined]
_c = Contact.__table__  # type: ignore[attr-defined]
#: Written into the SQL, not bound: so that a prepared claim (planned without its
#: parameters' values) may still use the partial index of due rows, ``ix_delivery_due``.
_IS_DUE = _d.c.status.in_([literal_column(f"'{status}'") for status in DUE_STATUSES])


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    delivery_id: int
    contact_id: int
    status: str  # claimed | suppressed
    reason: str | None
    attempts: int
    contact: dict[str, Any]


CONTACT_COLUMNS = (
    "email",
    "name",
    "phone",
    "company",
    "position",
    "primary_business",
    "city",
    "region",
    "zip",
    "country",
    "attributes",
    "source",
)


_CONTACT_SELECT = tuple(_c.c[name] for name in CONTACT_COLUMNS)


def claim_lock_key(stripe: int = 0) -> int:
    """The key an opt-out takes exclusively: any stripe waits for every claim."""
    return CLAIM_LOCK_KEY + stripe % CLAIM_LOCK_STRIPES


def hold_claim_lock(session: Session) -> None:
    """Take the claim lock as a claim does, in its own statement (``claim_batch`` sends it
    with the claim itself: ``_claim_postgresql``)."""
    if session.get_bind().dialect.name == "postgresql":  # all stripes, in order, one statement
        keys = func.generate_series(CLAIM_LOCK_KEY, CLAIM_LOCK_KEY + CLAIM_LOCK_STRIPES - 1).alias("k")
        session.execute(select(func.pg_advisory_xact_lock_shared(keys.column)))


def claim_batch(
    session: Session, campaign: Campaign, *, lo: int, hi: int, limit: int, now: datetime | None = None
) -> list[ClaimedRow]:
    """Claim up to ``limit`` due deliveries with ids in [lo, hi], checking the gate.

    On PostgreSQL the claim commits the session's transaction (see
    :func:`_claim_postgresql`); on SQLite the caller commits."""
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        return _claim_postgresql(session, campaign, lo, hi, limit, now)
    why = gate.denial_reason(campaign.channel, campaign.topic, campaign.purpose)
    due = (
        _d.c.campaign_id == campaign.id,
        _d.c.id.between(lo, hi),
        _IS_DUE,
        or_(_d.c.next_attempt_at.is_(None), _d.c.next_attempt_at <= now),
    )
    picked = (
        select(_d.c.id.label("id"), why.label("why"))
        .select_from(_d.join(_c, _c.c.id == _d.c.contact_id))
        .where(*due)
        .order_by(_d.c.id)
        .limit(limit)
        .with_for_update(of=_d, skip_locked=True)
        .cte("picked")
    )
    rows = session.execute(
        _mark_claimed(picked, now).returning(
            _d.c.id, _d.c.contact_id, _d.c.status, _d.c.reason, _d.c.attempts
        )
    ).all()
    # RETURNING may only name the updated table on SQLite: the contacts come in a second
    # statement of the same transaction.
    wanted = [row.contact_id for row in rows if row.status == "claimed"]
    contacts: dict[int, dict[str, Any]] = {}
    if wanted:
        found = session.execute(select(_c.c.id, *_CONTACT_SELECT).where(_c.c.id.in_(wanted))).all()
        contacts = {r[0]: dict(zip(CONTACT_COLUMNS, r[1:], strict=True)) for r in found}
    return sorted(
        (_claimed(row, contacts.get(row.contact_id, {})) for row in rows), key=lambda r: r.delivery_id
    )


#: For the claim's transaction: every row it reads is found by an index (a scan of the
#: ledger or of the preferences can look cheap to a planner whose statistics predate the
#: ledger, and then runs once per micro-batch, or once per row).
_INDEX_PROBES_ONLY = "SET LOCAL enable_seqscan = off"
#: Every stripe of the claim lock, shared (the constants are this module's own).
_CLAIM_LOCK_SQL = (
    "SELECT pg_advisory_xact_lock_shared(k) "  # noqa: S608 (two integer constants)
    f"FROM generate_series({CLAIM_LOCK_KEY}, {CLAIM_LOCK_KEY + CLAIM_LOCK_STRIPES - 1}) AS k"
)


def _claim_postgresql(
    session: Session, campaign: Campaign, lo: int, hi: int, limit: int, now: datetime
) -> list[ClaimedRow]:
    """The claim on PostgreSQL, one statement in three steps whose plans do not depend on
    the ledger's statistics (a ledger written a moment ago has none):

    1. ``picked``: the first due rows of the slice, locked (``SKIP LOCKED``), from the
       partial index of due rows (``ix_delivery_due``: in id order, no sort, no scan of
       the rows already sent);
    2. ``checked``: the gate for each picked contact, alone (a LATERAL subquery kept apart
       by ``OFFSET 0``), so its lookups are index probes for that contact — never a hash
       of the whole preference or suppression table built for each micro-batch —
       evaluated once per row (``MATERIALIZED``);
    3. the UPDATE of those rows by primary key, returning what rendering needs.

    It goes to the server in one flush with the claim lock before it and the commit after
    it (psycopg's pipeline mode; the claim itself a prepared statement, planned once), so
    that the lock is held while the server runs them and never while this process waits
    for its turn on a CPU between them (the embedded sending process runs at a lower
    priority than the server: see ``embedded_send_nice``). In READ COMMITTED the claim's
    snapshot is taken after the lock is granted, as with separate statements: an opt-out
    that took a stripe exclusively either committed before (the claim sees it) or waits
    for this commit. Sequential scans are off for the transaction (``_INDEX_PROBES_ONLY``)."""
    import psycopg

    conn = session.connection()
    sql, constants, processors = _claim_sql(
        campaign.channel, campaign.topic, campaign.purpose, _gate_settings(), conn.dialect
    )
    params = {
        **constants,
        "claim_campaign": campaign.id,
        "claim_lo": lo,
        "claim_hi": hi,
        "claim_limit": limit,
        "claim_now": processors["claim_now"](now) if "claim_now" in processors else now,
    }
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    with raw.cursor() as cursor:
        with raw.pipeline():  # sent together; the server runs them back to back
            cursor.execute(_CLAIM_LOCK_SQL)
            cursor.execute(_INDEX_PROBES_ONLY)
            cursor.execute(sql, params, prepare=True)  # the cursor keeps this result
            raw.execute("COMMIT")
        found = cursor.fetchall()
    claimed = [
        ClaimedRow(row[0], row[1], row[2], row[3], row[4], dict(zip(CONTACT_COLUMNS, row[5:], strict=True)))
        if row[2] == "claimed"
        else ClaimedRow(row[0], row[1], row[2], row[3], row[4], {})
        for row in found
    ]
    claimed.sort(key=_by_delivery)
    return claimed


_PER_CALL = frozenset({"claim_campaign", "claim_lo", "claim_hi", "claim_limit", "claim_now"})


@lru_cache(maxsize=64)
def _claim_sql(
    channel: str, topic: str | None, purpose: str, inputs: tuple[Any, int, date], dialect: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The claim statement compiled once per gate: its SQL (pyformat placeholders), the
    values of the gate's own constants (already converted by their types), and the type
    conversions of the per-call parameters."""
    compiled = _claim_statement(channel, topic, purpose, inputs).compile(
        dialect=dialect, compile_kwargs={"render_postcompile": True}
    )
    processors = dict(compiled._bind_processors)
    constants = {
        key: processors[key](value) if key in processors else value
        for key, value in compiled.params.items()
        if key not in _PER_CALL
    }
    return compiled.string, constants, processors


def _gate_settings() -> tuple[Any, int, date]:
    """What the gate reads from the settings and the clock (part of the statement)."""
    settings = get_settings()
    return (settings.consent_mode, settings.minimum_age, date.today())


@lru_cache(maxsize=64)
def _claim_statement(channel: str, topic: str | None, purpose: str, inputs: tuple[Any, int, date]) -> Any:
    """The claim statement for a campaign's gate, built once: the campaign, the slice, the
    limit and the time are bound per call (building the statement and its cache key each
    micro-batch cost milliseconds of Python)."""
    why = gate.denial_reason(
        channel, topic, purpose, consent_mode=inputs[0], minimum_age=inputs[1], today=inputs[2]
    )
    # The per-call parameters carry stand-in values: rendering the gate's expanding IN
    # lists once (``_claim_sql``) wants every parameter to have one.
    now = bindparam("claim_now", utcnow(), type_=_d.c.claimed_at.type)
    picked = (
        select(_d.c.id.label("id"), _d.c.contact_id.label("contact_id"))
        .where(
            _d.c.campaign_id == bindparam("claim_campaign", 0, type_=Integer),
            _d.c.id.between(bindparam("claim_lo", 0, type_=Integer), bindparam("claim_hi", 0, type_=Integer)),
            _IS_DUE,
            or_(_d.c.next_attempt_at.is_(None), _d.c.next_attempt_at <= now),
        )
        .order_by(_d.c.id)
        .limit(bindparam("claim_limit", 0, type_=Integer))
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    one = (
        select(why.label("why"), *_CONTACT_SELECT)
        .where(_c.c.id == picked.c.contact_id)
        .offset(0)  # keeps the subquery apart: the gate is planned for one contact
        .lateral("one")
    )
    checked = (
        select(picked.c.id.label("id"), *one.c)
        .select_from(picked.join(one, literal(True)))
        .cte("checked")
        .prefix_with("MATERIALIZED")
    )
    return _mark_claimed(checked, now).returning(
        _d.c.id,
        _d.c.contact_id,
        _d.c.status,
        _d.c.reason,
        _d.c.attempts,
        *(checked.c[name] for name in CONTACT_COLUMNS),
    )


def _mark_claimed(picked: Any, now: Any) -> Any:
    """The claim's UPDATE of the rows ``picked`` (a CTE of ``id`` and the gate's ``why``):
    those the gate lets through become ``claimed`` (one more attempt), the others
    ``suppressed`` with its reason."""
    passes = picked.c.why.is_(None)
    return (
        update(_d)
        .where(_d.c.id == picked.c.id)
        .values(
            status=case((passes, literal("claimed")), else_=literal("suppressed")),
            reason=picked.c.why,
            claimed_at=now,
            updated_at=now,
            attempts=case((passes, _d.c.attempts + 1), else_=_d.c.attempts),
        )
    )


def _by_delivery(row: ClaimedRow) -> int:
    return row.delivery_id


def _claimed(row: Row[Any], contact: dict[str, Any]) -> ClaimedRow:
    return ClaimedRow(
        delivery_id=row.id,
        contact_id=row.contact_id,
        status=row.status,
        reason=row.reason,
        attempts=row.attempts,
        contact=contact,
    )


#: The outcomes of a micro-batch as one JSON parameter (``orjson`` writes it in C): binding
#: eight arrays instead cost psycopg's Python dumpers ~20 µs per row (each element of
#: each array dumped on its own), more than the whole UPDATE on the server.
_OUTCOMES_JSON = text(
    """
    UPDATE delivery AS d SET
        status = v.b_status, reason = v.b_reason, smtp_code = v.b_code, smtp_reply = v.b_reply,
        message_id = v.b_message_id, sent_at = v.b_sent_at, next_attempt_at = v.b_next,
        updated_at = :now
    FROM json_to_recordset(CAST(:rows AS json)) AS v(
        b_id integer, b_status varchar, b_reason varchar, b_code integer, b_reply text,
        b_message_id varchar, b_sent_at timestamptz, b_next timestamptz
    )
    WHERE d.id = v.b_id AND d.status = 'claimed'
    """
)


def record_outcomes(session: Session, outcomes: list[dict[str, Any]]) -> None:
    """Write final or retry states over ``claimed`` rows only. Each dict (``_record`` in
    the service): b_id, b_status, b_reason, b_code, b_reply, b_message_id, b_sent_at
    (aware datetime or None), b_next (likewise)."""
    if not outcomes:
        return
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":  # one statement for the whole batch
        session.execute(_OUTCOMES_JSON, {"now": now, "rows": orjson.dumps(outcomes).decode()})
        return
    stmt = (
        update(_d)
        .where(_d.c.id == bindparam("b_id"), _d.c.status == "claimed")
        .values(
            status=bindparam("b_status"),
            reason=bindparam("b_reason"),
            smtp_code=bindparam("b_code"),
            smtp_reply=bindparam("b_reply"),
            message_id=bindparam("b_message_id"),
            sent_at=bindparam("b_sent_at"),
            next_attempt_at=bindparam("b_next"),
            updated_at=now,
        )
    )
    session.execute(stmt, outcomes, execution_options={"synchronize_session": False})


def expire_stale_claims(session: Session, *, lease: timedelta) -> int:
    """Claims older than the lease belong to a worker that died: mark them ``unknown``
    (they may or may not have been sent; they are never sent again)."""
    cutoff = utcnow() - lease
    result = session.execute(
        update(_d)
        .where(_d.c.status == "claimed", _d.c.claimed_at < cutoff)
        .values(status="unknown", reason="worker lost during send", updated_at=utcnow())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def counts(session: Session, campaign_id: int) -> dict[str, int]:
    rows = session.execute(
        select(_d.c.status, func.count()).where(_d.c.campaign_id == campaign_id).group_by(_d.c.status)
    ).all()
    return {status: int(n) for status, n in rows}


def open_ranges(
    session: Session, campaign_id: int, slice_size: int, *, after: int = 0
) -> list[tuple[int, int]]:
    """Id ranges of slices that still hold due rows (pending or deferred), among the rows
    with ids above ``after``."""
    bucket = (_d.c.id - 1) // slice_size
    rows = session.execute(
        select(bucket.label("b"), func.min(_d.c.id), func.max(_d.c.id))
        .where(_d.c.campaign_id == campaign_id, _d.c.status.in_(DUE_STATUSES), _d.c.id > after)
        .group_by(text("b"))
        .order_by(text("b"))
    ).all()
    return [(int(lo), int(hi)) for _b, lo, hi in rows]


def has_open(session: Session, campaign_id: int) -> bool:
    found = session.execute(
        select(_d.c.id).where(_d.c.campaign_id == campaign_id, _d.c.status.in_(OPEN_STATUSES)).limit(1)
    ).first()
    return found is not None


def due_deferred(session: Session, campaign_id: int, now: datetime) -> bool:
    found = session.execute(
        select(_d.c.id)
        .where(and_(_d.c.campaign_id == campaign_id, _d.c.status == "deferred", _d.c.next_attempt_at <= now))
        .limit(1)
    ).first()
    return found is not None


def inflight_for_contacts(session: Session, contact_ids: list[int]) -> int:
    if not contact_ids:
        return 0
    return int(
        session.execute(
            select(func.count()).where(_d.c.contact_id.in_(contact_ids), _d.c.status == "claimed")
        ).scalar_one()
    )
