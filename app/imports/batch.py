"""Writing one batch of prepared leads: set-based, a handful of statements per batch.

The rules are those of ``app.contacts.service.upsert`` and
``app.preferences.service.apply_changes``, applied to many people at once:

- a row matches a live contact by email (any case), else by phone among contacts without
  an email, else by postal address among contacts with neither;
- profile fields merge by the import's policy: ``fill_empty`` fills only empty fields,
  ``overwrite`` replaces stored values with non-empty cells; an empty cell never clears;
- an opt-in is applied only when nothing refuses it — a blocking suppression (hard bounce,
  complaint, erasure, …), an opt-out preference of that channel (whole channel or that
  topic), or an opt-out suppression of that scope. Refused opt-ins leave the person as
  they were and count as ``kept_suppressed``. :func:`refusal` is that rule; a property
  test checks it against ``apply_changes`` over random worlds;
- rows that opt out (``email_consent`` no, ``email_opt_out``, ``topic:x`` no) go through
  ``apply_changes`` itself: rare, and it writes the suppression and settles in-flight sends;
- a row for someone erased (an ``erasure`` or ``underage`` suppression) stores nothing; a birth date under
  the minimum age refuses a new lead and erases a known contact.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from sqlmodel import Session

from app.auth.actor import Actor
from app.contacts import service as contacts_service
from app.contacts.identifiers import postal_key
from app.imports.bulk import (
    CONTACT,
    EVENT,
    PREFERENCE,
    REJECT,
    SEEN,
    Bulk,
    Columns,
    JsonColumn,
    bulk_for,
    json_text,
)
from app.imports.prepare import Lead, Reject, keyed
from app.models import Contact, utcnow
from app.models.base import Channel, PreferenceStatus
from app.preferences import service as preferences
from app.preferences.service import PreferenceChange
from app.suppression.policy import BLOCKING_REASONS, OPT_OUT_REASONS, Reason

#: Profile fields an import merges (the email is the key and never changes).
MERGED_FIELDS = tuple(f for f in contacts_service.PROFILE_FIELDS if f != "email")
CONTACT_COLUMNS = (
    "id",
    "email_hash",
    "phone_hash",
    "postal_hash",
    "email",
    "attributes",
    "source_detail",
    *MERGED_FIELDS,
)


_OPTED_IN = PreferenceStatus.OPTED_IN.value
#: Where a plan's hashes hold each channel's address.
_HASH_AT = {"email": 0, "phone": 1, "postal": 2}
#: Outcomes of rows that write no contact and no consent.
_WRITES_NOTHING = frozenset({"kept_erased", "rejected_age"})
#: Outcomes that leave no mark of the import on a contact: such people met are recorded in
#: ``import_seen`` (a later row for them is then a duplicate).
_LEAVE_NO_MARK = frozenset({"unchanged", "kept_erased", "rejected_age"})


@dataclass(frozen=True, slots=True)
class Job:
    """What a batch needs to know of its import."""

    import_id: int
    filename: str
    source: str
    policy: str
    actor: Actor
    hash_key: bytes
    consent_text: str | None = None
    consent_version: str | None = None
    #: What the file is (an event, a form, a campaign), as sales described it.
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    address_hash: str
    channel: str | None
    topic: str | None
    reason: str


@dataclass(slots=True)
class World:
    """What the database says about the people of one batch."""

    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: contact id -> {(channel, topic): status}
    preferences: dict[int, dict[tuple[str, str | None], str]] = field(default_factory=dict)
    #: address hash -> active suppressions
    suppressions: dict[str, list[SuppressionRow]] = field(default_factory=dict)


def refusal(
    prefs: dict[tuple[str, str | None], str],
    supps: Iterable[SuppressionRow],
    channel: str,
    topic: str | None,
) -> str | None:
    """Why an opt-in to (channel, topic) is refused, as ``apply_changes`` words it; None if
    it may be applied. ``supps``: active suppressions of the person's identifier hashes."""
    relevant = [s for s in supps if s.channel is None or s.channel == channel]
    for s in relevant:
        if s.reason in BLOCKING_REASONS:
            return f"suppressed:{s.reason}"
    for (pchannel, ptopic), status in prefs.items():
        if (
            pchannel == channel
            and status == PreferenceStatus.OPTED_OUT
            and (ptopic is None or ptopic == topic)
        ):
            return "opted_out"
    for s in relevant:
        if s.reason in OPT_OUT_REASONS and (s.topic is None or s.topic == topic):
            return f"suppressed:{s.reason}"
    return None


