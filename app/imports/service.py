"""Imports: store the upload, then read, validate and merge it batch by batch.

Rules (DESIGN.md invariants 3 and 6):
- the file is stored and the import recorded (``stored``) before any row is read; a
  failure leaves it resumable from the last committed batch;
- every row either lands or is rejected with its row number, column and reason; the
  rejects download neutralises spreadsheet formulas;
- no import ever lifts an opt-out or a suppression (``app.imports.batch``);
- each batch commits together with the progress and counts, so a crashed import resumes
  exactly where it stopped, and a re-run of the same file changes nothing.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import logging
import multiprocessing
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import islice, repeat
from multiprocessing.context import ForkServerContext, SpawnContext
from operator import eq, itemgetter, mod
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import delete, text
from sqlmodel import Session, col, select

from app.auth import audit
from app.auth.actor import Actor
from app.config import Settings, get_settings
from app.contacts.identifiers import normalise_email
from app.db import after_commit, session_scope
from app.errors import NotFound, ValidationProblem
from app.imports import csvfile, mapping
from app.imports.batch import Job, Seen, apply_batch
from app.imports.columns import prepare_batch
from app.imports.prepare import Context, Lead, Reject
from app.models import Import, ImportReject, ImportSeen, Topic, utcnow
from app.models.base import Source

log = logging.getLogger(__name__)

COUNT_KEYS = (
    "created",
    "updated",
    "unchanged",
    "rejected",
    "duplicates",
    "kept_suppressed",
    "consents",
    "opt_outs",
    "erased_underage",
)
IMPORT_SOURCES = (Source.REGISTRATION, Source.SURVEY, Source.SURVEY_PARTIAL, Source.EVENT, Source.IMPORT)
#: A running import whose last batch is older than this is resumed by the scheduler.
STALE_AFTER = timedelta(minutes=10)


class ImportOptions(BaseModel):
    """What an import is told besides its file. Everything is optional."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["registration", "survey", "survey_partial", "event", "import"] = "import"
    #: Where the leads came from (form, event, campaign…), kept on each new contact.
    source_detail: Annotated[str, StringConstraints(max_length=200)] | None = None
    #: ``fill_empty``: only empty fields are filled; ``overwrite``: non-empty cells replace.
    merge: Literal["fill_empty", "overwrite"] = "fill_empty"
    #: {column header: target}; other columns are recognised from their header.
    mapping: dict[Annotated[str, StringConstraints(max_length=200)], str] = Field(default_factory=dict)
    encoding: Annotated[str, StringConstraints(max_length=40)] | None = None
    delimiter: Literal[",", ";", "\t", "|"] | None = None
    #: Topics a row with ``email_consent`` yes subscribes to when it names none.
    topics: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=50
    )
    #: The consent wording the people were shown, and its version (rows may carry their own).
    consent_text: Annotated[str, StringConstraints(max_length=5000)] | None = None
    consent_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    #: ``03/04/1990``: 3 April (day first, default) or 4 March.
    day_first: bool = True
    #: Country (ISO 3166 alpha-2) for phone numbers without +<country code>.
    phone_region: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = None


def _imports_dir(settings: Settings) -> Path:
    path = settings.var_dir / "imports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _topic_names(session: Session) -> dict[str, str]:
    names: dict[str, str] = {}
    for topic in session.exec(select(Topic)):
        names[topic.slug.lower()] = topic.slug
        if topic.name:
            names.setdefault(topic.name.lower(), topic.slug)
    return names


def _check_topics(session: Session, options: ImportOptions, plan: mapping.Mapping) -> None:
    names = _topic_names(session)
    wanted = [*options.topics, *(t.removeprefix("topic:") for t in plan.targets if t.startswith("topic:"))]
    unknown = [t for t in wanted if t.strip().lower() not in names]
    if unknown:
        raise ValidationProblem(
            f"unknown topic {unknown[0]!r} (known: {', '.join(sorted(set(names.values())))})", field="topics"
        )


