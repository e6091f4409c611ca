"""RFC 8058 one-click opt-outs, written many at a time, answered once settled.

Mail providers POST one-click unsubscribes in bursts, often while a campaign is sending
from the same process. Each request verifies its token on the event loop and hands the
opt-out to the writer thread, which takes whatever has queued up and writes it in one unit
of work (``service.write_one_clicks``: five statements and one commit for the whole batch). In
the same transaction it looks who has a message in flight that began before the opt-out
(``service.in_flight_after_opt_out``, the protocol of ``app.delivery.service.settle``).
Everyone else is answered right after the commit; the settler thread answers the others
once their message has gone (one query per round for all of them, instead of a polling
thread per request), so that a message in flight delays only its own recipient. Nobody
is answered before their opt-out has committed and nothing is in flight for them any
more: DESIGN invariant 2.

A batch that fails is retried one request at a time, so one bad request cannot fail
another; the rare requests that are not the common case (a link mailed by the "unsubscribe
by email address" form, a person without an email address) take the general path,
``service.one_click``, in the thread pool."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.auth.actor import Actor
from app.config import Settings, get_settings
from app.db import begin_immediate, session_scope
from app.recipients import service
from app.recipients.tokens import BadToken, TokenKind, read_url_token

log = logging.getLogger("listwarden.recipients")

#: What a request is told: the result, or the exception that stopped it.
Answer = service.OneClickResult | BaseException
#: At most this many opt-outs in one transaction.
MAX_BATCH = 200
#: Writer threads on PostgreSQL (see ``Writers``), each on its own stripe of the claim lock.
#: One: a batch now costs a few round trips (``service.commit_and_look``), and claims
#: hold the lock only while the server runs them, so one writer's larger batches served
#: more one-clicks with a shorter tail than four writers' small ones (bench/unsubscribe.py).
PG_WRITERS = 1
#: How often the settler looks again at people with a message in flight.
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class _Job:
    click: service.OneClick
    answer: Callable[[Answer], None]


@dataclass
class _Waiting:
    job: _Job
    deadline: float


class _Worker(ABC):
    """A daemon thread started on first use (again if it died), fed by a queue."""

    name = "listwarden-worker"

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[_Job]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, jobs: list[_Job]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put(jobs)

    @abstractmethod
    def _run(self) -> None:
        """The thread's loop, defined by each kind of worker."""


class Settler(_Worker):
    """Answers committed opt-outs of people who had a message in flight, once it is sent
    (no new claim can take them: see ``service.in_flight_after_opt_out``)."""

    name = "listwarden-one-click-settle"

    def _run(self) -> None:
        waiting: dict[int, list[_Waiting]] = {}
        while True:
            arrived: list[_Job] = []
            try:
                arrived.extend(self._queue.get(timeout=POLL_SECONDS) if waiting else self._queue.get())
                while True:
                    arrived.extend(self._queue.get_nowait())
            except queue.Empty:
                pass
            try:
                self._round(get_settings(), arrived, waiting)
            except Exception:  # the opt-outs are committed: answer, as settle does on a timeout
                log.exception("waiting for in-flight sends after one-click opt-outs failed")
                for job in arrived:
                    job.answer(True)
                for entries in waiting.values():
                    for entry in entries:
                        entry.job.answer(True)
                waiting.clear()

    @staticmethod
    def _round(settings: Settings, arrived: list[_Job], waiting: dict[int, list[_Waiting]]) -> None:
        deadline = time.monotonic() + settings.optout_settle_seconds
        for job in arrived:
            waiting.setdefault(job.click.contact_id, []).append(_Waiting(job, deadline))
        with session_scope(settings) as session:
            busy = service.in_flight(session, sorted(waiting))
        now = time.monotonic()
        for contact_id in list(waiting):
            entries = waiting[contact_id]
            if contact_id in busy:
                late = [e for e in entries if e.deadline <= now]
                if not late:
                    continue
                log.warning("one-click opt-out acknowledged with a delivery still claimed for %s", contact_id)
                for entry in late:
                    entry.job.answer(True)
                waiting[contact_id] = [e for e in entries if e.deadline > now]
                if waiting[contact_id]:
                    continue
            else:
                for entry in entries:
                    entry.job.answer(True)
            del waiting[contact_id]