def _fold(first: Lead, later: Lead, policy: str) -> None:
    """Merge a later row for the same person into the first, as the policy merges into a
    stored contact."""
    for key, value in later.values.items():
        if policy == "overwrite" or first.values.get(key) in (None, "", False):
            first.values[key] = value
    for key, value in later.attributes.items():
        if policy == "overwrite" or first.attributes.get(key) in (None, ""):
            first.attributes[key] = value
    first.opt_ins.extend(c for c in later.opt_ins if c not in first.opt_ins)
    first.opt_outs.extend(c for c in later.opt_outs if c not in first.opt_outs)
    first.given_at = {**first.given_at, **later.given_at}
    first.texts = {**first.texts, **later.texts}
    first.consent_version = later.consent_version or first.consent_version
    first.consent_ip = later.consent_ip or first.consent_ip
    first.underage = first.underage or later.underage
    first.phone_hash = first.phone_hash or later.phone_hash
    first.postal_hash = first.postal_hash or later.postal_hash
    first.merged_rows.append(later.row)


def _load_world(bulk: Bulk, leads: list[Lead]) -> World:
    world = World()
    by_kind: dict[str, list[str]] = {"email": [], "phone": [], "postal": []}
    if {lead.key_kind for lead in leads} <= {"email"}:  # the usual batch: everyone has an email
        by_kind["email"] = [lead.key for lead in leads]
    else:
        for lead in leads:
            by_kind[lead.key_kind].append(lead.key)
    for kind, keys in by_kind.items():
        for found in bulk.contacts(kind, keys, CONTACT_COLUMNS):
            world.contacts.setdefault(found[f"{kind}_hash"], found)
    ids = [c["id"] for c in world.contacts.values()]
    for contact_id, channel, topic, status in bulk.preferences(ids):
        world.preferences.setdefault(contact_id, {})[(channel, topic)] = status
    hashes: set[str | None] = {lead.email_hash for lead in leads}
    hashes.update([lead.phone_hash for lead in leads])
    hashes.update([lead.postal_hash for lead in leads])
    for contact in world.contacts.values():
        hashes.update((contact["email_hash"], contact["phone_hash"], contact["postal_hash"]))
    for found_supp in bulk.suppressions(sorted(h for h in hashes if h)):
        world.suppressions.setdefault(found_supp[0], []).append(SuppressionRow(*found_supp))
    return world


def _merge(current: dict[str, Any], lead: Lead, policy: str) -> dict[str, Any]:
    """The changed columns of a stored contact (same rule as contacts.service._merge)."""
    changes: dict[str, Any] = {}
    for key, value in lead.values.items():
        if value is None:
            continue
        stored = current.get(key)
        if (policy == "overwrite" or stored in (None, "", False)) and stored != value:
            changes[key] = value
    if lead.attributes:
        merged = dict(current.get("attributes") or {})
        for key, value in lead.attributes.items():
            if policy == "overwrite" or merged.get(key) in (None, ""):
                merged[key] = value
        if merged != (current.get("attributes") or {}):
            changes["attributes"] = merged
    return changes


def _hashes_of(values: dict[str, Any], key: bytes) -> tuple[str | None, str | None]:
    phone = values.get("phone")
    phone_hash = keyed(key, "phone", phone) if phone else None
    pkey = postal_key(values.get("address_line1"), values.get("zip"), values.get("country"))
    return phone_hash, (keyed(key, "postal", pkey) if pkey else None)


def _person_suppressions(world: World, hashes: Iterable[str | None]) -> list[SuppressionRow]:
    out: list[SuppressionRow] = []
    for h in hashes:
        if h:
            out.extend(world.suppressions.get(h, ()))
    return out


