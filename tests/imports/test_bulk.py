"""The COPY text formatter: every value survives the trip into PostgreSQL unchanged."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlmodel import Session

from app.imports.bulk import CONTACT, PostgresBulk, copy_text
from app.models import Contact

AWKWARD = [
    "plain",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "non\u00a0breaking",
    "zero\u200bwidth",
    "Müller 中文 😀",
    "",
]
#: Control and separator characters that COPY's text format takes as they are (it escapes
#: only backslash, tab, newline and carriage return).
UNESCAPED = [
    "vertical\x0btab form\x0cfeed",
    "unit\x1fseparator escape\x1b",
    "next\x85line line\u2028separator paragraph\u2029separator",
    "del\x7f",
    "plain",
]


def _rows(now: datetime, texts: list[str] = AWKWARD) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i, text in enumerate(texts):
        rows.append(
            {
                "email": f"p{i}@example.com",
                "email_hash": f"{i:032x}",
                "name": text,
                "company": None if i % 2 else text,
                "city": None,  # empty in every row: left out
                "date_of_birth": date(1990, 1, 1 + i),
                "age_confirmed": bool(i % 2),
                "attributes": {"note": text, "n": i, "big": 2**70} if i == 3 else {"note": text},
                "source": "import",
                "source_detail": {"row": i},
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


def test_copy_text_leaves_out_empty_columns_and_escapes() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    columns, data = copy_text(CONTACT, _rows(now))
    assert "city" not in columns and "name" in columns and "company" in columns
    lines = data.decode().split("\n")
    assert lines[-1] == "" and len(lines) == len(AWKWARD) + 1
    assert all(line.count("\t") == len(columns) - 1 for line in lines[:-1])
    assert "tab\\there" in data.decode() and "back\\\\slash" in data.decode()


def test_a_column_without_the_four_escaped_characters_goes_as_it_is() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    columns, data = copy_text(CONTACT, _rows(now, UNESCAPED))
    names = [line.split("\t")[columns.index("name")] for line in data.decode().split("\n")[:-1]]
    assert names == UNESCAPED


@pytest.mark.parametrize("texts", [AWKWARD, UNESCAPED], ids=["escaped", "unescaped"])
@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_copy_round_trips_through_postgresql(session: Session, texts: list[str]) -> None:
    assert session.get_bind().dialect.name == "postgresql"
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = _rows(now, texts)
    ids = PostgresBulk(session).insert_returning_ids(CONTACT, rows)
    session.commit()
    for contact_id, row in zip(ids, rows, strict=True):
        stored = session.get(Contact, contact_id)
        assert stored is not None
        assert stored.email_hash == row["email_hash"]
        assert stored.name == row["name"]
        assert stored.company == row["company"]
        assert stored.city is None
        assert stored.date_of_birth == row["date_of_birth"]
        assert stored.age_confirmed is row["age_confirmed"]
        assert stored.attributes == row["attributes"]
        assert stored.source_detail == row["source_detail"]
        assert stored.created_at == now


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_looking_up_known_peoples_preferences_reads_an_index(session: Session) -> None:
    """An import batch that meets people already stored reads their preferences by
    contact id. Both unique indexes of preference are partial, so without an index on
    contact_id alone this read the whole table once per batch (an import's cost then grew
    with the square of its size)."""
    import sqlalchemy as sa

    from app.models import Preference

    raw = session.connection().connection.driver_connection
    assert raw is not None
    session.execute(sa.text("SET enable_seqscan = off"))  # a scan only if no index serves
    with raw.cursor() as cur:
        cur.execute("EXPLAIN " + PostgresBulk.PREFERENCES_SQL, ([1, 2, 3],))
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "Seq Scan" not in plan and "ix_preference_contact" in plan, plan
    # The preference centre and every preference change read them the same way.
    stmt = sa.select(Preference).where(Preference.contact_id == 1)
    sql = stmt.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
    plan = "\n".join(r[0] for r in session.execute(sa.text(f"EXPLAIN {sql}")))
    assert "Seq Scan" not in plan, plan


def test_json_columns_given_as_text_arrive_as_their_values(session: Session) -> None:
    """A JsonColumn (provenance serialised by the import) lands as the JSON it holds, on
    PostgreSQL through COPY (backslashes, tabs and newlines escaped for it) and on SQLite
    through SQLAlchemy."""
    from app.imports.bulk import JsonColumn, bulk_for, json_text

    details = [{"note": text, "row": i, "big": 2**70 + i} for i, text in enumerate(AWKWARD)]
    columns = {
        "email": [f"p{i}@example.com" for i in range(len(AWKWARD))],
        "source": ["import"] * len(AWKWARD),
        "age_confirmed": [False] * len(AWKWARD),
        "attributes": JsonColumn(["{}"] * len(AWKWARD)),
        "source_detail": JsonColumn(json_text(d) for d in details),
    }
    if session.get_bind().dialect.name != "postgresql":
        now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        columns["created_at"] = columns["updated_at"] = [now] * len(AWKWARD)
    ids = bulk_for(session).insert_columns_returning_ids(CONTACT, columns, len(AWKWARD))
    session.commit()
    for contact_id, detail in zip(ids, details, strict=True):
        stored = session.get(Contact, contact_id)
        assert stored is not None and stored.source_detail == detail and stored.attributes == {}


@pytest.mark.parametrize(
    "keys", [["ab", "c d"], ["ab,cd"], ["ab}"], ['a"b'], ["ab\\\\"], ["abc"], ["éé"], ["ab", "\t"]]
)
def test_an_array_of_keyed_hashes_holds_hex_digits_only(keys: list[str]) -> None:
    from app.imports.bulk import _hex_array

    with pytest.raises(ValueError, match="not a keyed hash"):
        _hex_array(keys)


def test_an_array_of_keyed_hashes() -> None:
    from app.imports.bulk import _hex_array

    assert _hex_array(["0a1B", "ffff"]) == "{0a1B,ffff}"
    assert _hex_array([]) == "{}"