class Writer(_Worker):
    """Writes queued one-click opt-outs, many per transaction."""

    name = "listwarden-one-click"

    def __init__(self, settler: Settler, stripe: int = 0) -> None:
        super().__init__()
        self.settler = settler
        self.stripe = stripe  # of the claim lock (``in_flight_after_opt_out``)

    def _run(self) -> None:
        while True:
            batch = list(self._queue.get())
            try:
                while len(batch) < MAX_BATCH:
                    batch.extend(self._queue.get_nowait())
            except queue.Empty:
                pass
            try:
                self._write(batch)
            except BaseException as exc:  # never let the writer die with requests waiting
                log.exception("one-click writer failed")
                for job in batch:
                    job.answer(exc)

    def _write(self, batch: list[_Job]) -> None:
        settings = get_settings()
        clicks = [job.click for job in batch]
        busy: set[int] | None = None
        opted_out: list[int] = []
        unsettled: Exception | None = None
        try:
            with service.sqlite_writes(settings), session_scope(settings) as session:
                begin_immediate(session)  # SQLite: the write lock first, without the busy handler's sleeps
                results = service.write_one_clicks(session, clicks)
                opted_out = _opted_out(clicks, results)
                if settings.is_sqlite:  # writers take turns: look in this transaction
                    busy = service.in_flight_after_opt_out(session, opted_out)
                else:  # commit, then the claims in progress, in one round trip (see service)
                    try:
                        busy = service.commit_and_look(session, opted_out, stripe=self.stripe)
                    except Exception as exc:
                        unsettled = exc
        except Exception as exc:
            if len(batch) > 1:
                log.info("one-click batch of %d failed (%s); one at a time", len(batch), type(exc).__name__)
                for job in batch:
                    self._write([job])
                return
            try:  # a race lost to a concurrent request: once more, on fresh data
                results, busy = service.run(lambda s: _write_and_look(s, clicks))
            except Exception as again:
                batch[0].answer(again)
                return
        if unsettled is not None:  # perhaps committed, but not known to be settled: no 200
            log.error(
                "one-click opt-outs: committing or looking for messages in flight failed: %r", unsettled
            )
            for job in batch:
                job.answer(unsettled)
            return
        assert busy is not None
        waiting = []
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, bool) and job.click.contact_id in busy:
                waiting.append(job)  # answered once the message in flight has gone
            else:
                job.answer(result)
        if waiting:
            self.settler.put(waiting)


def _write_and_look(
    session: Session, clicks: list[service.OneClick]
) -> tuple[list[service.OneClickResult], set[int]]:
    results = service.write_one_clicks(session, clicks)
    return results, service.in_flight_after_opt_out(session, _opted_out(clicks, results))


def _opted_out(clicks: list[service.OneClick], results: list[service.OneClickResult]) -> list[int]:
    """Who is opted out once this batch commits: those opted out now (True) and those who
    were already (False: a second click, perhaps while the first one's answer still waits
    for a message in flight; its answer waits for that message too)."""
    return [c.contact_id for c, result in zip(clicks, results, strict=True) if isinstance(result, bool)]


class Writers:
    """The writer threads: one on SQLite (one writer at a time anyway), ``PG_WRITERS`` on
    PostgreSQL (with more than one, a batch is written while another commits). A person's
    clicks always go to the same writer, so that two clicks of one person are never
    written by two transactions at once (the second sees the first and changes nothing,
    as with one writer)."""

    def __init__(self, settler: Settler) -> None:
        self.settler = settler
        self._writers: list[Writer] = []
        self._lock = threading.Lock()

    def _for(self, settings: Settings) -> list[Writer]:
        count = 1 if settings.is_sqlite else PG_WRITERS
        if len(self._writers) < count:
            with self._lock:
                while len(self._writers) < count:
                    self._writers.append(Writer(self.settler, stripe=len(self._writers)))
        return self._writers[:count]

    def put(self, job: _Job) -> None:
        writers = self._for(get_settings())
        writers[job.click.contact_id % len(writers)].put([job])


WRITERS = Writers(Settler())


async def one_click(token: str, actor: Actor) -> bool:
    """Opt out for a one-click POST; returns once committed and settled. Raises
    ``service.LinkProblem`` for a token that is not good."""
    try:
        payload = read_url_token(token, TokenKind.UNSUBSCRIBE)
    except BadToken:
        payload = None
    if payload is not None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()

        def answer(result: Answer) -> None:
            loop.call_soon_threadsafe(_resolve, future, result)

        WRITERS.put(_Job(service.OneClick(payload.contact_id, payload.delivery_id, actor), answer))
        result = await future
        if isinstance(result, BaseException):
            raise result
        if result is not None:
            return result
    return await run_in_threadpool(service.run, lambda s: service.one_click(s, token, actor))


def _resolve(future: asyncio.Future[Answer], result: Answer) -> None:
    if not future.done():  # the client may have gone away
        future.set_result(result)