@dataclass(slots=True)
class _Plan:
    lead: Lead
    contact_id: int | None
    #: A new contact, inserted in bulk.
    new: bool = False
    hashes: tuple[str | None, ...] = ()
    outcome: str = "unchanged"


@dataclass(slots=True)
class Seen:
    """Whether this import may have recorded people met without a mark (``import_seen``)
    for this partition's people: while it has not, there is nothing to look up there."""

    possible: bool = True


def apply_batch(
    session: Session, job: Job, items: Sequence[Lead | Reject], seen: Seen | None = None
) -> Counter[str]:
    """Write one batch; returns the counts it adds. The caller commits."""
    counts: Counter[str] = Counter()
    rejects: list[Reject] = [item for item in items if type(item) is Reject]
    given: list[Lead] = [item for item in items if type(item) is Lead]
    groups: dict[str, Lead] = {lead.key: lead for lead in given}
    if len(groups) < len(given):  # the same person more than once: later rows fold into the first
        groups = {}
        for lead in given:
            first = groups.get(lead.key)
            if first is None:
                groups[lead.key] = lead
            else:
                _fold(first, lead, job.policy)
    leads = list(groups.values())
    bulk = bulk_for(session)
    world = _load_world(bulk, leads)
    # A person met earlier in this file either carries this import's mark on their contact
    # (created or updated by it) or is in the import's table of people met without a mark.
    earlier = (
        bulk.seen(job.import_id, [lead.key for lead in leads]) if seen is None or seen.possible else set()
    )
    for key, contact in world.contacts.items():
        detail = contact.get("source_detail") or {}
        if (
            detail.get("import_id") == job.import_id
            or (detail.get("last_update") or {}).get("import_id") == job.import_id
        ):
            earlier.add(key)
    now = utcnow()

    plans: list[_Plan] = []
    updates: list[dict[str, Any]] = []
    slow: list[_Plan] = []
    # Each row folded into an earlier one of the batch (see _fold) is a duplicate.
    counts["duplicates"] += len(items) - len(rejects) - len(leads)
    if (
        not world.contacts
        and not world.suppressions
        and not any([lead.underage or lead.age_refused for lead in leads])
    ):
        # Nobody known, suppressed or refused for their age (a fresh list): all new.
        plans = list(
            map(
                _Plan,
                leads,
                repeat(None),
                repeat(True),
                [(lead.email_hash, lead.phone_hash, lead.postal_hash) for lead in leads],
                repeat("created"),
            )
        )
    for lead in leads if not plans else ():
        existing = world.contacts.get(lead.key)
        erased = bool(world.suppressions) and any(
            s.reason in (Reason.ERASURE, Reason.UNDERAGE)
            for s in _person_suppressions(world, (lead.email_hash, lead.phone_hash, lead.postal_hash))
        )
        if existing is None and erased:
            plans.append(_Plan(lead, None, outcome="kept_erased"))
            continue
        if lead.underage or (existing is None and lead.age_refused):
            plan = _Plan(lead, existing["id"] if existing else None, outcome="rejected_age")
            plans.append(plan)
            if existing is not None:
                slow.append(plan)
            continue
        if existing is None:
            plans.append(
                _Plan(
                    lead,
                    None,
                    new=True,
                    hashes=(lead.email_hash, lead.phone_hash, lead.postal_hash),
                    outcome="created",
                )
            )
            continue
        changes = _merge(existing, lead, job.policy)
        merged = {**existing, **changes}
        phone_hash, postal_hash = existing["phone_hash"], existing["postal_hash"]
        if "phone" in changes or {"address_line1", "zip", "country"} & changes.keys():
            phone_hash, postal_hash = _hashes_of(merged, job.hash_key)
        if changes:
            detail = dict(existing.get("source_detail") or {})
            detail["last_update"] = _detail(job, lead.row)
            values = {
                **{name: merged.get(name) for name in MERGED_FIELDS},
                "attributes": merged.get("attributes") or {},
                "phone_hash": phone_hash,
                "postal_hash": postal_hash,
                "source_detail": detail,
                "updated_at": now,
            }
            updates.append({"id": existing["id"], **values})
        plans.append(
            _Plan(
                lead,
                existing["id"],
                hashes=(existing["email_hash"], phone_hash, postal_hash),
                outcome="updated" if changes else "unchanged",
            )
        )

    new_plans = [p for p in plans if p.new]
    clock = None if bulk.database_clock else now  # None: the database's now()
    ids = bulk.insert_columns_returning_ids(CONTACT, _new_contacts(job, new_plans, clock), len(new_plans))
    for plan, contact_id in zip(new_plans, ids, strict=True):
        plan.contact_id = contact_id
    bulk.update_contacts(updates)

    consents: list[tuple[_Plan, str, str | None]] = []
    no_prefs: dict[tuple[str, str | None], str] = {}
    kept = 0
    if not world.preferences and not world.suppressions:
        # Nothing can refuse or repeat an opt-in: every opt-in of every row that writes.
        live = [plan for plan in plans if plan.outcome not in _WRITES_NOTHING]
        slow.extend(plan for plan in live if plan.lead.opt_outs)
        consents = [(plan, c, t) for plan in live if not plan.lead.opt_outs for c, t in plan.lead.opt_ins]
    for plan in plans if world.preferences or world.suppressions else ():
        lead = plan.lead
        if plan.outcome in _WRITES_NOTHING:
            continue
        if lead.opt_outs:
            slow.append(plan)
            continue
        assert plan.contact_id is not None
        prefs = world.preferences.get(plan.contact_id, no_prefs) if world.preferences else no_prefs
        supps = _person_suppressions(world, plan.hashes) if world.suppressions else []
        if not prefs and not supps:  # nothing can refuse or repeat an opt-in
            consents.extend((plan, channel, topic) for channel, topic in lead.opt_ins)
            continue
        refused = False
        for channel, topic in lead.opt_ins:
            if refusal(prefs, supps, channel, topic):
                refused = True
                continue
            if prefs.get((channel, topic)) == _OPTED_IN:
                continue
            consents.append((plan, channel, topic))
        kept += refused
    counts["kept_suppressed"] += kept

    if consents:
        n = len(consents)
        event_ids = bulk.insert_columns_returning_ids(EVENT, _events(job, consents, clock), n)
        preferences: Columns = {
            "contact_id": [plan.contact_id for plan, _, _ in consents],
            "channel": [channel for _, channel, _ in consents],
            "topic": [topic for _, _, topic in consents],
            "status": [_OPTED_IN] * n,
            "consent_event_id": event_ids,
        }
        if clock is not None:
            preferences["updated_at"] = [clock] * n
        bulk.insert_columns(PREFERENCE, preferences, n)
        counts["consents"] += n

    for plan in slow:
        _apply_slowly(session, job, plan, counts)

    outcomes: list[str] = []
    kinds = {plan.outcome for plan in plans}
    if not earlier and _WRITES_NOTHING.isdisjoint(kinds):
        counts.update([plan.outcome for plan in plans])
        plans_left: Sequence[_Plan] = ()
    else:
        plans_left = plans
    for plan in plans_left:
        outcome = plan.outcome
        if outcome == "kept_erased":
            counts["kept_suppressed"] += 1
            outcome = "unchanged"
        elif outcome == "rejected_age":
            rejects.append(
                Reject(
                    plan.lead.row,
                    "date_of_birth" if plan.lead.underage else "age_confirmed",
                    _age_reason(plan),
                    [],
                )
            )
            continue
        outcomes.append("duplicates" if earlier and plan.lead.key in earlier else outcome)
    counts.update(outcomes)  # counted in C (one Counter increment per lead was not)
    met = [
        {"import_id": job.import_id, "key_hash": plan.lead.key}
        for plan in (plans if not _LEAVE_NO_MARK.isdisjoint(kinds) else ())
        if plan.outcome in _LEAVE_NO_MARK and plan.lead.key not in earlier
    ]
    if met:
        if seen is not None:
            seen.possible = True
        bulk.insert(SEEN, met)

    if rejects:
        counts["rejected"] += len(rejects)
        bulk.insert(
            REJECT,
            [
                {
                    "import_id": job.import_id,
                    "row_number": r.row,
                    "field": r.field,
                    "reason": r.reason[:2000],
                    "raw": json.dumps(r.cells, ensure_ascii=False) if r.cells else None,
                }
                for r in sorted(rejects, key=lambda r: r.row)
            ],
        )
    return counts


