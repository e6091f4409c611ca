"""Provenance an import writes per row (a new contact's source_detail and attributes, a
consent event's evidence) is JSON text built from a template: it must be exactly the JSON
of the dicts it stands for, whatever the file name, detail, IP or attribute values hold."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.auth.actor import Actor
from app.imports.batch import Job, _events, _new_contacts, _Plan
from app.imports.bulk import JsonColumn
from app.imports.prepare import Lead

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
ATTRIBUTE = st.one_of(
    TEXT,
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _lead(
    row: int, given_at: str | None, ip: str | None, merged: list[int], attributes: dict[str, Any]
) -> Lead:
    return Lead(
        row=row,
        key=f"{row:032x}",
        key_kind="email",
        email=f"p{row}@example.org",
        email_hash=f"{row:032x}",
        domain_hash="d" * 32,
        phone_hash=None,
        postal_hash=None,
        values={},
        attributes=attributes,
        opt_ins=[("email", None)],
        opt_outs=[],
        given_at={"email": given_at} if given_at else {},
        texts={},
        consent_version=None,
        consent_ip=ip,
        merged_rows=merged,
    )


@settings(max_examples=200, deadline=None)
@given(
    import_id=st.integers(1, 2**31 - 1),
    filename=TEXT,
    source=st.sampled_from(["import", "registration", "survey", "event"]),
    detail=st.one_of(st.none(), TEXT),
    rows=st.lists(
        st.tuples(
            st.integers(2, 10**7),
            st.one_of(st.none(), st.dates().map(str), TEXT),
            st.one_of(st.none(), TEXT),
            st.lists(st.integers(2, 10**7), max_size=3),
            st.dictionaries(TEXT, ATTRIBUTE, max_size=3),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_provenance_templates_are_the_json_of_their_dicts(
    import_id: int, filename: str, source: str, detail: str | None, rows: list[Any]
) -> None:
    job = Job(import_id, filename, source, "fill_empty", Actor(kind="staff"), b"k" * 32, detail=detail)
    plans = [
        _Plan(_lead(*row), contact_id=i + 1, new=True, hashes=("a" * 32, None, None))
        for i, row in enumerate(rows)
    ]

    contacts = _new_contacts(job, plans, None)
    assert type(contacts["source_detail"]) is JsonColumn and type(contacts["attributes"]) is JsonColumn
    for plan, text, attributes in zip(plans, contacts["source_detail"], contacts["attributes"], strict=True):
        expected: dict[str, Any] = {"import_id": import_id, "row": plan.lead.row, "file": filename}
        if detail:
            expected["detail"] = detail
        assert json.loads(text) == expected
        assert list(json.loads(text)) == list(expected)  # the same key order too
        assert json.loads(attributes) == plan.lead.attributes

    events = _events(job, [(plan, "email", None) for plan in plans], None)
    assert type(events["evidence"]) is JsonColumn
    for plan, text in zip(plans, events["evidence"], strict=True):
        lead = plan.lead
        evidence: dict[str, Any] = {
            "import_id": import_id,
            "row": lead.row,
            "file": filename,
            "source": source,
        }
        if lead.given_at.get("email"):
            evidence["given_at"] = lead.given_at["email"]
        if lead.consent_ip:
            evidence["consent_ip"] = lead.consent_ip
        if lead.merged_rows:
            evidence["rows"] = [lead.row, *lead.merged_rows]
        assert json.loads(text) == evidence
        assert list(json.loads(text)) == list(evidence)