def create(
    session: Session,
    upload: BinaryIO,
    filename: str,
    options: ImportOptions,
    actor: Actor,
    *,
    enqueue: bool = True,
) -> Import:
    """Store the upload and record the import; the job starts after the commit."""
    settings = get_settings()
    target = _imports_dir(settings) / f"{uuid.uuid4().hex}.csv"
    digest = hashlib.sha256()
    size = 0
    try:
        with target.open("wb") as out:
            while chunk := upload.read(1 << 20):
                size += len(chunk)
                if size > settings.import_max_bytes:
                    raise ValidationProblem(
                        f"the file is larger than {settings.import_max_bytes // (1 << 20)} MB", field="file"
                    )
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise ValidationProblem("the file is empty", field="file")
        fmt = csvfile.detect(target, encoding=options.encoding, delimiter=options.delimiter)
        plan = mapping.build(fmt.header, options.mapping)
        _check_topics(session, options, plan)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    job = Import(
        filename=(filename or "upload.csv")[-255:],
        stored_path=str(target.resolve()),
        sha256=digest.hexdigest(),
        size_bytes=size,
        source=options.source,
        mapping=plan.describe(),
        merge_policy=options.merge,
        options={
            **options.model_dump(exclude={"mapping", "merge", "source"}),
            "explicit": dict(options.mapping),
            "encoding_detected": fmt.encoding,
            "delimiter_detected": fmt.delimiter,
        },
        status="stored",
        counts={key: 0 for key in COUNT_KEYS},
        created_by_token_id=actor.token_id,
    )
    session.add(job)
    session.flush()
    assert job.id is not None
    if actor.kind == "staff":
        audit.record(
            session,
            actor,
            "import.create",
            target_type="import",
            target_id=job.id,
            detail={"filename": job.filename, "size": size, "sha256": job.sha256},
        )
    if enqueue:
        import_id = job.id
        after_commit(session, lambda: _enqueue(import_id))
    return job


def _enqueue(import_id: int) -> None:
    from workers.imports import run_import

    run_import.send(import_id)


def get(session: Session, import_id: int) -> Import:
    job = session.get(Import, import_id)
    if job is None:
        raise NotFound(f"import {import_id} not found")
    return job


# --------------------------------------------------------------------------- running
@dataclass(frozen=True, slots=True)
class Progress:
    status: str
    rows_done: int
    rows_total: int | None
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class _Work:
    """What a partition needs to run: plain data, so it can cross to another process."""

    import_id: int
    path: str
    fmt: csvfile.FileFormat
    ctx: Context
    job: Job
    batch_size: int
    #: Position of the email column (None: no email column, one partition only).
    email_at: int | None
    #: The file holds no quotes: each line is one record.
    plain: bool = False


def _progress(job: Import) -> Progress:
    return Progress(job.status, job.rows_done, job.rows_total, dict(job.counts or {}))


def _setup(import_id: int, settings: Settings) -> _Work | Progress:
    with session_scope() as session:
        job = get(session, import_id)
        if job.status in ("done", "failed"):
            return _progress(job)
        job.status = "running"
        job.started_at = job.started_at or utcnow()
        job.heartbeat_at = utcnow()
        path = Path(job.stored_path)
        options = dict(job.options or {})
        explicit = dict(options.get("explicit") or {})
        actor = Actor(kind="staff", token_id=job.created_by_token_id)
        topics = _topic_names(session)
        filename, source, policy, rows_total = job.filename, job.source, job.merge_policy, job.rows_total
    try:
        if not path.exists():
            raise ValidationProblem("the stored upload is missing", field="file")
        fmt = csvfile.detect(path, encoding=options.get("encoding"), delimiter=options.get("delimiter"))
        plan = mapping.build(fmt.header, explicit)
        if rows_total is None:
            rows_total = csvfile.count_records(path, fmt)
            with session_scope() as session:
                get(session, import_id).rows_total = rows_total
    except ValidationProblem as problem:
        return _fail(import_id, str(problem))
    ctx = Context(
        targets=plan.targets,
        hash_key=settings.address_hash_key(),
        topics=topics,
        default_topics=tuple(topics[t.lower()] for t in options.get("topics") or () if t.lower() in topics),
        day_first=bool(options.get("day_first", True)),
        region=(options.get("phone_region") or settings.default_phone_region or "").upper(),
        minimum_age=settings.minimum_age,
        today=date.today(),
        consent_text=options.get("consent_text"),
        consent_version=options.get("consent_version"),
        check_deliverability=settings.check_deliverability,
    )
    job_info = Job(
        import_id=import_id,
        filename=filename,
        source=source,
        policy=policy,
        actor=actor,
        hash_key=ctx.hash_key,
        consent_text=ctx.consent_text,
        consent_version=ctx.consent_version,
        detail=options.get("source_detail"),
    )
    email_at = plan.targets.index("email") if "email" in plan.targets else None
    plain = not csvfile.has_quotes(path, fmt.encoding)
    return _Work(import_id, str(path), fmt, ctx, job_info, settings.import_batch_size, email_at, plain)