def _detail(job: Job, row: int) -> dict[str, Any]:
    detail: dict[str, Any] = {"import_id": job.import_id, "row": row, "file": job.filename}
    if job.detail:
        detail["detail"] = job.detail
    return detail


def _detail_template(job: Job, *, detail: bool = True, **extra: str) -> tuple[str, str]:
    """:func:`_detail` as JSON text around the row number, left open for more keys:
    ``head + str(row) + tail + "}"`` (without the job's ``detail`` if not ``detail``), with
    the ``extra`` keys, whose values are JSON text."""
    head = f'{{"import_id":{int(job.import_id)},"row":'
    tail = f',"file":{json_text(job.filename)}'
    if detail and job.detail:
        tail += f',"detail":{json_text(job.detail)}'
    for key, value in extra.items():
        tail += f",{json_text(key)}:{value}"
    return head, tail


def _age_reason(plan: _Plan) -> str:
    from app.config import get_settings

    minimum = get_settings().minimum_age
    if not plan.lead.underage:
        return f"refused: the person has not confirmed being {minimum} or over"
    if plan.contact_id is not None:
        return f"refused: the person is under {minimum}; the existing contact was erased and suppressed"
    return f"refused: the person is under {minimum}"


def _new_contacts(job: Job, plans: list[_Plan], now: Any) -> Columns:
    """The rows of new contacts, column by column (no dict per row: a batch of thousands
    of leads is mostly new people). ``now`` None: the database stamps them."""
    leads = [plan.lead for plan in plans]
    n = len(leads)
    columns: Columns = {
        "email": [lead.email for lead in leads],
        "email_hash": [lead.email_hash for lead in leads],
        "domain_hash": [lead.domain_hash for lead in leads],
        "phone_hash": [lead.phone_hash for lead in leads],
        "postal_hash": [lead.postal_hash for lead in leads],
    }
    values = [lead.values for lead in leads]
    given: set[str] = set().union(*map(dict.keys, values))
    for name in MERGED_FIELDS:
        if name == "age_confirmed":
            columns[name] = [bool(v.get(name)) for v in values]
        elif name in given:
            columns[name] = [v.get(name) for v in values]
    attributes = [lead.attributes for lead in leads]
    columns["attributes"] = JsonColumn(
        [json_text(a) if a else "{}" for a in attributes] if any(attributes) else repeat("{}", n)
    )
    columns["source"] = [job.source] * n
    head, tail = _detail_template(job)
    columns["source_detail"] = JsonColumn([f"{head}{lead.row}{tail}}}" for lead in leads])
    if now is not None:
        columns["created_at"] = columns["updated_at"] = [now] * n
    return columns


