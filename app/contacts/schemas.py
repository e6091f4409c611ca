"""Request and response shapes of the contact API (DESIGN.md section 5)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StringConstraints, field_validator

from app.models.base import Channel, PreferenceStatus, Source

Short = Annotated[str, StringConstraints(max_length=200)]
#: NaN and infinities are not JSON: PostgreSQL's jsonb refuses them.
Scalar = str | int | FiniteFloat | bool | None


def reject_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL (U+0000): refuse it in any string, key or nested value."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain the NUL character (U+0000)")
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_nul(key)
            reject_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            reject_nul(item)
    return value


MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_VALUE = 1000


class PreferenceItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    channel: Channel
    topic: Annotated[str, StringConstraints(max_length=64)] | None = None
    status: PreferenceStatus


class ContactFields(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    name: Short | None = None
    phone: Annotated[str, StringConstraints(max_length=40)] | None = None
    address_line1: Short | None = None
    address_line2: Short | None = None
    city: Annotated[str, StringConstraints(max_length=120)] | None = None
    region: Annotated[str, StringConstraints(max_length=120)] | None = None
    zip: Annotated[str, StringConstraints(max_length=20)] | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = None
    company: Short | None = None
    position: Short | None = None
    primary_business: Short | None = None
    attributes: dict[Annotated[str, StringConstraints(max_length=64)], Scalar] | None = None
    date_of_birth: date | None = None
    age_confirmed: bool | None = None

    _no_nul = field_validator("*")(reject_nul)

    #: ``source_detail`` (on ContactIn) is free-form too, so it gets the same bounds.
    @field_validator("attributes", "source_detail", check_fields=False)
    @classmethod
    def _limit_attributes(cls, value: dict[str, Scalar] | None) -> dict[str, Scalar] | None:
        if value is None:
            return value
        if len(value) > MAX_ATTRIBUTES:
            raise ValueError(f"at most {MAX_ATTRIBUTES} entries")
        for key, item in value.items():
            if isinstance(item, str) and len(item) > MAX_ATTRIBUTE_VALUE:
                raise ValueError(f"entry {key!r} is longer than {MAX_ATTRIBUTE_VALUE} characters")
        return value


class ContactIn(ContactFields):
    """``POST /api/v1/contacts``: create, or update the contact with the same email."""

    source: Source = Source.API
    source_detail: dict[Annotated[str, StringConstraints(max_length=64)], Scalar] | None = None
    preferences: list[PreferenceItem] | None = Field(default=None, max_length=100)
    #: The consent wording the person was shown, and its version, when preferences are given.
    consent_text: Annotated[str, StringConstraints(max_length=5000)] | None = None
    consent_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    #: ``overwrite``: given fields replace stored ones; ``fill_empty``: only empty ones are filled.
    merge: Literal["overwrite", "fill_empty"] = "overwrite"


class ContactPatch(ContactFields):
    """``PATCH /api/v1/contacts/{id}``: rectify. Only the fields sent are changed."""


class PreferenceOut(BaseModel):
    channel: str
    topic: str | None
    status: str
    updated_at: datetime | None = None


class IgnoredPreference(BaseModel):
    channel: str
    topic: str | None
    status: str
    reason: str


class ContactOut(BaseModel):
    id: int
    email: str | None
    name: str | None
    phone: str | None
    address_line1: str | None
    address_line2: str | None
    city: str | None
    region: str | None
    zip: str | None
    country: str | None
    company: str | None
    position: str | None
    primary_business: str | None
    attributes: dict[str, Any]
    date_of_birth: date | None
    age_confirmed: bool
    source: str
    source_detail: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    preferences: list[PreferenceOut]
    #: Opt-ins in the request that were not applied because the person opted out.
    ignored_preferences: list[IgnoredPreference] = Field(default_factory=list)
    created: bool | None = None


class ContactList(BaseModel):
    items: list[ContactOut]


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    preferences: list[PreferenceItem] = Field(max_length=100)
    #: How the change reached staff: phone, letter, email, in_person, staff (default).
    method: Literal["staff", "phone", "letter", "email", "in_person", "api"] = "staff"
    consent_text: Annotated[str, StringConstraints(max_length=5000)] | None = None
    consent_version: Annotated[str, StringConstraints(max_length=64)] | None = None
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None

    _no_nul = field_validator("consent_text", "consent_version", "note")(reject_nul)


class PreferencesOut(BaseModel):
    preferences: list[PreferenceOut]


class ErasureOut(BaseModel):
    id: int
    erased: bool
    reason: str