def _partitions(work: _Work, wanted: int, settings: Settings) -> int:
    """How many processes write this import: decided once and kept, so a resumed import
    splits its rows the same way. SQLite has one writer; small files need no helpers."""
    with session_scope() as session:
        job = get(session, work.import_id)
        progress = dict(job.progress or {})
        if "partitions" not in progress:
            many = (
                wanted > 1
                and not settings.is_sqlite
                and work.email_at is not None
                and (job.rows_total or 0) >= 4 * work.batch_size
            )
            progress = {"partitions": wanted if many else 1, "done": {}}
            job.progress = progress
        return int(progress["partitions"])


def partition_of(cells: list[str], email_at: int | None, partitions: int) -> int:
    """Rows for the same person always go to the same partition (by their email key)."""
    if partitions == 1 or email_at is None or email_at >= len(cells):
        return 0
    return _partition_of_email(cells[email_at], partitions)


def line_owner(email_at: int, delimiter: str, partitions: int, partition: int) -> csvfile.Owner:
    """Which raw lines of a file without quotes (a line's cells are what lies between
    delimiters) are ``partition``'s: :func:`partition_of` of their cells is ``partition``.
    Every partition runs it on every line of the file, so the usual stretch — plain ASCII
    addresses — is answered with ``map`` over C functions, with no Python code per line."""

    def owns(lines: list[str]) -> Iterable[bool]:
        if email_at == 0:
            cells: Iterable[str] = map(itemgetter(0), map(str.partition, lines, repeat(delimiter)))
        else:
            cells = [
                found[email_at] if len(found) > email_at else ""
                for found in map(str.split, lines, repeat(delimiter), repeat(email_at + 1))
            ]
        raw = list(map(str.strip, cells))
        keys = list(map(str.lower, raw))
        joined = "".join(keys)
        if joined.isascii() and '"' not in joined and "xn--" not in joined:
            # What the normalised key of a plain ASCII address is (and crc32(b"") is 0).
            shares = map(mod, map(zlib.crc32, map(str.encode, keys)), repeat(partitions))
        else:
            shares = map(_partition_of_email, raw, repeat(partitions))
        return map(eq, shares, repeat(partition))

    return owns


def _partition_of_email(cell: str, partitions: int) -> int:
    raw = cell.strip()
    if not raw:
        return 0
    lowered = raw.lower()
    if raw.isascii() and '"' not in raw and "xn--" not in lowered:
        key = lowered  # what the normalised key of a plain ASCII address is
    else:
        try:
            key = normalise_email(raw).key
        except ValidationProblem:
            return 0  # rejected there
    return zlib.crc32(key.encode()) % partitions