def _events(job: Job, consents: list[tuple[_Plan, str, str | None]], now: Any) -> Columns:
    """The consent events of opt-ins, column by column. ``now`` None: the database stamps
    them."""
    n = len(consents)
    plans = [plan for plan, _, _ in consents]
    channels = [channel for _, channel, _ in consents]
    leads = [plan.lead for plan in plans]
    hashes = [plan.hashes for plan in plans]
    if set(channels) == {"email"} and set(map(len, hashes)) == {3} and all([found[0] for found in hashes]):
        address_hashes: list[str | None] = [found[0] for found in hashes]  # the usual: email opt-ins
    else:
        address_hashes = []
        for channel, found_hashes in zip(channels, hashes, strict=True):
            found = found_hashes[_HASH_AT[channel]] if len(found_hashes) == 3 else None
            address_hashes.append(found or next((h for h in found_hashes if h), None))
    if any([lead.texts for lead in leads]):
        texts = [
            lead.texts.get(channel) or job.consent_text for lead, channel in zip(leads, channels, strict=True)
        ]
    else:
        texts = [job.consent_text] * n
    default_version = job.consent_version
    versions = [lead.consent_version or default_version for lead in leads]
    # Each event's evidence — {import_id, row, file, source} and the row's given_at,
    # consent_ip and merged rows when it has them — as JSON text from a template.
    head, tail = _detail_template(job, detail=False, source=json_text(job.source))
    rows = [lead.row for lead in leads]
    givens = [lead.given_at.get(channel) for lead, channel in zip(leads, channels, strict=True)]
    evidences = JsonColumn()
    if any([lead.consent_ip or lead.merged_rows for lead in leads]):
        for lead, row, given in zip(leads, rows, givens, strict=True):
            text = f"{head}{row}{tail}"
            if given:
                text += f',"given_at":{json_text(given)}'
            if lead.consent_ip:
                text += f',"consent_ip":{json_text(lead.consent_ip)}'
            if lead.merged_rows:
                text += f',"rows":[{",".join(map(str, (row, *lead.merged_rows)))}]'
            evidences.append(text + "}")
    elif any(givens):  # the usual: a consent date on most rows (each distinct one encoded once)
        encoded = {given: json_text(given) for given in set(givens) if given}
        evidences.extend(
            f'{head}{row}{tail},"given_at":{encoded[given]}}}' if given else f"{head}{row}{tail}}}"
            for row, given in zip(rows, givens, strict=True)
        )
    else:
        evidences.extend([f"{head}{row}{tail}}}" for row in rows])
    columns: Columns = {
        "contact_id": [plan.contact_id for plan in plans],
        "address_hash": address_hashes,
        "channel": channels,
        "topic": [topic for _, _, topic in consents],
        "status": [_OPTED_IN] * n,
        "previous_status": [None] * n,
        "method": [contacts_service.METHOD_BY_SOURCE.get(job.source, "import")] * n,
        "actor": [job.actor.kind] * n,
        "actor_user_id": [job.actor.user_id] * n,
        "actor_token_id": [job.actor.token_id] * n,
        "text_shown": texts,
        "text_version": versions,
        "ip": [None] * n,
        "user_agent": [None] * n,
        "evidence": evidences,
    }
    if now is not None:
        columns["occurred_at"] = [now] * n
    return columns


