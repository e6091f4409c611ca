"""create_app(): routers, error handlers, templates, static, embedded workers."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.middleware.sessions import SessionMiddleware

from app.config import Settings, get_settings
from app.db import session_scope
from app.errors import DomainError, ValidationProblem

log = logging.getLogger("listwarden")


def _loc(field: str | None) -> list[str | int]:
    if not field:
        return ["body"]
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in field.split(".")]
    return parts if parts[0] in ("query", "path") else ["body", *parts]


def prepare_database(settings: Settings) -> None:
    """Migrate the embedded SQLite database on first start and make configured topics exist."""
    from app.migrate import is_up_to_date, upgrade
    from app.topics.service import ensure_topics

    if settings.is_sqlite and settings.auto_migrate and not is_up_to_date(settings):
        log.info("migrating %s", settings.resolved_database_url)
        upgrade(settings)
    with session_scope(settings) as session:
        ensure_topics(session, settings.topics)


def create_app(settings: Settings | None = None, *, start_workers: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        prepare_database(settings)
        # What is alive now (modules, routes, templates, compiled statements) lives as long
        # as the process: keep it out of the collector's full passes, which otherwise
        # stall the event loop under load (the tail of one-click latency).
        gc.collect()
        gc.freeze()
        worker = None
        stop_scheduler = None
        if start_workers:
            from app.campaigns.scheduler import start_scheduler

            stop_scheduler = start_scheduler(settings)
            if settings.embedded_broker:
                from workers.broker import start_embedded_worker

                worker = start_embedded_worker(settings=settings)
        yield
        if stop_scheduler is not None:
            stop_scheduler.set()
        if worker is not None:
            worker.stop()

    app = FastAPI(
        title="Listwarden",
        version="0.1.0",
        description="Email marketing list manager with opt-out enforcement at its heart.",
        lifespan=lifespan,
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.ensure_secret_key(),
        session_cookie="listwarden_session",
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
        max_age=12 * 3600,
    )

    @app.exception_handler(ValidationProblem)
    async def _validation_problem(_request: Request, exc: ValidationProblem) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": _loc(exc.field), "msg": exc.message, "type": exc.code}]},
            status_code=exc.status_code,
        )

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        body: dict[str, Any] = {"detail": exc.message}
        if exc.field:
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(IntegrityError)
    async def _integrity(_request: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity conflict: %s", exc.orig)
        return JSONResponse({"detail": "conflicts with an existing record; retry"}, status_code=409)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    from app.campaigns.endpoints import router as campaigns_router
    from app.compliance.endpoints import router as compliance_router
    from app.contacts.endpoints import router as contacts_router
    from app.forms.config import load_forms
    from app.forms.endpoints import router as forms_router
    from app.imports.endpoints import router as imports_router
    from app.inbound.endpoints import router as inbound_router
    from app.recipients.endpoints import router as recipients_router
    from app.suppression.endpoints import router as suppression_router
    from app.topics.endpoints import router as topics_router
    from app.web.data_requests import router as web_requests_router
    from app.web.endpoints import router as web_router
    from app.web.imports import router as web_imports_router

    # The recipients' pages first: routes are matched in order, and one-click unsubscribes
    # come in bursts from mail providers (matching them after every other router was a
    # third of the server's time per one-click). No other router uses their paths.
    app.include_router(recipients_router)
    app.include_router(contacts_router)
    app.include_router(suppression_router)
    app.include_router(topics_router)
    app.include_router(compliance_router)
    app.include_router(campaigns_router)
    app.include_router(inbound_router)
    app.include_router(imports_router)
    app.include_router(web_router)
    app.include_router(web_imports_router)
    app.include_router(web_requests_router)
    load_forms(settings)  # a forms file with problems stops the start, saying what is wrong
    app.include_router(forms_router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
