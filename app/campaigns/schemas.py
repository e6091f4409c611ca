from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Scalar = str | int | float | bool | None
AUDIENCE_FIELDS = (
    "name",
    "email",
    "company",
    "position",
    "primary_business",
    "city",
    "region",
    "zip",
    "country",
    "source",
)


class AudienceFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: Literal[AUDIENCE_FIELDS] | None = None  # type: ignore[valid-type]
    attribute: (
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] | None
    ) = None
    op: Literal["eq", "ne", "in", "contains", "exists", "missing"] = "eq"
    value: Scalar | list[Scalar] = None

    @field_validator("value")
    @classmethod
    def _small(cls, value: Scalar | list[Scalar]) -> Scalar | list[Scalar]:
        if isinstance(value, list) and len(value) > 1000:
            raise ValueError("at most 1000 values")
        return value


class Audience(BaseModel):
    """The topic's subscribers that pass the gate, narrowed by sources and filters (all must match)."""

    model_config = ConfigDict(extra="forbid")

    sources: (
        list[Literal["registration", "survey", "survey_partial", "event", "import", "api", "manual"]] | None
    ) = None
    filters: list[AudienceFilter] = Field(default_factory=list, max_length=50)


Text = Annotated[str, StringConstraints(max_length=1_000_000)]


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    channel: Literal["email"] = "email"
    topic: Annotated[str, StringConstraints(max_length=64)] | None = None
    purpose: Literal["marketing", "service"] = "marketing"
    from_name: Annotated[str, StringConstraints(max_length=200)] | None = None
    from_email: Annotated[str, StringConstraints(max_length=320)] | None = None
    reply_to: Annotated[str, StringConstraints(max_length=320)] | None = None
    subject: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    html: Text = ""
    text: Text = ""
    audience: Audience = Field(default_factory=Audience)
    scheduled_at: datetime | None = None
    rate_limit: Annotated[float, Field(gt=0, le=100_000)] | None = None


class CampaignPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)] | None = None
    topic: Annotated[str, StringConstraints(max_length=64)] | None = None
    purpose: Literal["marketing", "service"] | None = None
    from_name: Annotated[str, StringConstraints(max_length=200)] | None = None
    from_email: Annotated[str, StringConstraints(max_length=320)] | None = None
    reply_to: Annotated[str, StringConstraints(max_length=320)] | None = None
    subject: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None
    html: Text | None = None
    text: Text | None = None
    audience: Audience | None = None
    scheduled_at: datetime | None = None
    rate_limit: Annotated[float, Field(gt=0, le=100_000)] | None = None


class CampaignOut(BaseModel):
    id: int
    name: str
    channel: str
    topic: str | None
    purpose: str
    from_name: str | None
    from_email: str | None
    reply_to: str | None
    subject: str
    html: str
    text: str
    audience: dict[str, Any]
    status: str
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    rate_limit: float | None
    counts: dict[str, int]
    total: int
    created_at: datetime
    updated_at: datetime


class TestSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    emails: list[Annotated[str, StringConstraints(max_length=320)]] = Field(min_length=1, max_length=20)
    #: Render with this contact's data (the preview contact); a sample contact otherwise.
    contact_id: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class TestSendOut(BaseModel):
    sent: list[str]
    refused: dict[str, str]


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str
