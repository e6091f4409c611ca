"""Request and response shapes of the data-request API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.compliance.service import Arrival, Completion, Counts, Kind, RequestView

Note = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")]
Address = Annotated[str, StringConstraints(min_length=1, max_length=320, pattern=r"^[^\x00]*$")]


class DataRequestOut(BaseModel):
    id: int
    kind: str
    status: str
    channel: str
    contact_id: int | None
    #: True when no personal data is held any more (the contact was erased or never known).
    contact_erased: bool
    received_at: datetime
    due_at: datetime
    closed_at: datetime | None
    #: Whole days until the due date, negative once overdue; null once closed.
    days_left: int | None
    overdue: bool
    note: str | None

    @classmethod
    def of(cls, v: RequestView) -> DataRequestOut:
        r = v.request
        assert r.id is not None
        return cls(
            id=r.id,
            kind=r.kind,
            status=r.status,
            channel=r.channel,
            contact_id=r.contact_id,
            contact_erased=v.contact_erased,
            received_at=r.received_at,
            due_at=r.due_at,
            closed_at=r.closed_at,
            days_left=v.days_left,
            overdue=v.overdue,
            note=r.note,
        )


class CountsOut(BaseModel):
    open: int
    due_this_week: int
    overdue: int

    @classmethod
    def of(cls, c: Counts) -> CountsOut:
        return cls(open=c.open, due_this_week=c.due_this_week, overdue=c.overdue)


class DataRequestList(BaseModel):
    items: list[DataRequestOut]
    counts: CountsOut


class DataRequestIn(BaseModel):
    """A request that arrived by letter, phone or email: name the person by contact id or email."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    contact_id: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    email: Address | None = None
    channel: Arrival = Arrival.EMAIL
    note: Note | None = None
    received_at: datetime | None = None

    @model_validator(mode="after")
    def one_person(self) -> DataRequestIn:
        if (self.contact_id is None) == (self.email is None):
            raise ValueError("give either contact_id or email")
        return self


class DataRequestCreated(DataRequestOut):
    created: bool


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Note | None = None


class RefuseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(min_length=3, max_length=2000, pattern=r"^[^\x00]*$")]


class CompletionOut(BaseModel):
    request: DataRequestOut
    #: For an access request: everything held about the person (as the contact export).
    export: dict[str, Any] | None
    erased: bool
    message: str

    @classmethod
    def of(cls, c: Completion) -> CompletionOut:
        return cls(request=DataRequestOut.of(c.view), export=c.export, erased=c.erased, message=c.message)
