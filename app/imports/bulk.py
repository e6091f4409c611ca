"""Set-based reads and writes for imports, on the session's own connection and transaction.

PostgreSQL gets the fast path: ``= ANY(array)`` lookups (one parameter, however many keys)
and ``COPY … FROM STDIN`` for inserts, with ids drawn from the tables' sequences first.
SQLite (the embedded default) uses SQLAlchemy's executemany, which is quick there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import Table, and_, bindparam, insert, select, update
from sqlmodel import Session

from app.db import json_loads
from app.models import ConsentEvent, Contact, ImportReject, ImportSeen, Preference, Suppression

CONTACT: Table = Contact.__table__  # type: ignore[attr-defined]
PREFERENCE: Table = Preference.__table__  # type: ignore[attr-defined]
EVENT: Table = ConsentEvent.__table__  # type: ignore[attr-defined]
SUPPRESSION: Table = Suppression.__table__  # type: ignore[attr-defined]
SEEN: Table = ImportSeen.__table__  # type: ignore[attr-defined]
REJECT: Table = ImportReject.__table__  # type: ignore[attr-defined]
JSON_COLUMNS = frozenset({"attributes", "source_detail", "evidence"})
_IN_CHUNK = 900


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Bulk:
    """Generic path (SQLite, or any SQLAlchemy dialect)."""

    #: Write timestamps (contact created/updated, event occurred, preference updated) may be
    #: left out of inserts: the database fills them (PostgreSQL, migration 0005).
    database_clock = False

    def __init__(self, session: Session) -> None:
        self.session = session

    # ------------------------------------------------------------------ reads
    def seen(self, import_id: int, keys: list[str]) -> set[str]:
        """The keys this import recorded as met (without leaving a mark on a contact)."""
        seen: set[str] = set()
        for chunk in _chunks(keys):
            stmt = select(SEEN.c.key_hash).where(SEEN.c.import_id == import_id, SEEN.c.key_hash.in_(chunk))
            seen.update(self.session.execute(stmt).scalars())
        return seen

    def contacts(self, kind: str, keys: Sequence[str], columns: Sequence[str]) -> list[dict[str, Any]]:
        live = CONTACT.c.erased_at.is_(None)
        out: list[dict[str, Any]] = []
        for chunk in _chunks(keys):
            if kind == "email":
                where = and_(CONTACT.c.email_hash.in_(chunk), live)
            elif kind == "phone":
                where = and_(CONTACT.c.phone_hash.in_(chunk), CONTACT.c.email.is_(None), live)
            else:
                where = and_(
                    CONTACT.c.postal_hash.in_(chunk),
                    CONTACT.c.email.is_(None),
                    CONTACT.c.phone.is_(None),
                    live,
                )
            stmt = select(*(CONTACT.c[c] for c in columns)).where(where).order_by(CONTACT.c.id)
            out.extend(dict(row._mapping) for row in self.session.execute(stmt))
        return out

    def preferences(self, contact_ids: Sequence[int]) -> list[tuple[int, str, str | None, str]]:
        out: list[tuple[int, str, str | None, str]] = []
        for chunk in _chunks(contact_ids):
            stmt = select(
                PREFERENCE.c.contact_id, PREFERENCE.c.channel, PREFERENCE.c.topic, PREFERENCE.c.status
            )
            out.extend(tuple(r) for r in self.session.execute(stmt.where(PREFERENCE.c.contact_id.in_(chunk))))
        return out

    def suppressions(self, hashes: Sequence[str]) -> list[tuple[str, str | None, str | None, str]]:
        out: list[tuple[str, str | None, str | None, str]] = []
        for chunk in _chunks(hashes):
            stmt = (
                select(
                    SUPPRESSION.c.address_hash,
                    SUPPRESSION.c.channel,
                    SUPPRESSION.c.topic,
                    SUPPRESSION.c.reason,
                )
                .where(SUPPRESSION.c.address_hash.in_(chunk), SUPPRESSION.c.lifted_at.is_(None))
                .order_by(SUPPRESSION.c.id)
            )
            out.extend(tuple(r) for r in self.session.execute(stmt))
        return out

    # ------------------------------------------------------------------ writes
    def insert_returning_ids(self, table: Table, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list(self.session.execute(stmt, rows).scalars())

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.session.execute(insert(table), rows)

    def insert_columns_returning_ids(self, table: Table, columns: Columns, n: int) -> list[int]:
        """Insert ``n`` rows given column by column; their new ids, in order."""
        return self.insert_returning_ids(table, rows_of(_decoded(columns))) if n else []

    def insert_columns(self, table: Table, columns: Columns, n: int) -> None:
        if n:
            self.insert(table, rows_of(_decoded(columns)))

    def update_contacts(self, rows: list[dict[str, Any]]) -> None:
        """Rows of ``{"id": …, <column>: value …}``, all with the same columns."""
        if not rows:
            return
        columns = [c for c in rows[0] if c != "id"]
        stmt = (
            update(CONTACT)
            .where(CONTACT.c.id == bindparam("b_id"))
            .values({c: bindparam(f"v_{c}") for c in columns})
        )
        params = [{"b_id": r["id"], **{f"v_{c}": r[c] for c in columns}} for r in rows]
        self.session.connection().execute(stmt, params)


class PostgresBulk(Bulk):
    """``COPY`` and array parameters on the session's psycopg connection."""

    database_clock = True
    #: People's preferences by contact id (``ix_preference_contact``).
    PREFERENCES_SQL = "SELECT contact_id, channel, topic, status FROM preference WHERE contact_id = ANY(%s)"

    _sequences: dict[str, str] = {}

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        raw = session.connection().connection.driver_connection
        assert raw is not None
        self.raw: Any = raw

    def _sequence(self, table: Table) -> str:
        name = self._sequences.get(table.name)
        if name is None:
            with self.raw.cursor() as cur:
                cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table.name,))
                found = cur.fetchone()
            assert found is not None and found[0], f"{table.name}.id has no sequence"
            name = self._sequences[table.name] = str(found[0])
        return name

    def seen(self, import_id: int, keys: list[str]) -> set[str]:
        with self.raw.cursor() as cur:
            cur.execute(
                "SELECT key_hash FROM import_seen WHERE import_id = %s AND key_hash = ANY(%s::uuid[])",
                (import_id, _hex_array(keys)),
            )
            return {row[0] for row in cur.fetchall()}

    def contacts(self, kind: str, keys: Sequence[str], columns: Sequence[str]) -> list[dict[str, Any]]:
        if not keys:
            return []
        where = {
            "email": "email_hash = ANY(%s::uuid[])",
            "phone": "phone_hash = ANY(%s::uuid[]) AND email IS NULL",
            "postal": "postal_hash = ANY(%s::uuid[]) AND email IS NULL AND phone IS NULL",
        }[kind]
        # Column names and conditions are this module's constants, never input.
        sql = f"SELECT {', '.join(columns)} FROM contact WHERE {where} AND erased_at IS NULL ORDER BY id"  # noqa: S608
        with self.raw.cursor() as cur:
            cur.execute(sql, (_hex_array(keys),))
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

    def preferences(self, contact_ids: Sequence[int]) -> list[tuple[int, str, str | None, str]]:
        if not contact_ids:
            return []
        with self.raw.cursor() as cur:
            cur.execute(self.PREFERENCES_SQL, (list(contact_ids),))
            return [tuple(row) for row in cur.fetchall()]

    def suppressions(self, hashes: Sequence[str]) -> list[tuple[str, str | None, str | None, str]]:
        if not hashes:
            return []
        with self.raw.cursor() as cur:
            cur.execute(
                "SELECT address_hash, channel, topic, reason FROM suppression "
                "WHERE address_hash = ANY(%s::uuid[]) AND lifted_at IS NULL ORDER BY id",
                (_hex_array(hashes),),
            )
            return [tuple(row) for row in cur.fetchall()]

    def _copy(self, table: Table, rows: list[dict[str, Any]] | Columns) -> None:
        columns, data = copy_columns(table, rows if isinstance(rows, dict) else columns_of(rows))
        with (
            self.raw.cursor() as cur,
            cur.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            copy.write(data)

    def insert_returning_ids(self, table: Table, rows: list[dict[str, Any]]) -> list[int]:
        if not rows:
            return []
        ids = self._ids(table, len(rows))
        self._copy(table, [{"id": i, **row} for i, row in zip(ids, rows, strict=True)])
        return ids

    def insert(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._copy(table, rows)

    def _ids(self, table: Table, n: int) -> list[int]:
        with self.raw.cursor() as cur:
            cur.execute("SELECT nextval(%s) FROM generate_series(1, %s)", (self._sequence(table), n))
            return [int(r[0]) for r in cur.fetchall()]

    def insert_columns_returning_ids(self, table: Table, columns: Columns, n: int) -> list[int]:
        if not n:
            return []
        ids = self._ids(table, n)
        self._copy(table, {"id": ids, **columns})
        return ids

    def insert_columns(self, table: Table, columns: Columns, n: int) -> None:
        if n:
            self._copy(table, columns)


#: A table's rows column by column: {column: [value of row 0, value of row 1, …]}.
Columns = dict[str, list[Any]]


class JsonColumn(list[str]):
    """A JSON column's values already serialised. An import builds each row's provenance
    from a template (several times cheaper than a dict per row through a serialiser):
    ``COPY`` sends the text as it is; the generic path parses it back for SQLAlchemy."""

    __slots__ = ()


def _decoded(columns: Columns) -> Columns:
    """JSON columns parsed back, as a value read from the database would be (integers
    beyond 64 bits stay integers)."""
    return {
        name: [json_loads(v) for v in values] if type(values) is JsonColumn else values
        for name, values in columns.items()
    }


def columns_of(rows: list[dict[str, Any]]) -> Columns:
    """Rows (dicts with the same keys) as columns."""
    return {name: [row[name] for row in rows] for name in rows[0]}


def rows_of(columns: Columns) -> list[dict[str, Any]]:
    """Columns as rows (dicts)."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def copy_text(table: Table, rows: list[dict[str, Any]]) -> tuple[list[str], bytes]:
    """Rows in COPY's text format; see :func:`copy_columns`."""
    return copy_columns(table, columns_of(rows))


def copy_columns(table: Table, data: Columns) -> tuple[list[str], bytes]:
    """Columns in COPY's text format, formatted here column by column: several times faster
    than psycopg's per-value adaptation (``write_row``) for rows this wide. Returns the
    columns written and the data.

    Columns empty in every row are left out (they are NULL by default): a batch of leads
    rarely fills half of a contact's columns. A column of plain text — none of the four
    characters COPY's text format escapes (backslash, tab, newline, carriage return) in any
    of its values, checked over the joined column — goes as it is; a column holding one
    value throughout is formatted once; anything else goes value by value through
    :func:`_text`."""
    columns: list[str] = []
    texts: list[list[str]] = []
    for name, values in data.items():
        if type(values) is JsonColumn:
            kinds: set[type] = {str}  # JSON text, never NULL
        else:
            kinds = set(map(type, values))
            if kinds == {type(None)} and table.c[name].server_default is None:
                continue
        columns.append(name)
        if kinds <= {str, type(None)}:
            present = [v for v in values if v is not None] if type(None) in kinds else values
            joined = "".join(present)
            if _plain(joined):
                complete = len(present) == len(values)
                texts.append(values if complete else [_NULL if v is None else v for v in values])
                continue
        elif kinds == {int}:
            texts.append(list(map(str, values)))
            continue
        elif len(kinds) == 1 and (kinds <= {datetime, date, bool, type(None)}) and len(set(values)) == 1:
            texts.append([_text(values[0])] * len(values))
            continue
        texts.append(list(map(_text, values)))
    lines = list(map("\t".join, zip(*texts, strict=True)))
    lines.append("")
    return columns, "\n".join(lines).encode()


def _plain(text: str) -> bool:
    """Whether ``text`` holds none of the characters :func:`_text` escapes. Four substring
    searches (``memchr`` for a one-byte-per-character string) cost a tenth of what
    ``str.isprintable`` did, which looked up every character's Unicode category."""
    return "\\" not in text and "\t" not in text and "\n" not in text and "\r" not in text


_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_MOMENTS: dict[Any, str] = {}


def _text(value: Any) -> str:
    """One value in COPY's text format."""
    kind = type(value)
    if value is None:
        return "\\N"
    if kind is str:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return str(value.translate(_ESCAPES))
        return str(value)
    if kind is int:
        return str(value)
    if kind is bool:
        return "t" if value else "f"
    if kind is dict or kind is list:
        return _text(json_text(value))
    if kind is datetime or kind is date:
        found = _MOMENTS.get(value)  # the batch's timestamps repeat on every row
        if found is None:
            if len(_MOMENTS) > 10_000:
                _MOMENTS.clear()
            found = _MOMENTS[value] = value.isoformat()
        return found
    if kind is float:
        return repr(value)
    raise TypeError(f"cannot COPY a {kind.__name__}")


def json_text(value: Any) -> str:
    """JSON text of a column value (what a :class:`JsonColumn` holds): orjson (ten times
    faster than ``json.dumps``), and the standard library for what orjson refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _hex_array(keys: Iterable[str]) -> str:
    """A text[] literal of keyed hashes (hex digits only: nothing to quote). psycopg's
    list adaptation costs more than the lookup itself for thousands of keys."""
    values = list(keys)
    joined = "".join(values)
    try:
        # Hex digits only, checked in C (several times faster than a check per key);
        # fromhex skips whitespace, which the length then shows.
        digits = len(bytes.fromhex(joined)) * 2
    except ValueError:
        digits = -1
    if digits != len(joined):
        raise ValueError("not a keyed hash")
    return "{" + ",".join(values) + "}"


def bulk_for(session: Session) -> Bulk:
    if session.get_bind().dialect.name == "postgresql":
        return PostgresBulk(session)
    return Bulk(session)
