from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.contacts.schemas import reject_nul
from app.models import Suppression
from app.suppression.policy import Reason


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    #: Defaults to the channel of the address: phone for a phone number, email otherwise.
    channel: Literal["email", "postal", "phone", "all"] | None = None
    address: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    kind: Literal["email", "phone", "domain"] | None = None
    reason: Reason = Reason.MANUAL_REQUEST
    #: ``all`` or a topic slug.
    scope: Annotated[str, StringConstraints(max_length=64)] = "all"
    #: How the request arrived: phone, letter, email, in_person, web, other.
    method: Literal["phone", "letter", "email", "in_person", "web", "other", "staff"] | None = None
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None

    _no_nul = field_validator("note")(reject_nul)

    @field_validator("reason")
    @classmethod
    def _staff_reasons(cls, value: Reason) -> Reason:
        if value in (Reason.ONE_CLICK, Reason.UNSUBSCRIBE, Reason.REPLY):
            raise ValueError("one_click, unsubscribe and reply are recorded by the recipient paths")
        return value


class SuppressionOut(BaseModel):
    id: int
    channel: str
    kind: str
    address_hint: str | None
    scope: str
    reason: str
    origin: str
    method: str | None
    note: str | None
    created_at: datetime
    lifted_at: datetime | None
    lift_note: str | None

    @classmethod
    def of(cls, row: Suppression) -> SuppressionOut:
        assert row.id is not None
        return cls(
            id=row.id,
            channel=row.channel or "all",
            kind=row.kind,
            address_hint=row.address_hint,
            scope=row.topic or "all",
            reason=row.reason,
            origin=row.origin,
            method=row.method,
            note=row.note,
            created_at=row.created_at,
            lifted_at=row.lifted_at,
            lift_note=row.lift_note,
        )


class SuppressionList(BaseModel):
    items: list[SuppressionOut]


class LiftIn(BaseModel):
    note: Annotated[str, StringConstraints(max_length=2000)] | None = Field(default=None)
