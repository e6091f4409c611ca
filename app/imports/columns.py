"""Preparing a batch of records a column at a time.

:func:`prepare_batch` gives exactly what :func:`app.imports.prepare.prepare` gives for each
record, in file order. For the usual file — an email address in every row, plain ASCII
addresses, yes/no answers, a handful of distinct countries, dates and topic lists — it does
the work column by column: each cell goes through C (``map`` over ``str`` methods, compiled
expressions and dict lookups) instead of the interpreter's per-cell dispatch of
``prepare``, and each distinct country, date and topic list is checked once per batch.

A row the column checks do not clear completely — a reject of any kind, an address the fast
path defers to email-validator, a postal address, a consent without its channel's address —
goes through ``prepare`` itself, so every reject and every unusual lead still comes from one
implementation. Columns of kinds the fast path does not handle (date of birth, age, opt-out,
per-topic answers, JSON attributes) send the whole batch through ``prepare``. A property
test checks that both paths give equal results for random batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, count, repeat
from operator import is_, is_not, not_
from typing import Any, TypeVar

from app.contacts.identifiers import PLAIN_EMAIL, normalise_phone, plain_domain
from app.contacts.schemas import MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES
from app.errors import ValidationProblem
from app.imports.prepare import (
    _ATTRIBUTE,
    _CONSENT,
    _COUNTRY,
    _EMAIL,
    _GIVEN,
    _IP,
    _LIMITED,
    _PHONE,
    _TEXT,
    _TOPICS,
    _VERSION,
    LIMITS,
    NO,
    YES,
    Context,
    Lead,
    Reject,
    _Bad,
    _column_plan,
    _domain_hash,
    _iso_date,
    prepare,
    topic_list,
)
from app.suppression.hashing import keyed_hasher

#: Column kinds the column-wise path handles.
_HANDLED = frozenset(
    {_LIMITED, _EMAIL, _PHONE, _COUNTRY, _CONSENT, _GIVEN, _TOPICS, _TEXT, _VERSION, _IP, _ATTRIBUTE}
)
#: A lower-cased, stripped answer -> True / False; anything else is not an answer.
_ANSWERS: dict[str, bool | None] = {"": None, **dict.fromkeys(YES, True), **dict.fromkeys(NO, False)}
_NOT_AN_ANSWER: Any = object()
#: Fewer records than this are prepared one by one (the column set-up is not worth it).
_SMALL = 8

T = TypeVar("T")

#: (row, cells, CSV error), as ``csvfile.records`` yields them.
RawRecord = tuple[int, list[str], str | None]


def prepare_batch(records: Sequence[RawRecord], ctx: Context) -> list[Lead | Reject]:
    """A batch of (row, cells, CSV error) -> leads and rejects, in file order."""
    if len(records) >= _SMALL and _handled(ctx):
        return _column_wise(records, ctx)
    return [_one(record, ctx) for record in records]


def _one(record: RawRecord, ctx: Context) -> Lead | Reject:
    row, cells, error = record
    return Reject(row, None, error, cells) if error else prepare(row, cells, ctx)


def _handled(ctx: Context) -> bool:
    plan = _column_plan(ctx.targets)
    targets = [target for _, _, target, _ in plan]
    kinds = [kind for _, kind, _, _ in plan]
    return (
        not ctx.check_deliverability  # each address is then looked up: nothing to gain here
        and len(set(targets)) == len(targets)  # a target twice: later cells overwrite earlier
        and kinds.count(_EMAIL) == 1
        and set(kinds) <= _HANDLED
        and kinds.count(_ATTRIBUTE) <= MAX_ATTRIBUTES
    )


def _column_wise(records: Sequence[RawRecord], ctx: Context) -> list[Lead | Reject]:
    width = len(ctx.targets)
    cells = [record[1] for record in records]
    if set(map(len, cells)) == {width} and not any([record[2] for record in records]):
        # The usual batch: every record has the header's width and no CSV error.
        leads = _Columns(ctx, [record[0] for record in records], cells).leads()
        if None not in leads:
            return leads  # type: ignore[return-value]  # no None in it
        return [found or _one(records[k], ctx) for k, found in enumerate(leads)]
    # Otherwise the records with the header's width and no CSV error; the rest one by one.
    fit = [k for k, (_, found, error) in enumerate(records) if error is None and len(found) == width]
    out: list[Lead | Reject | None] = [None] * len(records)
    if fit:
        leads = _Columns(ctx, [records[k][0] for k in fit], [cells[k] for k in fit]).leads()
        for k, lead in zip(fit, leads, strict=True):
            out[k] = lead
    return [found if found is not None else _one(records[k], ctx) for k, found in enumerate(out)]


class _Columns:
    """One batch's records (all of the header's width), column by column. ``slow`` holds the
    positions of records that must go through ``prepare``."""

    def __init__(self, ctx: Context, rows: list[int], cells: list[list[str]]) -> None:
        self.ctx = ctx
        self.rows = rows
        self.n = len(rows)
        self.columns = list(zip(*cells, strict=True))
        self.slow: set[int] = set()
        #: Profile fields (besides email and phone): (target, stripped cells).
        self.values: list[tuple[str, list[str]]] = []
        self.emails: list[str] = []
        self.phones: list[str] | None = None
        self.countries: list[str] | None = None
        self.consents: list[tuple[str, list[bool | None]]] = []
        self.given: list[tuple[str, list[str | None]]] = []
        self.texts: list[tuple[str, list[str]]] = []
        self.topics: list[tuple[str, ...] | None] | None = None
        self.version: list[str] | None = None
        self.ip: list[str] | None = None
        self.attributes: list[tuple[str, list[str]]] = []

    # ------------------------------------------------------------------ columns
    def _flag(self, column: Sequence[Any], bad: set[Any]) -> None:
        """Send the records whose cell is one of ``bad`` through ``prepare``."""
        if bad:
            self.slow.update(j for j, value in enumerate(column) if value in bad)

    def _distinct(self, column: list[str], parse: Callable[..., T], *args: Any) -> list[T | None]:
        """``parse(cell, *args)`` of each cell, called once per distinct value (None for an
        empty cell); the records whose value it refuses are slow (their entry is None)."""
        parsed: dict[str, T | None] = {"": None}
        bad: set[str] = set()
        for value in set(column) - {""}:
            try:
                parsed[value] = parse(value, *args)
            except _Bad:
                parsed[value] = None
                bad.add(value)
        self._flag(column, bad)
        return list(map(parsed.__getitem__, column))

    def _longer(self, column: Sequence[str], limit: int) -> None:
        if max(map(len, column)) > limit:
            self.slow.update(j for j, value in enumerate(column) if len(value) > limit)

    def _read(self) -> None:
        ctx = self.ctx
        for i, kind, target, arg in _column_plan(ctx.targets):
            raw = self.columns[i]
            if "\x00" in "".join(raw):
                self.slow.update(j for j, value in enumerate(raw) if "\x00" in value)
            column = list(map(str.strip, raw))
            if kind == _LIMITED:
                self._longer(column, LIMITS[target])
                self.values.append((target, column))
                if target == "address_line1":  # postal addresses are keyed and checked by prepare
                    self.slow.update(compress(count(), column))
            elif kind == _EMAIL:
                self.emails = column
            elif kind == _PHONE:
                self.phones = column
            elif kind == _COUNTRY:
                self._flag(
                    column,
                    {v for v in set(column) if v and (len(v) != 2 or not v.isascii() or not v.isalpha())},
                )
                self.countries = list(map(str.upper, column))
                self.values.append(("country", self.countries))
            elif kind == _CONSENT:
                answers = list(map(_ANSWERS.get, map(str.lower, column), repeat(_NOT_AN_ANSWER)))
                self._flag(answers, {_NOT_AN_ANSWER})
                self.consents.append((arg, answers))
            elif kind == _GIVEN:
                self.given.append((arg, self._distinct(column, _iso_date, target, ctx.day_first)))
            elif kind == _TOPICS:
                self.topics = self._distinct(column, topic_list, ctx)
            elif kind == _TEXT:
                self.texts.append((arg, [v[:5000] for v in column]))
            elif kind == _VERSION:
                self.version = [v[:64] for v in column]
            elif kind == _IP:
                self.ip = [v[:64] for v in column]
            elif kind == _ATTRIBUTE:
                self._longer(column, MAX_ATTRIBUTE_VALUE)
                self.attributes.append((arg, column))
            else:  # pragma: no cover - _handled admits no other kind
                raise AssertionError(kind)

    def _addresses(self) -> tuple[list[str], list[str], list[str | None]]:
        """Each record's (address, key, domain) as ``normalise_email`` gives them for a
        plain address (see ``fast_normalise_email``); the records with no address, or one
        that email-validator must judge, are slow (their entries are left as they fall)."""
        emails = self.emails
        matches = list(map(PLAIN_EMAIL.fullmatch, emails))
        self._flag(matches, {None})
        locals_, _, written = zip(*map(str.rpartition, emails, repeat("@")), strict=True)
        plain = set(written) if not self.slow else {w for w, m in zip(written, matches, strict=True) if m}
        verdicts = {w: plain_domain(w) for w in plain}
        domains = list(map(verdicts.get, written))
        self._flag(domains, {None})
        self._longer(locals_, 60)
        self._longer(emails, 200)
        if domains == list(written):  # every domain written in lower case: the address as it is
            addresses = emails
        else:
            addresses = [
                e if d == w else f"{local}@{d}"
                for e, local, w, d in zip(emails, locals_, written, domains, strict=True)
            ]
        return addresses, list(map(str.lower, emails)), domains

    def _phones(self) -> list[str | None]:
        """Each record's phone number in E.164 (None: no number, or the record is slow)."""
        out: list[str | None] = [None] * self.n
        if self.phones is None:
            return out
        countries = self.countries
        default = self.ctx.region or None
        slow = self.slow
        phones = self.phones
        for j in compress(count(), phones):
            if j not in slow:
                region = (countries[j] if countries is not None else "") or default
                try:
                    out[j] = normalise_phone(phones[j], region=region)
                except ValidationProblem:
                    slow.add(j)
        return out

    def _names(self) -> None:
        """First and last name columns become the name (where the row has none), as
        ``prepare`` joins them."""
        found = dict(self.values)
        first, last = found.pop("first_name", None), found.pop("last_name", None)
        if first is None and last is None:
            return
        joined = [
            f"{a} {b}" if a and b else a or b
            for a, b in zip(first or repeat(""), last or repeat(""), strict=False)
        ]
        given = found.get("name")
        names = joined if given is None else [n or j for n, j in zip(given, joined, strict=True)]
        self._longer(names, LIMITS["name"])
        found["name"] = names
        self.values = list(found.items())

    def _dicts(self, columns: Sequence[tuple[str, Sequence[Any]]], empty: Any = "") -> list[dict[str, Any]]:
        """A dict per record of the columns' cells, leaving out the cells that are
        ``empty`` (the empty string: those that are falsy)."""
        names = [name for name, _ in columns]
        if not names:
            return list(map(dict, repeat((), self.n)))
        out = list(map(dict, map(zip, repeat(names), zip(*(c for _, c in columns), strict=True))))
        for name, column in columns:
            holes = compress(count(), map(not_, column)) if empty == "" else _positions(column, empty)
            for j in holes:
                del out[j][name]
        return out

    # ------------------------------------------------------------------ records
    def leads(self) -> list[Lead | None]:
        """Each record's lead, or None where ``prepare`` must decide."""
        ctx = self.ctx
        n = self.n
        self._read()
        self._names()
        addresses, keys, domains = self._addresses()
        phones = self._phones()
        hasher = keyed_hasher(ctx.hash_key)
        email_hashes = list(map(hasher, repeat("email"), keys))
        domain_hashes: dict[str | None, str | None] = {None: None}
        domain_hashes.update((d, _domain_hash(ctx.hash_key, d)) for d in set(domains) if d is not None)
        values = self._dicts(self.values)
        phone_hashes: list[str | None] = [None] * n
        for j in compress(count(), phones):
            phone = phones[j]
            assert phone is not None
            values[j]["phone"] = phone
            phone_hashes[j] = hasher("phone", phone)
        opt_ins, opt_outs = self._choices(phone_hashes)
        leads: list[Lead | None] = list(
            map(
                Lead,
                self.rows,
                email_hashes,
                repeat("email"),
                addresses,
                email_hashes,
                map(domain_hashes.__getitem__, domains),
                phone_hashes,
                repeat(None),
                values,
                self._dicts(self.attributes),
                opt_ins,
                opt_outs,
                self._dicts(self.given, None),
                self._dicts(self.texts),
                self._column(self.version, ctx.consent_version),
                self._column(self.ip, None),
            )
        )
        for j in self.slow:
            leads[j] = None
        return leads

    def _column(self, column: list[str] | None, default: str | None) -> Iterable[str | None]:
        """A column's cells, ``default`` for the empty ones."""
        if column is None:
            return repeat(default, self.n)
        return [v or default for v in column]

    def _choices(
        self, phone_hashes: list[str | None]
    ) -> tuple[list[list[tuple[str, str | None]]], list[list[tuple[str, str | None]]]]:
        """Each record's opt-ins and opt-outs, in ``prepare``'s order: other channels' answers
        in column order, then the email topics. A consent for a channel the row has no
        address for makes the record slow (``prepare`` rejects it)."""
        n = self.n
        ins: list[list[tuple[str, str | None]]] = list(map(list, repeat((), n)))
        outs: list[list[tuple[str, str | None]]] = list(map(list, repeat((), n)))
        email: list[bool | None] | None = None
        for channel, answers in self.consents:
            if channel == "email":
                email = answers
                for j in _positions(answers, False):
                    outs[j].append(("email", None))
                continue
            for j in compress(count(), map(is_not, answers, repeat(None))):
                if channel != "phone" or phone_hashes[j] is None:
                    self.slow.add(j)  # a postal consent, or a phone consent without a number
                elif answers[j]:
                    ins[j].append((channel, None))
                else:
                    outs[j].append((channel, None))
        if email is not None:
            chosen: dict[tuple[str, ...] | None, tuple[tuple[str, str | None], ...]] = {}
            topics = self.topics if self.topics is not None else repeat(None)
            default = self.ctx.default_topics
            for j, listed in compress(enumerate(topics), map(is_, email, repeat(True))):
                found = chosen.get(listed)
                if found is None:
                    slugs = listed or default
                    found = chosen[listed] = (
                        tuple(("email", slug) for slug in dict.fromkeys(slugs))
                        if slugs
                        else (("email", None),)
                    )
                ins[j].extend(found)
        return ins, outs


def _positions(column: Sequence[Any], value: Any) -> Iterator[int]:
    """The positions of the cells that are ``value`` (None, True or False)."""
    return compress(count(), map(is_, column, repeat(value)))
