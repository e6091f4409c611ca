"""The column-wise preparation of a batch gives exactly what ``prepare`` gives row by row."""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.imports import columns
from app.imports.columns import prepare_batch
from app.imports.prepare import Context, Lead, Reject, prepare
from tests.contacts.test_identifiers import address_like

TOPICS = {"special-offers": "special-offers", "special offers": "special-offers", "surveys": "surveys"}

#: Cells for each target: (what real files usually hold, every way a cell can be refused or
#: be unusual: spaces around, case, NUL, too long, other scripts…). A row is mostly usual
#: cells, so that a row with one odd cell — the one the fast path must notice — is common.
_NAMES = (["Anna", " Ben ", "", "Zoë", "O'Brien"], ["x" * 199, "x" * 201, "A\x00B"])
CELLS: dict[str, tuple[list[str], list[str]]] = {
    "email": (
        ["anna.1@example.com", " Anna.Lee@Example.COM ", "bob+news@mail.example.org", "BEN@EXAMPLE.DE"],
        [
            "",
            "a@@broken",
            "no-at-sign",
            "üser@bücher.de",
            "a@xn--bcher-kva.ch",
            "a@mail.localhost",
            "a@ab--cd.com",
            "x@example.test",
            "a" * 61 + "@example.com",
            "a" * 60 + "@example.com",
            "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".com",
            "lead@exa\x00mple.com",
            '"quoted"@example.com',
        ],
    ),
    "first_name": _NAMES,
    "last_name": _NAMES,
    "name": _NAMES,
    "company": (["Acme GmbH", "", "  Hooli  "], ["x" * 201]),
    "city": (["Berlin", ""], ["x" * 121]),
    "zip": (["10115", ""], ["x" * 21]),
    "address_line1": ([""], ["Main St 1"]),
    "phone": (
        ["", "+49 30 1234567", "+44 20 7946 0958"],
        ["+49 30 12", "030 1234567", "+1 202 555 0100", "call me", "+49\x00"],
    ),
    "country": (["DE", "de", " us ", ""], ["DEU", "1A", "ÄÖ"]),
    "email_consent": (["yes", " Y ", "no", "", "TRUE", "0", "opted_in"], ["maybe"]),
    "phone_consent": ([""], ["yes", "no"]),
    "postal_consent": ([""], ["yes", "no"]),
    "email_consent_date": (
        ["2025-01-02", "02/01/2025", "", "2025-03-04T10:00:00Z"],
        ["not a date", "2025-02-30"],
    ),
    "email_consent_text": (["We ask you…", ""], ["x" * 6000]),
    "phone_consent_date": (["", "2024-12-31"], ["someday"]),
    "consent_version": (["v1", ""], ["x" * 70]),
    "consent_ip": (["192.0.2.1", ""], ["x" * 70]),
    "topics": (
        ["surveys", "Special Offers, surveys", "", "surveys|special-offers"],
        ["unknown", ",", "surveys;surveys"],
    ),
    "attribute:size": (["L", ""], ["x" * 1001]),
    "attribute:team": (["", "blue"], [" "]),
    "ignore": (["whatever", ""], ["\x00"]),
    # Kinds the column-wise path leaves to prepare for the whole batch.
    "date_of_birth": (["", "1990-01-01"], ["2020-01-01", "soon"]),
    "age_confirmed": (["", "yes"], ["no"]),
    "topic:surveys": (["", "yes"], ["no"]),
    "email_opt_out": ([""], ["unsubscribed"]),
    "attributes": (["", '{"a": 1}'], ["[1]"]),
}
LEFT_TO_PREPARE = ("date_of_birth", "age_confirmed", "topic:surveys", "email_opt_out", "attributes")
HANDLED = [t for t in CELLS if t not in LEFT_TO_PREPARE]


def _cell(target: str) -> st.SearchStrategy[str]:
    usual, odd = CELLS[target]
    found = st.sampled_from(usual) | st.sampled_from(odd) if usual else st.sampled_from(odd)
    if target == "email":
        found = found | address_like() | st.builds(lambda i: f"p{i}@example.com", st.integers(0, 50))
    return st.integers(0, 7).flatmap(lambda roll: st.sampled_from(usual) if roll and usual else found)


