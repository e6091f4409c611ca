"""Import routes: thin; the rules are in ``app.imports.service``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlmodel import col, select

from app.auth.actor import Actor
from app.db import session_scope
from app.deps import Require, SessionDep
from app.errors import ValidationProblem
from app.imports import service
from app.imports.service import ImportOptions
from app.models import Import, ImportReject, Role

router = APIRouter(prefix="/api/v1/imports", tags=["imports"])

ImportId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Importer = Annotated[Actor, Depends(Require(Role.SALES, Role.MARKETER))]
Reader = Annotated[Actor, Depends(Require(Role.SALES, Role.MARKETER, Role.COMPLIANCE))]


class ImportOut(BaseModel):
    id: int
    status: str
    filename: str
    source: str
    merge: str
    size_bytes: int
    rows_total: int | None
    rows_done: int
    #: rows_done / rows_total, 0..1 (null until the rows are counted).
    progress: float | None
    counts: dict[str, int]
    mapping: dict[str, Any]
    failure_reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rejects_csv: str


class ImportList(BaseModel):
    items: list[ImportOut]


class RejectOut(BaseModel):
    row: int
    column: str | None
    reason: str
    cells: list[str]


class RejectList(BaseModel):
    items: list[RejectOut]


def import_out(job: Import) -> ImportOut:
    assert job.id is not None
    total = job.rows_total
    return ImportOut(
        id=job.id,
        status=job.status,
        filename=job.filename,
        source=job.source,
        merge=job.merge_policy,
        size_bytes=job.size_bytes,
        rows_total=total,
        rows_done=job.rows_done,
        progress=(min(1.0, job.rows_done / total) if total else (1.0 if job.status == "done" else None)),
        counts=dict(job.counts or {}),
        mapping=dict(job.mapping or {}),
        failure_reason=job.failure_reason,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        rejects_csv=f"/api/v1/imports/{job.id}/rejects.csv",
    )


def _options(raw: str | None, overrides: dict[str, Any]) -> ImportOptions:
    data: dict[str, Any] = {}
    if raw:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValidationProblem(f"options: not JSON ({exc})", field="options") from exc
        if not isinstance(data, dict):
            raise ValidationProblem("options: expected a JSON object", field="options")
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    try:
        return ImportOptions.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise ValidationProblem(f"{where}: {first.get('msg')}", field=where or "options") from exc


@router.post("", status_code=202, response_model=ImportOut)
def create_import(
    session: SessionDep,
    actor: Importer,
    file: Annotated[UploadFile, File(description="The CSV file")],
    source: Annotated[str | None, Form()] = None,
    merge: Annotated[str | None, Form()] = None,
    mapping: Annotated[str | None, Form(description='JSON: {"column": "target"}')] = None,
    options: Annotated[str | None, Form(description="JSON: every ImportOptions field")] = None,
) -> ImportOut:
    """Store the file and start importing it; follow it with ``GET /api/v1/imports/{id}``."""
    parsed_mapping = None
    if mapping:
        try:
            parsed_mapping = json.loads(mapping)
        except ValueError as exc:
            raise ValidationProblem(f"mapping: not JSON ({exc})", field="mapping") from exc
    opts = _options(options, {"source": source, "merge": merge, "mapping": parsed_mapping})
    job = service.create(session, file.file, file.filename or "upload.csv", opts, actor)
    return import_out(job)


@router.get("", response_model=ImportList)
def list_imports(
    session: SessionDep, actor: Reader, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> ImportList:
    jobs = session.exec(select(Import).order_by(col(Import.id).desc()).limit(limit))
    return ImportList(items=[import_out(j) for j in jobs])


@router.get("/{import_id}", response_model=ImportOut)
def get_import(session: SessionDep, actor: Reader, import_id: ImportId) -> ImportOut:
    return import_out(service.get(session, import_id))


@router.get("/{import_id}/rejects", response_model=RejectList)
def list_rejects(
    session: SessionDep,
    actor: Reader,
    import_id: ImportId,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RejectList:
    service.get(session, import_id)
    stmt = (
        select(ImportReject)
        .where(ImportReject.import_id == import_id)
        .order_by(col(ImportReject.row_number), col(ImportReject.id))
        .offset(offset)
        .limit(limit)
    )
    return RejectList(
        items=[
            RejectOut(
                row=r.row_number, column=r.field, reason=r.reason, cells=json.loads(r.raw) if r.raw else []
            )
            for r in session.exec(stmt)
        ]
    )


@router.get("/{import_id}/rejects.csv", response_class=StreamingResponse)
def download_rejects(session: SessionDep, actor: Reader, import_id: ImportId) -> StreamingResponse:
    """Rejected rows with their reasons; cells that a spreadsheet would run as formulas are
    neutralised with a leading apostrophe."""
    service.get(session, import_id)

    def rows() -> Iterator[str]:
        with session_scope() as own:  # the request's session is closed while this streams
            yield from service.rejects_csv(own, import_id)

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-rejects.csv"'},
    )
