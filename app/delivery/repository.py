"""The delivery ledger: claim-and-check, outcomes, recovery, counts.

The claim is one statement: it picks a micro-batch of due rows of one slice (skipping rows
another worker holds, on PostgreSQL), evaluates the gate for each contact right there,
and moves them to ``claimed`` or ``suppressed`` (with the gate's reason), returning what
is needed to render the claimed ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, bindparam, case, func, literal, or_, select, text, update
from sqlalchemy.orm import Session

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
    with the claim itself: ``_lock_claim_commit``)."""
    if session.get_bind().dialect.name == "postgresql":  # all stripes, in order, one statement
        keys = func.generate_series(CLAIM_LOCK_KEY, CLAIM_LOCK_KEY + CLAIM_LOCK_STRIPES - 1).alias("k")
        session.execute(select(func.pg_advisory_xact_lock_shared(keys.column)))


def claim_batch(
    session: Session, campaign: Campaign, *, lo: int, hi: int, limit: int, now: datetime | None = None
) -> list[ClaimedRow]:
    """Claim up to ``limit`` due deliveries with ids in [lo, hi], checking the gate.

    On PostgreSQL the claim commits the session's transaction (see
    :func:`_lock_claim_commit`); on SQLite the caller commits."""
    now = now or utcnow()
    postgres = session.get_bind().dialect.name == "postgresql"  # (SQLite: writers take turns)
    why = gate.denial_reason(campaign.channel, campaign.topic, campaign.purpose)
    # The rows first, then the gate for those rows only: with the gate in the same SELECT
    # as the ORDER BY … LIMIT, SQLite evaluated it for every due row of the slice before
    # sorting, and PostgreSQL, expecting that many rows, hashed whole preference table
    # for it; either way a claim cost as much as the whole slice, not as its micro-batch.
    ids = (
        select(_d.c.id)
        .where(
            _d.c.campaign_id == campaign.id,
            _d.c.id.between(lo, hi),
            _d.c.status.in_(DUE_STATUSES),
            or_(_d.c.next_attempt_at.is_(None), _d.c.next_attempt_at <= now),
        )
        .order_by(_d.c.id)
        .limit(limit)
        .with_for_update(of=_d, skip_locked=True)
        .cte("due")
    )
    rows_of = ids.join(_d, _d.c.id == ids.c.id).join(_c, _c.c.id == _d.c.contact_id)
    if postgres:
        # Row by row (LATERAL, OFFSET 0 keeps it from being flattened): PostgreSQL otherwise
        # prefers hashing the whole preference table to a few hundred index look-ups.
        gate_row = select(why.label("why")).correlate(_c).offset(0).lateral("gate")
        picked = (
            select(_d.c.id.label("id"), gate_row.c.why)
            .select_from(rows_of.join(gate_row, literal(True)))
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
    else:  # its LIMIT (no more rows than that anyway) keeps SQLite from inlining it: the
        # gate would then be evaluated once for each of the three columns that use it
        picked = select(_d.c.id.label("id"), why.label("why")).select_from(rows_of).limit(limit).cte("picked")
    passes = picked.c.why.is_(None)
    stmt = update(_d).where(_d.c.id == picked.c.id)
    if postgres:  # RETURNING may name the joined contact: one statement, one round trip
        stmt = stmt.where(_c.c.id == _d.c.contact_id)
    stmt = stmt.values(
        status=case((passes, literal("claimed")), else_=literal("suppressed")),
        reason=picked.c.why,
        claimed_at=now,
        updated_at=now,
        attempts=case((passes, _d.c.attempts + 1), else_=_d.c.attempts),
    )
    if postgres:
        found = _lock_claim_commit(
            session,
            stmt.returning(
                _d.c.id, _d.c.contact_id, _d.c.status, _d.c.reason, _d.c.attempts, *_CONTACT_SELECT
            ),
        )
        claimed = [
            ClaimedRow(
                row[0], row[1], row[2], row[3], row[4], dict(zip(CONTACT_COLUMNS, row[5:], strict=True))
            )
            if row[2] == "claimed"
            else ClaimedRow(row[0], row[1], row[2], row[3], row[4], {})
            for row in found
        ]
        claimed.sort(key=_by_delivery)
        return claimed
    rows = session.execute(
        stmt.returning(_d.c.id, _d.c.contact_id, _d.c.status, _d.c.reason, _d.c.attempts)
    ).all()
    # RETURNING may only name the updated table on SQLite: the contacts come in a second
    # statement of the same transaction.
    wanted = [row.contact_id for row in rows if row.status == "claimed"]
    contacts: dict[int, dict[str, Any]] = {}
    if wanted:
        chosen = session.execute(select(_c.c.id, *_CONTACT_SELECT).where(_c.c.id.in_(wanted))).all()
        contacts = {r[0]: dict(zip(CONTACT_COLUMNS, r[1:], strict=True)) for r in chosen}
    return sorted(
        (_claimed(row, contacts.get(row.contact_id, {})) for row in rows), key=lambda r: r.delivery_id
    )


def _lock_claim_commit(session: Session, claim: Any) -> list[Any]:
    """PostgreSQL: take every stripe of the claim lock shared, run the claim and commit, as
    one query of three statements (client-side bound, simple query protocol), so that
    the lock is held while the server runs them and never while this process waits for
    its turn on a CPU between them (the sending process runs at a lower priority than the
    server: see ``embedded_send_nice``). In READ COMMITTED the claim's snapshot is taken
    after the lock is granted, as with separate statements: an opt-out that took a stripe
    exclusively either committed before (the claim sees it) or waits for the commit."""
    import psycopg

    conn = session.connection()
    compiled = claim.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    processors = compiled._bind_processors  # the types' own conversions (UTCDateTime)
    params = {k: processors[k](v) if k in processors else v for k, v in compiled.params.items()}
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    last = CLAIM_LOCK_KEY + CLAIM_LOCK_STRIPES - 1
    lock = f"SELECT pg_advisory_xact_lock_shared(k) FROM generate_series({CLAIM_LOCK_KEY}, {last}) AS k"  # noqa: S608
    with psycopg.ClientCursor(raw) as cursor:
        # (the only text put together here is the lock's two integer constants)
        cursor.execute(f"{lock}; {compiled.string}; COMMIT", params)
        cursor.nextset()  # the claim's rows
        rows = cursor.fetchall()
        while cursor.nextset():
            pass
    return rows


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


_OUTCOMES_UNNEST = text(
    """
    UPDATE delivery AS d SET
        status = v.status, reason = v.reason, smtp_code = v.code, smtp_reply = v.reply,
        message_id = v.message_id, sent_at = v.sent_at, next_attempt_at = v.next, updated_at = :now
    FROM unnest(
        CAST(:ids AS integer[]), CAST(:statuses AS varchar[]), CAST(:reasons AS varchar[]),
        CAST(:codes AS integer[]), CAST(:replies AS text[]), CAST(:message_ids AS varchar[]),
        CAST(:sent_ats AS timestamptz[]), CAST(:nexts AS timestamptz[])
    ) AS v(id, status, reason, code, reply, message_id, sent_at, next)
    WHERE d.id = v.id AND d.status = 'claimed'
    """
)


def record_outcomes(session: Session, outcomes: list[dict[str, Any]]) -> None:
    """Write final or retry states, one executemany. Each dict: b_id, status, reason,
    smtp_code, smtp_reply, message_id, sent_at, next_attempt_at."""
    if not outcomes:
        return
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":  # one statement for the whole batch
        session.execute(
            _OUTCOMES_UNNEST,
            {
                "now": now,
                "ids": [o["b_id"] for o in outcomes],
                "statuses": [o["b_status"] for o in outcomes],
                "reasons": [o["b_reason"] for o in outcomes],
                "codes": [o["b_code"] for o in outcomes],
                "replies": [o["b_reply"] for o in outcomes],
                "message_ids": [o["b_message_id"] for o in outcomes],
                "sent_ats": [o["b_sent_at"] for o in outcomes],
                "nexts": [o["b_next"] for o in outcomes],
            },
        )
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