def run(
    import_id: int,
    *,
    processes: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """Run (or resume) an import to the end. Safe to call twice: a finished import is left
    as it is, a running one continues after its last committed batches.

    On PostgreSQL, ``processes`` (default: the ``import_processes`` setting) processes each
    take the rows of a share of the people (by a hash of their email), validate them and
    write them, so both validation and the database's work spread over the cores."""
    settings = get_settings()
    wanted = settings.import_processes if processes is None else processes
    if wanted > 1 and not settings.is_sqlite:
        # Starts the fork server (if this process has none yet) while the file is checked and
        # counted below, on the other core: the server imports what a partition needs once.
        _process_context()
    work = _setup(import_id, settings)
    if isinstance(work, Progress):
        return work
    partitions = _partitions(work, wanted, settings)
    if partitions == 1:
        _run_partition_noting_errors(work, 0, 1, on_progress)
    else:
        # Partition 0 runs here, in a thread, the others in processes of their own, forked
        # from the fork server (see _process_context).
        context = _process_context()
        children = [
            context.Process(target=_partition_process, args=(settings, work, p, partitions), daemon=True)
            for p in range(1, partitions)
        ]
        for child in children:
            child.start()
        failures: list[BaseException] = []

        def run_first() -> None:
            try:
                _run_partition_noting_errors(work, 0, partitions, None)
            except BaseException as exc:  # noted on the import; raised below
                failures.append(exc)

        first = threading.Thread(target=run_first, name=f"import-{import_id}-partition-0", daemon=True)
        first.start()
        while first.is_alive() or any(child.is_alive() for child in children):
            first.join(timeout=0.5 / partitions)
            for child in children:
                child.join(timeout=0.5 / partitions)
            if on_progress is not None:
                with session_scope() as session:
                    on_progress(_progress(get(session, import_id)))
        failed = [0] * bool(failures) + [p for p, child in enumerate(children, 1) if child.exitcode != 0]
        if failed:
            raise RuntimeError(
                f"import {import_id}: partition(s) {failed} failed; a retry resumes them"
            ) from (failures[0] if failures else None)
    return _finish(import_id, work.fmt)


def _process_context() -> ForkServerContext | SpawnContext:
    """Where partition processes come from: on Unix a fork server, started once per process
    with this module (and so the models, SQLAlchemy, psycopg, email-validator…) imported,
    then forked from for each partition of each import: a fresh interpreter spent about
    1.7 s of CPU importing all that, for every partition. Forking this process itself would
    be unsafe (it has threads: the broker's, the writer's); the fork server has none.
    Elsewhere, fresh interpreters (``spawn``)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return context


def _partition_process(settings: Settings, work: _Work, partition: int, partitions: int) -> None:
    from app.config import use_settings

    use_settings(settings)
    gc.freeze()  # what the process imported lives to its end: no collection need look at it
    _run_partition_noting_errors(work, partition, partitions, None)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """An import allocates millions of short-lived objects with no cycles among them (cells,
    leads, COPY text); the default collector thresholds made collections a third of its
    Python time. Collect less often while it runs (memory stays bounded: batches are)."""
    with _GC_LOCK:
        if not _GC_USERS:
            _GC_USERS.append(gc.get_threshold())
            gc.set_threshold(50_000, 20, 100)
        _GC_USERS.append(None)
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_USERS.pop()
            if len(_GC_USERS) == 1:  # the last import of this process: thresholds as they were
                gc.set_threshold(*_GC_USERS.pop())


_GC_LOCK = threading.Lock()
#: The thresholds before the first running import, then one entry per running import.
_GC_USERS: list[Any] = []


def _run_partition_noting_errors(
    work: _Work, partition: int, partitions: int, on_progress: Callable[[Progress], None] | None
) -> None:
    """Run a partition; an error is noted on the import (it stays ``running``: the job's
    retry resumes it) and raised again."""
    try:
        with _fewer_collections():
            _run_partition(work, partition, partitions, on_progress)
    except Exception as exc:
        log.exception("import %s, partition %s failed", work.import_id, partition)
        try:
            with session_scope() as session:
                note = f"partition {partition} of {partitions} stopped, will be retried: {exc}"
                get(session, work.import_id).failure_reason = note[:2000]
        except Exception:  # the database itself may be what failed
            log.exception("could not note the failure of import %s", work.import_id)
        raise


def _run_partition(
    work: _Work, partition: int, partitions: int, on_progress: Callable[[Progress], None] | None
) -> None:
    """Read this partition's rows and write them batch by batch, in file order. A thread
    writes one batch while this one reads and prepares the next, so the database's time
    overlaps the Python work; at most two batches are held at once."""
    with session_scope() as session:
        done = dict((get(session, work.import_id).progress or {}).get("done") or {})
        # People are split among partitions by key: only this import's own earlier runs
        # can have recorded any of this partition's people as met.
        seen = Seen(
            session.exec(
                select(ImportSeen.key_hash).where(ImportSeen.import_id == work.import_id).limit(1)
            ).first()
            is not None
        )
    after = int(done.get(str(partition), 1))  # row 1 is the header
    batch: list[tuple[int, list[str], str | None]] = []
    seen_rows = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"import-{work.import_id}-writer") as writer:
        pending: Future[Progress] | None = None

        def settle() -> None:
            nonlocal pending
            if pending is not None:
                progress = pending.result()
                pending = None
                if on_progress is not None:
                    on_progress(progress)

        def flush() -> None:
            nonlocal batch, seen_rows, pending
            if not batch and not seen_rows:
                return
            last = batch[-1][0] if batch else after
            items = prepare_batch(batch, work.ctx)
            settle()
            pending = writer.submit(_write_batch, work, partition, items, seen_rows, last, seen)
            batch, seen_rows = [], 0

        last_row = after
        owner: csvfile.Owner | None = None
        if partitions > 1 and work.plain and work.email_at is not None:
            # Each line is one record: only this partition's lines are parsed. A line the
            # CSV reader refuses belongs to the partition its email cell names.
            owner = line_owner(work.email_at, work.fmt.delimiter, partitions, partition)
        found = csvfile.records(Path(work.path), work.fmt, skip=after - 1, owner=owner)
        if owner is not None:  # every record found is this partition's (and after ``after``)
            while batch := list(islice(found, work.batch_size)):
                last_row, seen_rows = batch[-1].row, len(batch)
                flush()
        else:
            for record in found:
                if record.row <= after:
                    continue
                last_row = record.row
                if partitions > 1:  # every record was read: keep this partition's
                    if record.error is None:
                        if partition_of(record.cells, work.email_at, partitions) != partition:
                            continue
                    elif partition != 0:
                        continue
                batch.append(record)
                seen_rows += 1
                if len(batch) >= work.batch_size:
                    flush()
        if batch:
            flush()
        settle()
    if last_row > after:
        _mark_done(work.import_id, partition, last_row)


def _mark_done(import_id: int, partition: int, row: int) -> None:
    with session_scope() as session:
        job = _locked(session, import_id)
        progress = dict(job.progress or {})
        done = dict(progress.get("done") or {})
        done[str(partition)] = max(row, int(done.get(str(partition), 1)))
        job.progress = {**progress, "done": done}


def _locked(session: Session, import_id: int) -> Import:
    """The import's row, locked against the other partitions' updates. ``FOR NO KEY
    UPDATE``: the foreign-key checks of the rows a batch inserts (rejects) hold a key-share
    lock on it, which a plain ``FOR UPDATE`` would wait on — two partitions, a deadlock."""
    job = session.get(Import, import_id, with_for_update={"key_share": True})
    if job is None:
        raise NotFound(f"import {import_id} not found")
    return job


def _write_batch(
    work: _Work, partition: int, items: list[Lead | Reject], n: int, last_row: int, seen: Seen | None = None
) -> Progress:
    """One batch, committed together with the partition's position and the counts.

    On PostgreSQL the commit does not wait for its WAL to reach the disk
    (``synchronous_commit = off`` for this transaction only): a crash may then lose the
    last batches, but always together with the position that says they were written, so
    the resumed import writes them again; nothing it did was acknowledged to anyone."""
    with session_scope() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SET LOCAL synchronous_commit = off"))
        added = apply_batch(session, work.job, items, seen)
        record = _locked(session, work.import_id)
        counts = Counter(record.counts or {})
        counts.update(added)
        record.counts = {**{k: 0 for k in COUNT_KEYS}, **dict(counts)}
        record.rows_done += n
        progress = dict(record.progress or {})
        progress["done"] = {**dict(progress.get("done") or {}), str(partition): last_row}
        record.progress = progress
        record.heartbeat_at = utcnow()
        return _progress(record)


def _finish(import_id: int, fmt: csvfile.FileFormat) -> Progress:
    with session_scope() as session:
        job = get(session, import_id)
        if fmt.truncated_character:
            session.add(
                ImportReject(
                    import_id=import_id,
                    row_number=job.rows_done + 1,
                    field=None,
                    reason="the file ends in the middle of a character (was it cut off?)",
                )
            )
        session.execute(delete(ImportSeen).where(col(ImportSeen.import_id) == import_id))
        job.status = "done"
        job.failure_reason = None  # a note left by a failed attempt that was then resumed
        job.finished_at = utcnow()
        _forget_upload(session, job)
        job.heartbeat_at = job.finished_at
        audit.record(
            session,
            Actor(kind="system"),
            "import.done",
            target_type="import",
            target_id=import_id,
            detail=dict(job.counts or {}),
        )
        return Progress(job.status, job.rows_done, job.rows_total, dict(job.counts or {}))


def _fail(import_id: int, reason: str) -> Progress:
    with session_scope() as session:
        job = get(session, import_id)
        job.status = "failed"
        job.failure_reason = reason
        job.finished_at = utcnow()
        _forget_upload(session, job)
        session.execute(delete(ImportSeen).where(col(ImportSeen.import_id) == import_id))
        return Progress(job.status, job.rows_done, job.rows_total, dict(job.counts or {}))


def _forget_upload(session: Session, job: Import) -> None:
    """A finished import no longer needs its file (the rejects keep their own cells, the
    import its checksum): personal data is not kept longer than the work needs."""
    path = Path(job.stored_path)
    after_commit(session, lambda: path.unlink(missing_ok=True))


def purge_rejects(session: Session, *, now: Any = None) -> int:
    """Rejected rows hold personal data too: they are deleted ``import_rejects_days`` after
    their import finished. Returns how many were deleted."""
    days = get_settings().import_rejects_days
    cutoff = (now or utcnow()) - timedelta(days=days)
    old = select(Import.id).where(col(Import.finished_at).is_not(None), col(Import.finished_at) < cutoff)
    result = session.execute(delete(ImportReject).where(col(ImportReject.import_id).in_(old)))
    return int(getattr(result, "rowcount", 0) or 0)


def requeue_stale(session: Session, *, now: Any = None) -> list[int]:
    """Imports stored but never started (an embedded broker forgets its queue on restart)
    or running without a batch for a while (a dead worker): enqueue them again."""
    now = now or utcnow()
    stmt = select(Import).where(col(Import.status).in_(["stored", "running"]))
    stale: list[int] = []
    for job in session.exec(stmt):
        last = job.heartbeat_at or job.created_at
        if now - last >= STALE_AFTER:
            assert job.id is not None
            job.heartbeat_at = now
            stale.append(job.id)
    for import_id in stale:
        after_commit(session, lambda i=import_id: _enqueue(i))  # type: ignore[misc]
    return stale


# --------------------------------------------------------------------------- rejects
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe (OWASP)."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def rejects_csv(session: Session, import_id: int) -> Iterator[str]:
    """The rejected rows as CSV: row, column, reason, then the row's own cells."""
    job = get(session, import_id)
    header = list((job.mapping or {}).get("header") or [])
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    path = Path(job.stored_path)
    if not header and path.exists():
        try:
            header = csvfile.detect(path).header
        except ValidationProblem:
            header = []
    writer.writerow(["row", "column", "reason", *(neutralise(h) for h in header)])
    yield flush()
    stmt = (
        select(ImportReject)
        .where(ImportReject.import_id == import_id)
        .order_by(col(ImportReject.row_number), col(ImportReject.id))
    )
    for reject in session.exec(stmt.execution_options(yield_per=1000)):
        cells = json.loads(reject.raw) if reject.raw else []
        writer.writerow(
            [
                reject.row_number,
                reject.field or "",
                neutralise(reject.reason),
                *(neutralise(str(c)) for c in cells),
            ]
        )
        yield flush()