def _apply_slowly(session: Session, job: Job, plan: _Plan, counts: Counter[str]) -> None:
    """Opt-outs and under-age erasures: through the services themselves."""
    assert plan.contact_id is not None
    contact = session.get(Contact, plan.contact_id)
    assert contact is not None
    method = contacts_service.METHOD_BY_SOURCE.get(job.source, "import")
    if plan.outcome == "rejected_age":
        contacts_service.erase(session, contact, job.actor, reason=Reason.UNDERAGE, method=method)
        counts["erased_underage"] += 1
        return
    lead = plan.lead
    changes = [PreferenceChange(Channel(c), t, PreferenceStatus.OPTED_OUT) for c, t in lead.opt_outs] + [
        PreferenceChange(Channel(c), t, PreferenceStatus.OPTED_IN)
        for c, t in lead.opt_ins
        if (c, None) not in lead.opt_outs and (c, t) not in lead.opt_outs
    ]
    outcome = preferences.apply_changes(
        session,
        contact,
        changes,
        method=method,
        actor=job.actor,
        text_shown=lead.texts.get("email") or job.consent_text,
        text_version=lead.consent_version or job.consent_version,
        evidence={"import_id": job.import_id, "row": lead.row, "file": job.filename, "source": job.source},
    )
    counts["opt_outs"] += sum(1 for c in outcome.applied if c.status is PreferenceStatus.OPTED_OUT)
    counts["consents"] += sum(1 for c in outcome.applied if c.status is PreferenceStatus.OPTED_IN)
    dropped = len(lead.opt_ins) > sum(1 for c in changes if c.status is PreferenceStatus.OPTED_IN)
    if outcome.refused or dropped:
        counts["kept_suppressed"] += 1
