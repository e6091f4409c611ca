"""Imports against the database (SQLite and PostgreSQL): rows land, bad rows are reported,
duplicates merge, and nobody who opted out is ever subscribed again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from app.auth.actor import Actor
from app.contacts import service as contacts
from app.db import session_scope
from app.imports import service
from app.models import ConsentEvent, Contact, Import, ImportSeen, Preference, Suppression, Topic, utcnow
from app.models.base import Channel, PreferenceStatus, Purpose
from app.suppression import gate
from app.suppression.service import add_for_address
from tests.imports.helpers import rejects, run_import, start, write

HEADER = [
    "Email Address",
    "First Name",
    "Last Name",
    "Phone",
    "email_consent",
    "email_consent_date",
    "topics",
]


def _contact(email: str) -> Contact | None:
    with session_scope() as session:
        return contacts.find_by_email(session, email)


def _allowed(email: str, topic: str | None = "special-offers") -> bool:
    contact = _contact(email)
    assert contact is not None and contact.id is not None
    with session_scope() as session:
        return gate.check_one(
            session, contact.id, channel=Channel.EMAIL, topic=topic, purpose=Purpose.MARKETING
        ).allowed


def _count(model: type, *where: object) -> int:
    with session_scope() as session:
        return int(session.exec(select(func.count()).select_from(model).where(*where)).one())  # type: ignore[arg-type]


def test_rows_land_with_consent_evidence_and_bad_rows_are_reported(db, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            HEADER,
            ["anna@example.com", "Anna", "Smith", "+49 30 1234567", "yes", "2025-03-01", "special-offers"],
            ["ben@example.org", "Ben", "", "", "yes", "", ""],
            ["not-an-email", "Bad", "", "", "yes", "", ""],
            ["carla@example.com", "Carla", "", "12345", "", "", ""],
            ["dora@example.com", "Dora", "", "", "maybe", "", ""],
        ],
    )
    job = run_import(
        path,
        consent_text="Tick to get our offers",
        consent_version="v3",
        source="event",
        source_detail="Fair 2026",
    )
    assert job.status == "done" and job.rows_total == 5 and job.rows_done == 5
    assert job.counts["created"] == 2 and job.counts["rejected"] == 3
    assert job.counts["consents"] == 2
    assert [(row, field) for row, field, _ in rejects(job.id)] == [
        (4, "email"),
        (5, "phone"),
        (6, "email_consent"),
    ]
    reasons = [reason for _, _, reason in rejects(job.id)]
    assert "@-sign" in reasons[0] and "phone" in reasons[1] and "'maybe'" in reasons[2]

    anna = _contact("ANNA@example.com")
    assert anna is not None and anna.name == "Anna Smith" and anna.phone == "+49301234567"
    assert (
        anna.source == "event"
        and anna.source_detail["import_id"] == job.id
        and anna.source_detail["row"] == 2
    )
    assert _allowed("anna@example.com", "special-offers")
    assert not _allowed("anna@example.com", "partner-offers")  # she chose one topic only
    assert _allowed("ben@example.org", "partner-offers")  # consent without topics: all email
    with session_scope() as session:
        event = session.exec(select(ConsentEvent).where(ConsentEvent.contact_id == anna.id)).one()
    assert event.method == "import" and event.status == "opted_in" and event.topic == "special-offers"
    assert event.text_shown == "Tick to get our offers" and event.text_version == "v3"
    assert event.evidence["given_at"] == "2025-03-01" and event.evidence["row"] == 2
    assert _count(ImportSeen) == 0  # the import's scratch table is emptied when it ends


def test_every_preference_names_the_consent_event_that_explains_it(db, tmp_path: Path) -> None:
    """No foreign key holds ``preference.consent_event_id`` or ``preference.topic`` (migration
    0005): the import itself must write an existing event of the same person, channel and
    topic, and only known topics — with the fast batch path and the slow one (opt-outs)."""
    path = write(
        tmp_path,
        [HEADER]
        + [
            [
                f"p{i}@example.com",
                f"P{i}",
                "",
                "",
                "yes",
                "2025-03-01",
                ["special-offers", "", "surveys"][i % 3],
            ]
            for i in range(30)
        ]
        + [["q@example.com", "Q", "", "", "no", "", ""]],
    )
    job = run_import(path)
    assert job.counts["consents"] == 30 and job.counts["opt_outs"] == 1
    with session_scope() as session:
        topics = set(session.exec(select(Topic.slug)))
        prefs = session.exec(select(Preference)).all()
        assert len(prefs) == 31
        for pref in prefs:
            assert pref.topic is None or pref.topic in topics
            event = session.get(ConsentEvent, pref.consent_event_id)
            assert event is not None, pref
            assert (event.contact_id, event.channel, event.topic, event.status) == (
                pref.contact_id,
                pref.channel,
                pref.topic,
                pref.status,
            )
            # Stamped by the database's clock on PostgreSQL, by the batch's on SQLite.
            contact = session.get(Contact, pref.contact_id)
            assert contact is not None
            for moment in (event.occurred_at, pref.updated_at, contact.created_at, contact.updated_at):
                assert abs(moment - utcnow()) < timedelta(minutes=5)


def test_consent_yes_never_resubscribes_an_opted_out_or_suppressed_person(db, tmp_path: Path) -> None:
    staff = Actor(kind="staff", role="admin")
    with session_scope() as session:
        for email in ("out@example.com", "pref@example.com", "erased@example.com", "bounced@example.com"):
            contacts.upsert(session, contacts.ContactIn(email=email), staff)
    with session_scope() as session:
        add_for_address(
            session,
            address="out@example.com",
            channel="email",
            topic=None,
            reason="unsubscribe",
            method="phone",
            note=None,
            actor=staff,
        )
        add_for_address(
            session,
            address="bounced@example.com",
            channel=None,
            topic=None,
            reason="hard_bounce",
            method=None,
            note=None,
            actor=staff,
        )
        pref = contacts.find_by_email(session, "pref@example.com")
        assert pref is not None
        from app.preferences.service import PreferenceChange, apply_changes

        apply_changes(
            session,
            pref,
            [PreferenceChange(Channel.EMAIL, None, PreferenceStatus.OPTED_OUT)],
            method="link",
            actor=Actor.recipient(),
        )
        erased = contacts.find_by_email(session, "erased@example.com")
        assert erased is not None
        contacts.erase(session, erased, staff)
    events_before = _count(ConsentEvent)
    suppressions_before = _count(Suppression, col(Suppression.lifted_at).is_(None))
    path = write(
        tmp_path,
        [
            HEADER,
            ["out@example.com", "Out", "", "", "yes", "2026-01-01", ""],
            ["Pref@Example.com", "Pref", "", "", "yes", "", "special-offers"],
            ["erased@example.com", "Erased", "", "", "yes", "", ""],
            ["bounced@example.com", "Bounced", "", "", "yes", "", ""],
            ["fresh@example.com", "Fresh", "", "", "yes", "", ""],
        ],
    )
    job = run_import(path, merge="overwrite")
    assert job.counts["kept_suppressed"] == 4
    assert job.counts["created"] == 1 and job.counts["rejected"] == 0
    for email in ("out@example.com", "pref@example.com", "bounced@example.com"):
        assert not _allowed(email), email
    assert _contact("erased@example.com") is None  # an erased person is not stored again
    assert _allowed("fresh@example.com")
    assert _count(ConsentEvent) == events_before + 1  # only the fresh lead's consent
    assert _count(Suppression, col(Suppression.lifted_at).is_(None)) == suppressions_before
    assert _contact("out@example.com").name == "Out"  # type: ignore[union-attr]  # profile still merges


def test_the_same_file_twice_changes_nothing_the_second_time(db, tmp_path: Path) -> None:
    rows = [HEADER] + [
        [f"p{i}@example.com", f"P{i}", "Last", "+4930123456" + str(i % 10), "yes", "2025-01-02", "surveys"]
        for i in range(300)
    ]
    path = write(tmp_path, rows)
    first = run_import(path)
    assert first.counts["created"] == 300 and first.counts["consents"] == 300

    def snapshot() -> tuple[int, int, int, list[tuple[object, ...]]]:
        with session_scope() as session:
            people = session.exec(select(Contact).order_by(col(Contact.id))).all()
            return (
                _count(ConsentEvent),
                _count(Preference),
                _count(Suppression),
                [
                    (c.id, c.name, c.phone, c.updated_at, dict(c.source_detail), dict(c.attributes))
                    for c in people
                ],
            )

    before = snapshot()
    for merge in ("fill_empty", "overwrite"):
        again = run_import(path, merge=merge)
        assert again.counts["unchanged"] == 300, again.counts
        assert again.counts["created"] == again.counts["updated"] == again.counts["consents"] == 0
        assert snapshot() == before


def test_ten_thousand_duplicates_are_merged_and_counted(db, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(service.get_settings(), "import_batch_size", 700)  # duplicates across batches
    rows = [["email", "name", "company", "attr:shoe_size"]]
    for i in range(10_100):
        person = i % 100
        rows.append(
            [
                f"Person{person}@Example.com" if i % 2 else f"person{person}@example.com",
                f"Name {person}" if i >= 100 else "",
                f"Company {i}" if i >= 5000 else "",
                str(i),
            ]
        )
    job = run_import(write(tmp_path, rows))
    assert job.counts["created"] == 100
    assert job.counts["duplicates"] == 10_000
    assert job.counts["rejected"] == 0
    assert _count(Contact) == 100
    one = _contact("person7@example.com")
    assert one is not None
    # fill_empty: the first value wins, later rows only fill what is empty
    assert one.name == "Name 7" and one.company == "Company 5007" and one.attributes == {"shoe_size": "7"}


def test_overwrite_replaces_and_fill_empty_only_fills(db, tmp_path: Path) -> None:
    with session_scope() as session:
        contacts.upsert(
            session,
            contacts.ContactIn(email="kim@example.com", name="Kim Old", company=None),
            Actor(kind="staff", role="admin"),
        )
    path = write(tmp_path, [["email", "name", "company"], ["kim@example.com", "Kim New", "Acme"]])
    filled = run_import(path, merge="fill_empty")
    assert filled.counts["updated"] == 1
    kim = _contact("kim@example.com")
    assert kim is not None and kim.name == "Kim Old" and kim.company == "Acme"
    assert kim.source_detail["last_update"]["import_id"] == filled.id
    run_import(path, merge="overwrite")
    kim = _contact("kim@example.com")
    assert kim is not None and kim.name == "Kim New"


def test_opt_outs_in_a_file_are_applied_with_their_suppression(db, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            ["Email Address", "UNSUB_TIME", "email_consent", "topic:surveys"],
            ["gone@example.com", "2024-05-01 10:00:00", "", ""],
            ["no@example.com", "", "no", ""],
            ["mixed@example.com", "", "yes", "no"],
        ],
    )
    job = run_import(path)
    assert job.counts["opt_outs"] == 3 and job.counts["created"] == 3
    assert not _allowed("gone@example.com") and not _allowed("no@example.com")
    assert _allowed("mixed@example.com", "special-offers") and not _allowed("mixed@example.com", "surveys")
    with session_scope() as session:
        reasons = {s.reason for s in session.exec(select(Suppression))}
    assert reasons == {"manual_request"}


def test_under_age_rows(db, tmp_path: Path) -> None:
    with session_scope() as session:
        contacts.upsert(
            session, contacts.ContactIn(email="teen@example.com"), Actor(kind="staff", role="admin")
        )
    path = write(
        tmp_path,
        [
            ["email", "date_of_birth", "age_confirmed"],
            ["teen@example.com", "2015-06-01", ""],
            ["kid@example.com", "01/02/2016", ""],
            ["unsure@example.com", "", "no"],
            ["adult@example.com", "1980-02-03", "yes"],
        ],
    )
    job = run_import(path)
    assert job.counts["created"] == 1 and job.counts["rejected"] == 3 and job.counts["erased_underage"] == 1
    found = {row: reason for row, _field, reason in rejects(job.id)}
    assert "erased" in found[2] and "under 18" in found[3] and "confirmed" in found[4]
    assert _contact("teen@example.com") is None and _contact("kid@example.com") is None
    adult = _contact("adult@example.com")
    assert adult is not None and str(adult.date_of_birth) == "1980-02-03" and adult.age_confirmed
    # The erased minor is not stored again by a later file that leaves the birth date out.
    again = run_import(write(tmp_path, [["email", "name"], ["teen@example.com", "Teen Again"]], name="b.csv"))
    assert again.counts["kept_suppressed"] == 1 and again.counts["created"] == 0
    assert _contact("teen@example.com") is None


def test_a_file_cut_off_in_the_middle(db, tmp_path: Path) -> None:
    full = "email,name,city\r\n" + "".join(f"cut{i}@example.com,Name {i},Berlin\r\n" for i in range(50))
    cut_in_row = full[: full.index("cut40@") + 12]  # ends inside row 42's email
    path = tmp_path / "cut.csv"
    path.write_bytes(cut_in_row.encode())
    job = run_import(path)
    assert job.status == "done" and job.counts["created"] == 40 and job.counts["rejected"] == 1
    assert rejects(job.id)[0][0] == 42 and "cut off" in rejects(job.id)[0][2]

    quoted = 'email,name\r\nq1@example.com,"One"\r\nq2@example.com,"Two, and a quote that never'
    path.write_bytes(quoted.encode())
    job = run_import(path)
    assert job.counts["created"] == 1 and job.counts["rejected"] == 1
    assert "cut off" in rejects(job.id)[0][2]

    mid_char = "email,name\r\nu1@example.com,Zoë\r\nu2@example.com,Zoë".encode()[:-1]
    path.write_bytes(mid_char)
    job = run_import(path)
    assert job.counts["created"] == 2
    assert any("middle of a character" in reason for _, _, reason in rejects(job.id))
    assert _contact("u1@example.com").name == "Zoë"  # type: ignore[union-attr]  # still read as UTF-8


def test_a_crashed_import_resumes_after_its_last_batch(db, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(service.get_settings(), "import_batch_size", 100)
    rows = [["email", "email_consent"]] + [[f"r{i % 450}@example.com", "yes"] for i in range(500)]
    path = write(tmp_path, rows)
    import_id = start(path)
    real = service.apply_batch
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker died")
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "apply_batch", crash_on_third)
    with pytest.raises(RuntimeError):
        service.run(import_id, processes=1)
    with session_scope() as session:
        half = service.get(session, import_id)
        assert half.status == "running" and half.rows_done == 200
    monkeypatch.setattr(service, "apply_batch", real)
    service.run(import_id)
    with session_scope() as session:
        job = session.get(Import, import_id)
    assert job is not None and job.status == "done" and job.rows_done == 500
    assert job.counts["created"] == 450 and job.counts["duplicates"] == 50 and job.counts["consents"] == 450
    assert _count(Contact) == 450 and _count(ConsentEvent) == 450
    service.run(import_id)  # a duplicate delivery of the job changes nothing
    assert _count(Contact) == 450


def test_a_partitioned_import_gives_the_same_result(db, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(service.get_settings(), "import_batch_size", 50)

    def rows(domain: str) -> list[list[str]]:
        return [HEADER] + [
            [
                f"w{i % 180}@{domain}" if i % 37 else "broken@",
                f"W{i}",
                "",
                "",
                "yes",
                "",
                "surveys" if i % 2 else "",
            ]
            for i in range(200)
        ]

    inline = run_import(write(tmp_path, rows("example.com"), name="a.csv"), processes=0)
    pooled = run_import(write(tmp_path, rows("example.org"), name="b.csv"), processes=2)
    assert pooled.progress["partitions"] == (1 if db.is_sqlite else 2)  # SQLite has one writer
    assert pooled.counts == inline.counts
    assert inline.counts["created"] == len({i % 180 for i in range(200) if i % 37})
    assert rejects(pooled.id) == rejects(inline.id)


@pytest.mark.parametrize("refused_partition", [0, 1])
def test_a_refused_write_stops_the_import_and_the_retry_finishes_it_exactly_once(
    db, tmp_path: Path, monkeypatch, refused_partition: int
) -> None:
    """The database refuses one row. On PostgreSQL the rows are split between two writers —
    partition 0 in the importing process, partition 1 in a process of its own — and the
    one holding that row fails; on SQLite the one writer fails. Either way the import stops
    with an error and the retry finishes it with every row written exactly once."""
    import sqlalchemy as sa

    from app.db import get_engine

    monkeypatch.setattr(service.get_settings(), "import_batch_size", 100)
    refused = next(
        f"part{i}@example.com"
        for i in range(600, 1200)
        if service.partition_of([f"part{i}@example.com"], 0, 2) == refused_partition
    )
    rows = [["email", "email_consent"]] + [[f"part{i}@example.com", "yes"] for i in range(1200)]
    import_id = start(write(tmp_path, rows))
    engine = get_engine(db)
    refuse = {
        "postgresql": [
            "CREATE FUNCTION refuse_part700() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.email = '{refused}' THEN RAISE EXCEPTION 'refused for the test'; END IF; "
            "RETURN NEW; END $$",
            "CREATE TRIGGER refuse_part700 BEFORE INSERT ON contact "
            "FOR EACH ROW EXECUTE FUNCTION refuse_part700()",
        ],
        "sqlite": [
            f"CREATE TRIGGER refuse_part700 BEFORE INSERT ON contact WHEN NEW.email = '{refused}' "
            "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
        ],
    }[engine.dialect.name]
    with engine.begin() as conn:
        for statement in refuse:
            conn.execute(sa.text(statement))
    try:
        with pytest.raises(Exception, match=r"partition|refused for the test"):
            service.run(import_id, processes=2)
        with session_scope() as session:
            job = service.get(session, import_id)
            assert job.status == "running"
            assert job.progress["partitions"] == (1 if db.is_sqlite else 2)
            assert 0 < job.rows_done < 1200
            assert job.failure_reason and "refused for the test" in job.failure_reason
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER refuse_part700" + ("" if db.is_sqlite else " ON contact")))
            if not db.is_sqlite:
                conn.execute(sa.text("DROP FUNCTION refuse_part700()"))
    done = service.run(import_id, processes=2)
    assert done.status == "done" and done.rows_done == 1200
    with session_scope() as session:
        assert service.get(session, import_id).failure_reason is None
    assert (
        done.counts["created"] == 1200 and done.counts["consents"] == 1200 and done.counts["duplicates"] == 0
    )
    assert _count(Contact) == 1200 and _count(ConsentEvent) == 1200


def test_partition_processes_start_with_the_import_code_loaded() -> None:
    """Partition processes are forked from a fork server that imported the import code
    once, instead of fresh interpreters that each spent over a second importing it."""
    from tests.imports import forked

    context = service._process_context()
    queue = context.Queue()
    child = context.Process(target=forked.report, args=(queue,), daemon=True)
    child.start()
    loaded, cpu = queue.get(timeout=60)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert loaded
    assert cpu < 0.3, f"the process spent {cpu:.2f} s of CPU before running its work"


def test_partitions_with_rejects_in_every_batch_do_not_deadlock(db, tmp_path: Path, monkeypatch) -> None:
    """Rejects reference the import's row (a key-share lock); each batch then updates that
    row. Two partitions doing both must not wait on each other in a cycle."""
    monkeypatch.setattr(service.get_settings(), "import_batch_size", 40)
    rows = [["email", "email_consent"]] + [
        [f"lock{i}@example.com" if i % 3 else f"lock{i}@@broken", "yes"] for i in range(6000)
    ]
    job = run_import(write(tmp_path, rows), processes=2)
    assert job.status == "done" and job.progress["partitions"] == (1 if db.is_sqlite else 2)
    assert job.counts["created"] == 4000 and job.counts["rejected"] == 2000


def test_finished_imports_keep_no_file_and_their_rejects_only_for_a_while(db, tmp_path: Path) -> None:
    from datetime import timedelta

    from app.models import ImportReject, utcnow

    job = run_import(write(tmp_path, [["email"], ["ok@example.com"], ["not-an-address"]]))
    assert job.counts["rejected"] == 1
    assert not Path(job.stored_path).exists()  # the upload is gone once the import is done
    with session_scope() as session:
        assert "not-an-address" in "".join(service.rejects_csv(session, job.id))
        assert service.purge_rejects(session, now=utcnow() + timedelta(days=29)) == 0
        assert service.purge_rejects(session, now=utcnow() + timedelta(days=31)) == 1
    assert _count(ImportReject) == 0
    with session_scope() as session:
        assert service.get(session, job.id).counts["rejected"] == 1  # the counts stay


def test_requeue_picks_up_imports_nobody_is_running(db, tmp_path: Path) -> None:
    from datetime import timedelta

    from app.models import utcnow

    import_id = start(write(tmp_path, [["email"], ["a@example.com"]]))
    with session_scope() as session:
        assert service.requeue_stale(session, now=utcnow()) == []
        assert service.requeue_stale(session, now=utcnow() + timedelta(minutes=11)) == [import_id]


def test_imports_collect_less_often_and_put_the_thresholds_back() -> None:
    import gc

    before = gc.get_threshold()
    with service._fewer_collections():
        assert gc.get_threshold()[0] == 50_000
        with service._fewer_collections():  # a second import in the same process
            assert gc.get_threshold()[0] == 50_000
        assert gc.get_threshold()[0] == 50_000  # the first is still running
    assert gc.get_threshold() == before


def test_people_met_unchanged_in_an_earlier_batch_count_as_duplicates(
    db, tmp_path: Path, monkeypatch
) -> None:
    """Someone already known and unchanged leaves no mark on their contact, only a row in
    the import's table of people met: a later batch of the same import must find it (the
    lookup is skipped only while the import has recorded nobody)."""
    people = [[f"known{i}@example.com", f"Known {i}"] for i in range(20)]
    first = run_import(write(tmp_path, [["email", "name"], *people], name="first.csv"))
    assert first.counts["created"] == 20
    monkeypatch.setattr(service.get_settings(), "import_batch_size", 10)
    again = run_import(write(tmp_path, [["email", "name"], *people, *people[:15]], name="again.csv"))
    assert again.counts["unchanged"] == 20
    assert again.counts["duplicates"] == 15
    assert again.counts["created"] == 0 and again.counts["updated"] == 0
