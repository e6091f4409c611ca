"""Staff web UI: lead imports — upload a file, watch its progress, download its rejects.

Thin, like the rest of ``app.web``: the rules live in ``app.imports.service``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlmodel import col, select

from app.db import session_scope
from app.deps import SessionDep
from app.errors import DomainError
from app.imports import service
from app.imports.service import ImportOptions
from app.models import Import, Role, User
from app.web import csrf
from app.web.endpoints import UserDep, csrf_rejected, error_page, not_found, parse_id, staff_actor, to_login
from app.web.templating import flash, render

router = APIRouter(include_in_schema=False)

UPLOADERS = {Role.ADMIN.value, Role.SALES.value, Role.MARKETER.value}
READERS = UPLOADERS | {Role.COMPLIANCE.value}
SOURCES = (
    ("import", "Lead file"),
    ("event", "Event list"),
    ("registration", "Registration export"),
    ("survey", "Survey results"),
    ("survey_partial", "Unfinished survey"),
)


def _page(
    request: Request, session: SessionDep, user: User, *, error: str | None = None, status_code: int = 200
) -> Response:
    jobs = list(session.exec(select(Import).order_by(col(Import.id).desc()).limit(50)))
    running = any(j.status in ("stored", "running") for j in jobs)
    return render(
        request,
        "imports.html",
        {
            "jobs": jobs,
            "running": running,
            "sources": SOURCES,
            "can_upload": user.role in UPLOADERS,
            "error": error,
        },
        user=user,
        status_code=status_code,
        active="imports",
    )


@router.get("/imports")
def imports_page(request: Request, session: SessionDep, user: UserDep) -> Response:
    if user is None:
        return to_login()
    if user.role not in READERS:
        return error_page(request, user, 403, "Not allowed", "Your role cannot see imports.")
    return _page(request, session, user)


@router.post("/imports")
def upload(
    request: Request,
    session: SessionDep,
    user: UserDep,
    file: Annotated[UploadFile | None, File()] = None,
    source: Annotated[str, Form()] = "import",
    merge: Annotated[str, Form()] = "fill_empty",
    consent_text: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    if user is None:
        return to_login()
    if not csrf.is_valid(request, csrf_token):
        return csrf_rejected(request, user)
    if user.role not in UPLOADERS:
        return error_page(request, user, 403, "Not allowed", "Your role cannot import leads.")
    if file is None or not file.filename:
        return _page(request, session, user, error="Choose a CSV file to import.", status_code=422)
    try:
        options = ImportOptions.model_validate(
            {"source": source, "merge": merge, "consent_text": consent_text.strip() or None}
        )
        job = service.create(session, file.file, file.filename, options, staff_actor(request, user))
    except DomainError as exc:
        session.rollback()
        return _page(request, session, user, error=exc.message, status_code=exc.status_code)
    except ValueError as exc:  # pydantic: a field outside its choices
        session.rollback()
        return _page(request, session, user, error=f"The form is not valid: {exc}", status_code=422)
    flash(request, f"Import {job.id} of {job.filename} started.")
    return RedirectResponse("/imports", status_code=303)


@router.get("/imports/{import_id}/rejects.csv")
def rejects(request: Request, session: SessionDep, user: UserDep, import_id: str) -> Response:
    if user is None:
        return to_login()
    if user.role not in READERS:
        return error_page(request, user, 403, "Not allowed", "Your role cannot see imports.")
    found = parse_id(import_id)
    if found is None or session.get(Import, found) is None:
        return not_found(request, user, "No such import.")

    def rows() -> Iterator[str]:
        with session_scope() as own:
            yield from service.rejects_csv(own, found)

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{found}-rejects.csv"'},
    )
