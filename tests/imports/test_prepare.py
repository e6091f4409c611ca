"""Every kind of bad row gets a clear reason; good rows come out normalised."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings

from app.errors import ValidationProblem
from app.imports.mapping import build
from app.imports.prepare import Context, Lead, Reject, keyed, prepare
from tests.contacts.test_identifiers import address_like

TOPICS = {"special-offers": "special-offers", "special offers": "special-offers", "surveys": "surveys"}
HEADER = [
    "email", "First Name", "Last Name", "phone", "country", "date_of_birth", "age_confirmed",
    "email_consent", "email_consent_date", "topics", "topic:surveys", "postal_consent", "address",
    "zip", "attr:size", "attributes",
]  # fmt: skip


def _ctx(header: list[str] = HEADER, **kw: object) -> Context:
    plan = build(header)
    return Context(targets=plan.targets, hash_key=b"k" * 32, topics=TOPICS, today=date(2026, 11, 22), **kw)  # type: ignore[arg-type]


def _row(**cells: str) -> list[str]:
    names = {
        "email": 0, "first": 1, "last": 2, "phone": 3, "country": 4, "dob": 5, "age": 6,
        "consent": 7, "consent_date": 8, "topics": 9, "surveys": 10, "postal": 11, "address": 12,
        "zip": 13, "size": 14, "attrs": 15,
    }  # fmt: skip
    row = [""] * len(HEADER)
    row[0] = "lead@example.com"
    for key, value in cells.items():
        row[names[key]] = value
    return row


def test_a_good_row_is_normalised() -> None:
    lead = prepare(
        2,
        _row(email=" Lead@Example.COM ", first="Ann", last="Lee", phone="030 1234567", country="de",
             consent="Yes", consent_date="01.02.2025", topics="Special Offers; surveys", size="42",
             attrs='{"vip": true, "tags": ["a"]}'),
        _ctx(),
    )  # fmt: skip
    assert isinstance(lead, Lead)
    assert lead.email == "Lead@example.com"
    assert lead.email_hash == keyed(b"k" * 32, "email", "lead@example.com") == lead.key
    assert lead.values == {"name": "Ann Lee", "phone": "+49301234567", "country": "DE"}
    assert lead.opt_ins == [("email", "special-offers"), ("email", "surveys")]
    assert lead.given_at == {"email": "2025-02-01"}
    assert lead.attributes == {"size": "42", "vip": True, "tags": '["a"]'}


@pytest.mark.parametrize(
    ("cells", "field", "words"),
    [
        ({"email": "nope"}, "email", "@-sign"),
        ({"email": "a@b@example.com"}, "email", "invalid email"),
        ({"email": ""}, "email", "no email address, phone number or postal address"),
        ({"phone": "12"}, "phone", "phone"),
        ({"phone": "+99 1234"}, "phone", "phone"),
        ({"country": "Germany"}, "country", "two-letter"),
        ({"dob": "31/31/1990"}, "date_of_birth", "not a date"),
        ({"dob": "2030-01-01"}, "date_of_birth", "future"),
        ({"age": "maybe"}, "age_confirmed", "yes or no"),
        ({"consent": "perhaps"}, "email_consent", "yes or no"),
        ({"consent_date": "soon"}, "email_consent_date", "not a date"),
        ({"topics": "knitting"}, "topics", "unknown topic"),
        ({"surveys": "sure"}, "topic:surveys", "yes or no"),
        ({"postal": "yes"}, "postal_consent", "no postal address"),
        ({"first": "x" * 201}, "first_name", "longer than 200"),
        ({"size": "y" * 1001}, "attribute:size", "longer than 1000"),
        ({"attrs": "{not json"}, "attributes", "not a JSON object"),
        ({"attrs": "[1, 2]"}, "attributes", "not a JSON object"),
        ({"last": "nul\x00byte"}, "last_name", "NUL"),
    ],
)
def test_bad_rows_say_which_column_and_why(cells: dict[str, str], field: str, words: str) -> None:
    got = prepare(7, _row(**cells), _ctx())
    assert isinstance(got, Reject), got
    assert got.row == 7 and got.field == field and words in got.reason, got.reason
    assert got.cells == _row(**cells)


def test_rows_of_the_wrong_width() -> None:
    short = prepare(3, ["a@example.com"], _ctx())
    assert isinstance(short, Reject) and "cut off" in short.reason
    long = prepare(3, [*_row(), "extra"], _ctx())
    assert isinstance(long, Reject) and "17 cells" in long.reason


def test_age_rules_are_flags_for_the_writer() -> None:
    teen = prepare(2, _row(dob="2012-05-05"), _ctx())
    assert isinstance(teen, Lead) and teen.underage
    birthday = prepare(2, _row(dob="2008-11-22"), _ctx())  # 18 today
    assert isinstance(birthday, Lead) and not birthday.underage
    unsure = prepare(2, _row(age="no"), _ctx())
    assert isinstance(unsure, Lead) and unsure.age_refused


def test_dates_follow_the_chosen_order() -> None:
    day_first = prepare(2, _row(dob="03/04/1990"), _ctx())
    month_first = prepare(2, _row(dob="03/04/1990"), _ctx(day_first=False))
    assert isinstance(day_first, Lead) and isinstance(month_first, Lead)
    assert day_first.values["date_of_birth"] == date(1990, 4, 3)
    assert month_first.values["date_of_birth"] == date(1990, 3, 4)


def test_phone_only_and_postal_only_leads_are_keyed_by_what_they_have() -> None:
    phone_only = prepare(2, _row(email="", phone="+44 20 7946 0958"), _ctx())
    assert (
        isinstance(phone_only, Lead)
        and phone_only.key_kind == "phone"
        and phone_only.key == phone_only.phone_hash
    )
    postal = prepare(2, _row(email="", address="1 Main St", zip="10115", postal="yes"), _ctx())
    assert isinstance(postal, Lead) and postal.key_kind == "postal" and postal.opt_ins == [("postal", None)]


def test_default_topics_apply_only_with_email_consent() -> None:
    ctx = _ctx(default_topics=("surveys",))
    yes = prepare(2, _row(consent="yes"), ctx)
    none = prepare(2, _row(), ctx)
    assert isinstance(yes, Lead) and yes.opt_ins == [("email", "surveys")]
    assert isinstance(none, Lead) and none.opt_ins == []


def test_mapping_recognises_mailchimp_and_listmonk_exports() -> None:
    mailchimp = build(
        ["Email Address", "First Name", "Last Name", "Address", "Phone Number", "MEMBER_RATING", "OPTIN_TIME",
         "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "TAGS", "UNSUB_TIME"]
    )  # fmt: skip
    assert dict(zip(mailchimp.header, mailchimp.targets, strict=True)) == {
        "Email Address": "email", "First Name": "first_name", "Last Name": "last_name",
        "Address": "address_line1", "Phone Number": "phone", "MEMBER_RATING": "ignore",
        "OPTIN_TIME": "ignore", "OPTIN_IP": "consent_ip", "CONFIRM_TIME": "email_consent_date",
        "CONFIRM_IP": "ignore", "LATITUDE": "ignore", "TAGS": "ignore", "UNSUB_TIME": "email_opt_out",
    }  # fmt: skip
    assert set(mailchimp.unmapped) == {"MEMBER_RATING", "CONFIRM_IP", "LATITUDE", "TAGS"}
    listmonk = build(["uuid", "email", "name", "attributes", "status", "created_at", "updated_at"])
    assert listmonk.targets[:5] == ("ignore", "email", "name", "attributes", "email_opt_out")
    blocklisted = prepare(2, ["u", "x@example.com", "X", '{"city": "Oslo"}', "blocklisted", "", ""],
                          Context(targets=listmonk.targets, hash_key=b"k", topics=TOPICS))  # fmt: skip
    enabled = prepare(2, ["u", "y@example.com", "Y", "{}", "enabled", "", ""],
                      Context(targets=listmonk.targets, hash_key=b"k", topics=TOPICS))  # fmt: skip
    assert isinstance(blocklisted, Lead) and blocklisted.opt_outs == [("email", None)]
    assert blocklisted.attributes == {"city": "Oslo"}
    assert isinstance(enabled, Lead) and enabled.opt_outs == []


def test_explicit_mappings_are_checked() -> None:
    plan = build(["E-Mail", "Vorname", "Firma"], {"E-Mail": "email", "Firma": "attribute:firm"})
    assert plan.targets == ("email", "first_name", "attribute:firm")
    with pytest.raises(ValidationProblem, match="unknown target"):
        build(["E-Mail"], {"E-Mail": "e_mail_adresse"})
    with pytest.raises(ValidationProblem, match="does not have"):
        build(["email"], {"Email": "email"})
    with pytest.raises(ValidationProblem, match="no column holds"):
        build(["Vorname", "Firma"])
    with pytest.raises(ValidationProblem, match="both map to"):
        build(["a", "b"], {"a": "email", "b": "email"})


def test_every_spelling_of_an_address_goes_to_the_same_partition() -> None:
    from app.contacts.identifiers import normalise_email
    from app.imports.service import partition_of

    spellings = [
        ["Anna.Lee@Example.COM", "anna.lee@example.com", " ANNA.LEE@EXAMPLE.COM "],
        ["üser@bücher.de", "üser@xn--bcher-kva.de", "üser@BÜCHER.de"],
        ["Bob+news@Mail.Example.org", "bob+NEWS@mail.example.ORG"],
    ]
    for group in spellings:
        assert len({normalise_email(s.strip()).key for s in group}) == 1
        for partitions in (2, 3, 7):
            assert len({partition_of([s], 0, partitions) for s in group}) == 1, (group, partitions)
    # The shortcut for plain ASCII addresses is their normalised key, lower-cased.
    for raw in ["A.B@EXAMPLE.COM", "x_y-z+t@Sub.Example.co.uk", "o'neil@example.ie", "a@b.io"]:
        assert normalise_email(raw).key == raw.lower()
    spread = {partition_of([f"p{i}@example.com"], 0, 2) for i in range(50)}
    assert spread == {0, 1}


@settings(max_examples=3000, deadline=None)
@given(address_like())
def test_the_partition_shortcut_is_the_normalised_key(raw: str) -> None:
    from app.contacts.identifiers import normalise_email

    raw = raw.strip()
    if not raw or not raw.isascii() or '"' in raw or "xn--" in raw.lower():
        return
    try:
        key = normalise_email(raw).key
    except ValidationProblem:
        return
    assert key == raw.lower()
