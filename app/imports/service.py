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
import hashlib
import io
import json
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import delete
from sqlmodel import Session, col, select

from app.auth import audit
from app.auth.actor import Actor
from app.config import Settings, get_settings
from app.db import after_commit, session_scope
from app.errors import NotFound, ValidationProblem
from app.imports import csvfile, mapping
from app.imports.batch import Job, apply_batch
from app.imports.prepare import Context, Lead, Reject, prepare_batch
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
def _batches(
    records: Iterable[csvfile.Record], size: int
) -> Iterator[list[tuple[int, list[str], str | None]]]:
    batch: list[tuple[int, list[str], str | None]] = []
    for record in records:
        batch.append((record.row, record.cells, record.error))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prepared(
    batches: Iterator[list[tuple[int, list[str], str | None]]], ctx: Context, processes: int
) -> Iterator[tuple[int, list[Lead | Reject]]]:
    """(records in the batch, prepared batch), in file order. With ``processes``, batches
    are prepared in worker processes, a bounded number ahead of the writer."""
    if processes <= 0:
        for batch in batches:
            yield len(batch), prepare_batch(batch, ctx)
        return
    first = next(batches, None)
    if first is None:
        return
    second = next(batches, None)
    if second is None:  # one batch: not worth a process
        yield len(first), prepare_batch(first, ctx)
        return
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        pending: deque[tuple[int, Future[list[Lead | Reject]]]] = deque()
        for batch in (first, second):
            pending.append((len(batch), pool.submit(prepare_batch, batch, ctx)))
        for batch in batches:
            if len(pending) >= processes * 2 + 1:
                n, future = pending.popleft()
                yield n, future.result()
            pending.append((len(batch), pool.submit(prepare_batch, batch, ctx)))
        while pending:
            n, future = pending.popleft()
            yield n, future.result()


@dataclass(frozen=True, slots=True)
class Progress:
    status: str
    rows_done: int
    rows_total: int | None
    counts: dict[str, int]


def run(
    import_id: int,
    *,
    processes: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """Run (or resume) an import to the end. Safe to call twice: a finished import is left
    as it is, a running one continues from its last committed batch."""
    settings = get_settings()
    with session_scope() as session:
        job = get(session, import_id)
        if job.status in ("done", "failed"):
            return Progress(job.status, job.rows_done, job.rows_total, dict(job.counts or {}))
        job.status = "running"
        job.started_at = job.started_at or utcnow()
        job.heartbeat_at = utcnow()
        path = Path(job.stored_path)
        options = dict(job.options or {})
        explicit = dict(options.get("explicit") or {})
        actor = Actor(kind="staff", token_id=job.created_by_token_id)
        topics = _topic_names(session)
        skip = job.rows_done
        info = (job.filename, job.source, job.merge_policy, job.rows_total)
    filename, source, policy, rows_total = info
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
    )
    if processes is None:
        processes = settings.import_processes
    batches = _batches(csvfile.records(path, fmt, skip=skip), settings.import_batch_size)
    progress = Progress("running", skip, rows_total, {})
    for n, items in _prepared(batches, ctx, processes):
        progress = _write_batch(import_id, job_info, items, n)
        if on_progress is not None:
            on_progress(progress)
    return _finish(import_id, fmt)


def _write_batch(import_id: int, job: Job, items: list[Lead | Reject], n: int) -> Progress:
    with session_scope() as session:
        added = apply_batch(session, job, items)
        record = get(session, import_id)
        counts = Counter(record.counts or {})
        counts.update(added)
        record.counts = {**{k: 0 for k in COUNT_KEYS}, **dict(counts)}
        record.rows_done += n
        record.heartbeat_at = utcnow()
        return Progress(record.status, record.rows_done, record.rows_total, dict(record.counts))


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
        job.finished_at = utcnow()
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
        session.execute(delete(ImportSeen).where(col(ImportSeen.import_id) == import_id))
        return Progress(job.status, job.rows_done, job.rows_total, dict(job.counts or {}))


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
