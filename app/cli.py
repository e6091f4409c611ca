"""The ``listwarden`` command (Typer). Every command reads the same LISTWARDEN_ settings."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from app.config import get_settings
from app.models import Role

app = typer.Typer(
    help="Listwarden: email marketing lists that never ignore an opt-out.", no_args_is_help=True
)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
campaign_app = typer.Typer(
    help="Campaigns: list, send (with progress), pause, resume, cancel.", no_args_is_help=True
)
app.add_typer(campaign_app, name="campaign")
user_app = typer.Typer(help="Staff users of the web UI.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")


def _progress_columns() -> tuple[Any, ...]:
    """A bar with done / total, a detail line and the time left (long CLI work)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )


def _prepare() -> None:
    from app.main import prepare_database

    prepare_database(get_settings())


def _freeze_startup_objects() -> None:
    """Move everything made at start-up (modules, compiled templates, mappers) out of the
    garbage collector's sight, and collect the youngest generation less often: a send
    allocates many short-lived containers, and each collection would walk them again."""
    import gc

    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 10_000), gen1, gen2)


@app.command()
def migrate() -> None:
    """Apply the database migrations (SQLite or PostgreSQL)."""
    from app.migrate import upgrade

    settings = get_settings()
    upgrade(settings)
    typer.echo(f"database is up to date: {settings.resolved_database_url.split('@')[-1]}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Run the API and the web UI (and the workers, when the broker is embedded)."""
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    if "LISTWARDEN_PUBLIC_URL" not in os.environ:
        settings.public_url = f"http://{host}:{port}"  # links in mail point at this server
    _prepare()
    typer.echo(f"Listwarden is running at http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    typer.echo(f"database: {settings.resolved_database_url.split('@')[-1]}   broker: {settings.broker_url}")
    application = create_app(settings)
    _freeze_startup_objects()
    uvicorn.run(application, host=host, port=port, log_level="info", proxy_headers=True)


@app.command()
def worker(
    threads: Annotated[int, typer.Option(help="Worker threads in this process.")] = 8,
    queues: Annotated[list[str] | None, typer.Option("--queue", help="Only these queues.")] = None,
) -> None:
    """Run Dramatiq workers against LISTWARDEN_BROKER_URL (Redis or RabbitMQ)."""
    import dramatiq

    from workers.broker import ACTOR_MODULES, broker

    settings = get_settings()
    if settings.embedded_broker:
        typer.echo(
            "the embedded broker runs its workers inside `listwarden serve`; "
            "set LISTWARDEN_BROKER_URL=redis://… or amqp://… to run separate workers",
            err=True,
        )
        raise typer.Exit(2)
    from app.campaigns.scheduler import start_scheduler

    for module in ACTOR_MODULES:
        importlib.import_module(module)
    broker.emit_after("process_boot")
    _prepare()
    _freeze_startup_objects()
    stop_scheduler = start_scheduler(settings)
    # Idle queues are polled with a back-off up to worker_timeout: 250 ms (not Dramatiq's
    # 1 s) lets a new campaign or slice start within a quarter second.
    worker = dramatiq.Worker(
        broker, queues=set(queues) if queues else None, worker_threads=threads, worker_timeout=250
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.start()
    typer.echo(f"worker started: {threads} threads, actors {sorted(broker.get_declared_actors())}")
    stop.wait()
    stop_scheduler.set()
    worker.stop()
    broker.close()


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(help="How many demo contacts to create (first run only).")] = 300,
) -> None:
    """Seed demo data (once) and print a fresh admin login and API token."""
    from rich.progress import Progress

    from app.db import session_scope
    from app.demo import seed

    _prepare()
    with Progress(transient=True) as progress:
        progress.add_task("seeding demo data…", total=None)
        with session_scope() as session:
            result = seed(session, contacts_count=contacts)
    settings = get_settings()
    if result.created:
        typer.echo(
            f"demo contacts created: {result.created} (a few were then erased, to show erasure at work)"
        )
        from app.demo import demo_import

        job = demo_import(get_settings().var_dir)
        c = job.counts
        typer.echo(
            f"demo import of an event list: created {c.get('created', 0)}, duplicates merged "
            f"{c.get('duplicates', 0)}, rejected {c.get('rejected', 0)}, kept opted out "
            f"{c.get('kept_suppressed', 0)} (see /imports in the web UI)"
        )
        from app.demo import demo_campaign

        with session_scope() as session:
            campaign_id = demo_campaign(session)
        mail = settings.resolved_smtp_url
        typer.echo(f"demo campaign {campaign_id}, to the members who may get it (mail: {mail}):")
        campaign_send(campaign_id)
    else:
        typer.echo("demo contacts were already there")
    typer.echo(f"web UI login: {result.admin_email} / {result.admin_password}")
    creds = settings.var_dir / "demo-credentials.txt"
    creds.write_text(f"{result.admin_email}\n{result.admin_password}\n{result.admin_token}\n")
    creds.chmod(0o600)
    typer.echo(f"admin API token (also in {creds}):")
    typer.echo(result.admin_token)


@token_app.command("create")
def token_create(
    role: Annotated[Role, typer.Option(help="admin, marketer, sales or compliance.")],
    name: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Create an API token. The token is printed alone on the last line."""
    from app.auth.service import create_token
    from app.db import session_scope

    _prepare()
    with session_scope() as session:
        row, plain = create_token(session, role, name=name)
    typer.echo(
        f"created token {row.prefix}… (id {row.id}, role {role.value}); it is shown only once:", err=True
    )
    typer.echo(plain)


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="Login email.")],
    role: Annotated[Role, typer.Option(help="admin, marketer, sales or compliance.")],
    name: Annotated[str, typer.Option()] = "",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
) -> None:
    """Create a staff user for the web UI."""
    from app.auth.service import create_user
    from app.db import session_scope
    from app.errors import DomainError

    _prepare()
    try:
        with session_scope() as session:
            user = create_user(session, email=email, name=name, role=role, password=password)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"created user {user.email} ({user.role})")


@app.command()
def inbound(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (25 for SMTP from the world, 24 for LMTP).")] = 2525,
    lmtp: Annotated[bool, typer.Option("--lmtp", help="Speak LMTP (behind Postfix/Exim), not SMTP.")] = False,
) -> None:
    """Receive replies, bounces and complaints for the reply/bounce domain (SMTP or LMTP)."""
    from app.db import session_scope
    from app.inbound import service
    from app.inbound.listener import make_listener
    from app.inbound.settings import get_inbound_settings

    settings = get_settings()
    _prepare()
    worker = None
    if settings.embedded_broker:  # no separate workers: this process classifies what it receives
        from workers.broker import start_embedded_worker

        worker = start_embedded_worker()
    with session_scope() as session:
        requeued = service.requeue_stale(session, older_than_seconds=60)
    if requeued:
        typer.echo(f"re-queued {len(requeued)} inbound messages left pending")
    listener = make_listener(host, port, lmtp=lmtp)
    listener.start()
    domains = ", ".join(get_inbound_settings().accepted_domains())
    typer.echo(f"{'LMTP' if lmtp else 'SMTP'} listener on {host}:{port} for {domains}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    listener.stop()
    if worker is not None:
        worker.stop()


FINAL_DELIVERY = ("sent", "suppressed", "failed", "bounced", "unknown")


def _campaign_status(campaign_id: int) -> tuple[str, dict[str, int]]:
    from app.campaigns import service
    from app.db import session_scope
    from app.delivery import repository

    with session_scope() as session:
        campaign = service.get(session, campaign_id)
        return campaign.status, repository.counts(session, campaign_id)


def _control(campaign_id: int, action: str) -> None:
    from app.auth.actor import Actor
    from app.campaigns import service
    from app.db import session_scope
    from app.errors import DomainError

    try:
        with session_scope() as session:
            campaign = service.get(session, campaign_id)
            getattr(service, action)(session, campaign, Actor(kind="staff", role=Role.ADMIN))
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc


@app.command("import")
def import_file(
    path: Annotated[str, typer.Argument(help="CSV file (UTF-8, UTF-16 or Latin-1; , ; tab or | separated).")],
    source: Annotated[
        str, typer.Option(help="registration, survey, survey_partial, event or import.")
    ] = "import",
    source_detail: Annotated[
        str | None, typer.Option(help="What the file is, e.g. 'Fair 2026, stand B4'.")
    ] = None,
    merge: Annotated[str, typer.Option(help="fill_empty (default) or overwrite.")] = "fill_empty",
    map_: Annotated[
        list[str] | None, typer.Option("--map", help="COLUMN=TARGET, e.g. 'E-Mail=email' (repeatable).")
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option(help="Topic for rows with email consent (repeatable).")
    ] = None,
    consent_text: Annotated[
        str | None, typer.Option(help="The consent wording the people were shown.")
    ] = None,
    consent_version: Annotated[str | None, typer.Option(help="Version of that wording.")] = None,
    encoding: Annotated[str | None, typer.Option(help="Force an encoding instead of detecting it.")] = None,
    month_first: Annotated[bool, typer.Option(help="Read 03/04/1990 as 4 March.")] = False,
    phone_region: Annotated[str | None, typer.Option(help="Country of phone numbers without +code.")] = None,
    follow: Annotated[bool, typer.Option(help="Show progress until the import ends.")] = True,
) -> None:
    """Import leads from a CSV file; opted-out and suppressed people stay so."""
    from pathlib import Path

    from rich.progress import Progress

    from app.auth.actor import Actor
    from app.db import session_scope
    from app.errors import ValidationProblem
    from app.imports import service

    settings = get_settings()
    _prepare()
    mapping: dict[str, str] = {}
    for item in map_ or []:
        column, sep, target = item.rpartition("=")
        if not sep or not column:
            raise typer.BadParameter(f"--map expects COLUMN=TARGET, got {item!r}")
        mapping[column] = target
    try:
        options = service.ImportOptions.model_validate(
            {
                "source": source,
                "source_detail": source_detail,
                "merge": merge,
                "mapping": mapping,
                "topics": topic or [],
                "consent_text": consent_text,
                "consent_version": consent_version,
                "encoding": encoding,
                "day_first": not month_first,
                "phone_region": phone_region,
            }
        )
    except Exception as exc:  # pydantic's message names the option
        raise typer.BadParameter(str(exc)) from exc
    file = Path(path)
    if not file.is_file():
        raise typer.BadParameter(f"no such file: {path}")
    embedded = settings.embedded_broker
    try:
        with session_scope() as session, file.open("rb") as handle:
            job = service.create(
                session,
                handle,
                file.name,
                options,
                Actor(kind="staff", role=Role.ADMIN.value),
                enqueue=not embedded,
            )
            import_id = job.id
    except ValidationProblem as problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from problem
    assert import_id is not None
    typer.echo(f"import {import_id}: stored {file.name}")
    if not follow and not embedded:
        return
    columns = _progress_columns()

    def detail(counts: dict[str, int]) -> str:
        keys = ("created", "updated", "unchanged", "rejected", "duplicates", "kept_suppressed")
        return ", ".join(f"{k.replace('_', ' ')} {counts.get(k, 0)}" for k in keys)

    with Progress(*columns) as bar:
        task = bar.add_task(f"import {import_id}", total=None, detail="counting rows…")

        def show(p: service.Progress) -> None:
            bar.update(task, total=p.rows_total, completed=p.rows_done, detail=detail(p.counts))

        if embedded:  # no separate workers: this process runs the job (the actor's own code)
            final = service.run(import_id, on_progress=show)
            show(final)
        else:
            import time

            while True:
                with session_scope() as session:
                    job = service.get(session, import_id)
                    final = service.Progress(
                        job.status, job.rows_done, job.rows_total, dict(job.counts or {})
                    )
                show(final)
                if final.status in ("done", "failed"):
                    break
                time.sleep(0.5)
    with session_scope() as session:
        job = service.get(session, import_id)
        if job.status == "failed":
            typer.echo(f"import {import_id} failed: {job.failure_reason}", err=True)
            raise typer.Exit(1)
        typer.echo(f"import {import_id}: {job.status}; {detail(dict(job.counts or {}))}")
        rejected = (job.counts or {}).get("rejected", 0)
        if rejected:
            typer.echo(f"{rejected} rejected rows: GET /api/v1/imports/{import_id}/rejects.csv")


@campaign_app.command("list")
def campaign_list() -> None:
    """Campaigns with their status and delivery counts."""
    from sqlmodel import col, select

    from app.db import session_scope
    from app.delivery import repository
    from app.models import Campaign

    _prepare()
    with session_scope() as session:
        for c in session.exec(select(Campaign).order_by(col(Campaign.id).desc()).limit(100)):
            assert c.id is not None
            counts = repository.counts(session, c.id)
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no deliveries"
            typer.echo(f"{c.id:>5}  {c.status:<10} {c.name}  ({summary})")


@campaign_app.command("status")
def campaign_status(campaign_id: int) -> None:
    """Status and counts by delivery status."""
    _prepare()
    status, counts = _campaign_status(campaign_id)
    typer.echo(f"campaign {campaign_id}: {status}")
    for key, value in sorted(counts.items()):
        typer.echo(f"  {key:<11} {value}")


@campaign_app.command("send")
def campaign_send(
    campaign_id: int,
    follow: Annotated[bool, typer.Option(help="Follow progress until the campaign ends.")] = True,
) -> None:
    """Start sending (or schedule, if the campaign has a future time) and follow it."""
    import time

    from rich.progress import Progress

    settings = get_settings()
    _prepare()
    worker = None
    stop_scheduler = None
    if settings.embedded_broker:  # no separate workers: this process does the sending
        from app.campaigns.scheduler import start_scheduler
        from workers.broker import start_embedded_worker

        worker = start_embedded_worker()
        stop_scheduler = start_scheduler(settings)
    status, _ = _campaign_status(campaign_id)
    if status in ("draft", "scheduled"):
        _control(campaign_id, "send")
    elif status == "paused":
        _control(campaign_id, "resume")
    try:
        if not follow:
            typer.echo(f"campaign {campaign_id}: {_campaign_status(campaign_id)[0]}")
            return
        with Progress(*_progress_columns()) as progress:
            task = progress.add_task(f"campaign {campaign_id}", total=None, detail="")
            while True:
                status, counts = _campaign_status(campaign_id)
                total = sum(counts.values())
                done = sum(counts.get(k, 0) for k in FINAL_DELIVERY)
                detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                progress.update(task, total=total or None, completed=done, detail=f"{status} {detail}")
                if status in ("sent", "cancelled", "paused", "draft"):
                    break
                time.sleep(0.5)
        typer.echo(
            f"campaign {campaign_id}: {status}; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
    finally:
        if stop_scheduler is not None:
            stop_scheduler.set()
        if worker is not None:
            worker.stop()


@campaign_app.command("pause")
def campaign_pause(campaign_id: int) -> None:
    """Pause: takes effect within one micro-batch."""
    _prepare()
    _control(campaign_id, "pause")
    typer.echo(f"campaign {campaign_id}: paused")


@campaign_app.command("resume")
def campaign_resume(campaign_id: int) -> None:
    _prepare()
    _control(campaign_id, "resume")
    typer.echo(f"campaign {campaign_id}: sending")


@campaign_app.command("cancel")
def campaign_cancel(campaign_id: int) -> None:
    _prepare()
    _control(campaign_id, "cancel")
    typer.echo(f"campaign {campaign_id}: cancelled")


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
