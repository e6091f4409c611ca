"""Writing lead files and running imports the way the import job does."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from app.auth.actor import Actor
from app.db import session_scope
from app.imports import service
from app.models import Import


def csv_bytes(rows: list[list[str]], *, delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode(encoding)


def write(tmp_path: Path, rows: list[list[str]], name: str = "leads.csv", **kwargs: Any) -> Path:
    path = tmp_path / name
    path.write_bytes(csv_bytes(rows, **kwargs))
    return path


def start(path: Path, **options: Any) -> int:
    with session_scope() as session, path.open("rb") as handle:
        job = service.create(
            session,
            handle,
            path.name,
            service.ImportOptions(**options),
            Actor(kind="staff", role="sales"),
            enqueue=False,
        )
        assert job.id is not None
        return job.id


def run_import(path: Path, *, processes: int = 0, **options: Any) -> Import:
    import_id = start(path, **options)
    service.run(import_id, processes=processes)
    with session_scope() as session:
        return service.get(session, import_id)


def rejects(import_id: int) -> list[tuple[int, str | None, str]]:
    from sqlmodel import col, select

    from app.models import ImportReject

    with session_scope() as session:
        rows = session.exec(
            select(ImportReject)
            .where(ImportReject.import_id == import_id)
            .order_by(col(ImportReject.row_number))
        )
        return [(r.row_number, r.field, r.reason) for r in rows]