@st.composite
def batches(
    draw: st.DrawFn, handled_only: bool = True
) -> tuple[Context, list[tuple[int, list[str], str | None]]]:
    pool = HANDLED if handled_only else list(CELLS)
    others = draw(st.lists(st.sampled_from([t for t in pool if t != "email"]), max_size=10, unique=True))
    targets = ["email", *others]
    targets = draw(st.permutations(targets))
    if draw(st.booleans()):
        targets = [*targets, "ignore"] if "ignore" not in targets else targets
    ctx = Context(
        targets=tuple(targets),
        hash_key=b"k" * 32,
        topics=TOPICS,
        default_topics=draw(st.sampled_from([(), ("surveys",), ("surveys", "special-offers")])),
        day_first=draw(st.booleans()),
        region=draw(st.sampled_from(["", "DE", "US"])),
        today=date(2026, 11, 22),
        consent_text=draw(st.sampled_from([None, "Bench consent"])),
        consent_version=draw(st.sampled_from([None, "2026-01"])),
    )
    rows = draw(st.integers(min_value=0, max_value=24))
    records: list[tuple[int, list[str], str | None]] = []
    for row in range(2, 2 + rows):
        cells = [draw(_cell(t)) for t in targets]
        odd = draw(st.integers(0, 30))
        if odd == 0:
            cells = cells[:-1]  # a row cut short
        elif odd == 1:
            cells = [*cells, "extra"]
        error = "broken CSV syntax: x" if odd == 2 else None
        records.append((row, cells, error))
    return ctx, records


def _one_by_one(ctx: Context, records: list[tuple[int, list[str], str | None]]) -> list[Lead | Reject]:
    return [
        Reject(row, None, error, cells) if error else prepare(row, cells, ctx)
        for row, cells, error in records
    ]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(batches())
def test_a_batch_prepared_column_wise_is_what_prepare_gives_row_by_row(
    batch: tuple[Context, list[tuple[int, list[str], str | None]]],
) -> None:
    ctx, records = batch
    assert prepare_batch(records, ctx) == _one_by_one(ctx, records)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(batches(handled_only=False))
def test_batches_with_columns_the_fast_path_leaves_alone_are_prepared_row_by_row(
    batch: tuple[Context, list[tuple[int, list[str], str | None]]],
) -> None:
    ctx, records = batch
    assert prepare_batch(records, ctx) == _one_by_one(ctx, records)


def test_a_usual_batch_goes_column_wise_and_each_odd_row_through_prepare(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The fast path is taken (not just agreed with): only the rows it cannot clear reach
    ``prepare``, and those come out as ``prepare`` words them."""
    ctx = Context(
        targets=(
            "email",
            "first_name",
            "last_name",
            "phone",
            "country",
            "email_consent",
            "email_consent_date",
            "topics",
        ),
        hash_key=b"k" * 32,
        topics=TOPICS,
        today=date(2026, 11, 22),
    )
    records: list[tuple[int, list[str], str | None]] = [
        (
            i + 2,
            [
                f"Lead.{i}@Example.com",
                "Anna",
                "Lee",
                "+49 30 1234567" if i % 3 == 0 else "",
                "de",
                "yes",
                "2025-01-02",
                "surveys",
            ],
            None,
        )
        for i in range(40)
    ]
    records[5] = (7, ["not-an-address", "Anna", "", "", "DE", "yes", "", ""], None)
    records[9] = (11, ["üser@bücher.de", "", "", "", "", "no", "", ""], None)
    records[12] = (14, ["x@example.com", "", "", "", "DE", "maybe", "", ""], None)
    called: list[int] = []
    real = columns.prepare

    def spy(row: int, cells: list[str], context: Context) -> Lead | Reject:
        called.append(row)
        return real(row, cells, context)

    monkeypatch.setattr(columns, "prepare", spy)
    out = prepare_batch(records, ctx)
    assert called == [7, 11, 14]
    assert out == _one_by_one(ctx, records)
    first = out[0]
    assert isinstance(first, Lead)
    assert (first.email, first.values["name"], first.values["country"], first.values["phone"]) == (
        "Lead.0@example.com",
        "Anna Lee",
        "DE",
        "+49301234567",
    )
    assert first.opt_ins == [("email", "surveys")] and first.given_at == {"email": "2025-01-02"}
    assert isinstance(out[5], Reject) and out[5].field == "email"
    assert (
        isinstance(out[9], Lead) and out[9].email == "üser@bücher.de" and out[9].opt_outs == [("email", None)]
    )
    assert isinstance(out[12], Reject) and "expected yes or no" in out[12].reason


@example(0)
@given(st.integers(min_value=0, max_value=7))
def test_small_batches_go_row_by_row(size: int) -> None:
    ctx = Context(
        targets=("email", "email_consent"), hash_key=b"k" * 32, topics=TOPICS, today=date(2026, 11, 22)
    )
    records: list[tuple[int, list[str], str | None]] = [
        (i + 2, [f"p{i}@example.com", "yes"], None) for i in range(size)
    ]
    assert prepare_batch(records, ctx) == _one_by_one(ctx, records)
