"""The public forms, configured by name in a TOML file (setting ``LISTWARDEN_FORMS_FILE``;
unset: the bundled ``default_forms.toml``).

Each ``[forms.<name>]`` table is one form, served at ``/forms/<name>``::

    [forms.newsletter]
    kind = "registration"            # registration | survey
    title = "Sign up for our newsletter"
    version = "2026-05"              # recorded with every lead (source_detail) ...
    consent_text = "Yes, send me …"  # ... and this wording (with consent_version) with every opt-in
    topics = ["member-updates", "special-offers"]   # email topics offered as tick boxes
    channels = ["postal"]            # other channels offered (postal needs address fields)
    age_check = "confirm"            # confirm (a tick box) | date_of_birth (a required field)
    fields = [{ name = "email", required = true }, { name = "name" }]

    [[forms.newsletter.questions]]  # custom questions, stored as contact attributes
    name = "heard_from"
    label = "Where did you hear about us?"
    type = "choice"                  # text | textarea | choice | checkbox
    choices = ["A friend", "A search engine", "Elsewhere"]

The file is validated when it is loaded (at start-up and whenever it changes), and every
problem is reported at once with its place in the file (:class:`FormsConfigError`)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from app.config import DEFAULT_TOPICS, Settings, get_settings

BUNDLED_FORMS_FILE = Path(__file__).resolve().parent / "default_forms.toml"


#: The contact fields a form may ask for: label, input type, autocomplete token, length.
@dataclass(frozen=True, slots=True)
class ContactField:
    label: str
    input_type: str
    autocomplete: str
    max_length: int


CONTACT_FIELDS: dict[str, ContactField] = {
    "email": ContactField("Email address", "email", "email", 320),
    "name": ContactField("Name", "text", "name", 200),
    "phone": ContactField("Phone number", "tel", "tel", 40),
    "address_line1": ContactField("Street and number", "text", "address-line1", 200),
    "address_line2": ContactField("Address line 2", "text", "address-line2", 200),
    "city": ContactField("Town or city", "text", "address-level2", 120),
    "region": ContactField("Region", "text", "address-level1", 120),
    "zip": ContactField("Postcode", "text", "postal-code", 20),
    "country": ContactField("Country (two-letter code, for example DE)", "text", "country", 2),
    "company": ContactField("Company", "text", "organization", 200),
    "position": ContactField("Position", "text", "organization-title", 200),
    "primary_business": ContactField("Primary business", "text", "off", 200),
    "date_of_birth": ContactField("Date of birth", "date", "bday", 10),
}
#: Names a question may not take: they mean something else in a submission.
RESERVED_NAMES = frozenset(
    {
        "topic",
        "topics",
        "channel",
        "channels",
        "partial",
        "action",
        "form_token",
        "age_confirmed",
        "csrf_token",
    }
)
#: ``/forms/confirm/…`` stays free for links.
RESERVED_FORM_NAMES = frozenset({"confirm"})
MAX_ITEMS = 40
#: Attribute values are at most this long (``app.contacts.schemas.MAX_ATTRIBUTE_VALUE``).
MAX_ANSWER_LENGTH = 1000

_FORM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


class FormsConfigError(ValueError):
    """The forms file cannot be used; the message lists every problem, one a line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """A contact field asked for by the form."""

    name: str
    label: Text | None = None
    hint: Text | None = None
    required: bool = False

    @model_validator(mode="after")
    def _known(self) -> FieldSpec:
        if self.name not in CONTACT_FIELDS:
            raise ValueError(
                f"{self.name!r} is not a contact field (choose from: {', '.join(CONTACT_FIELDS)}); "
                "ask anything else as a question"
            )
        return self

    @property
    def spec(self) -> ContactField:
        return CONTACT_FIELDS[self.name]

    @property
    def shown_label(self) -> str:
        return self.label or self.spec.label


class QuestionSpec(_Strict):
    """A custom question; the answer is kept as the contact attribute of the same name."""

    name: str
    label: Text
    hint: Text | None = None
    type: Literal["text", "textarea", "choice", "checkbox"] = "text"
    required: bool = False
    choices: list[Text] = Field(default_factory=list)
    max_length: int = Field(default=200, ge=1, le=MAX_ANSWER_LENGTH)

    @model_validator(mode="after")
    def _consistent(self) -> QuestionSpec:
        if not _IDENTIFIER.match(self.name):
            raise ValueError(
                f"question name {self.name!r} must be lower-case letters, digits and _, "
                "starting with a letter"
            )
        if self.name in CONTACT_FIELDS:
            raise ValueError(f"question name {self.name!r} is a contact field: list it under fields instead")
        if self.name in RESERVED_NAMES:
            raise ValueError(f"question name {self.name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})")
        if self.type == "choice":
            if len(self.choices) < 2:
                raise ValueError(f"question {self.name!r}: a choice needs at least two choices")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"question {self.name!r}: choices are listed twice")
            if any(len(c) > self.max_length for c in self.choices):
                raise ValueError(f"question {self.name!r}: a choice is longer than max_length")
        elif self.choices:
            raise ValueError(f"question {self.name!r}: only a question of type 'choice' has choices")
        return self


class FormSpec(_Strict):
    name: str = ""
    kind: Literal["registration", "survey"]
    title: Text
    intro: LongText = ""
    #: Version of the form, recorded with every lead in ``source_detail``.
    version: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    fields: list[FieldSpec]
    questions: list[QuestionSpec] = Field(default_factory=list)
    #: Email topics offered as tick boxes (slugs), and the other channels offered.
    topics: list[str] = Field(default_factory=list)
    channels: list[Literal["postal", "phone"]] = Field(default_factory=list)
    #: The wording next to the tick boxes, recorded with each opt-in, and its version
    #: (the form's version when unset).
    consent_text: LongText = ""
    consent_version: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    #: How the minimum age is checked: a tick box, or a required date of birth.
    age_check: Literal["confirm", "date_of_birth"] = "confirm"
    #: A survey can be saved unfinished (source ``survey_partial``; no opt-in).
    allow_partial: bool = False
    #: Name of the hidden field that people leave empty and bots fill in.
    honeypot: str = "website"
    submit_label: Text | None = None
    #: The text of the "thank you" page (a default that fits the form when unset).
    thanks: LongText | None = None

    @property
    def shown_consent_version(self) -> str:
        return self.consent_version or self.version

    @property
    def source(self) -> str:
        return self.kind

    @property
    def offers_consent(self) -> bool:
        return bool(self.topics or self.channels)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @model_validator(mode="after")
    def _consistent(self) -> FormSpec:
        problems: list[str] = []
        names = [f.name for f in self.fields] + [q.name for q in self.questions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            problems.append(f"names used twice: {', '.join(twice)}")
        if len(names) > MAX_ITEMS:
            problems.append(f"at most {MAX_ITEMS} fields and questions together")
        email = self.field("email")
        if email is None or not email.required:
            problems.append(
                "every form needs the field email with required = true (the confirmation mail goes there)"
            )
        if len(set(self.topics)) != len(self.topics):
            problems.append("topics are listed twice")
        if len(set(self.channels)) != len(self.channels):
            problems.append("channels are listed twice")
        if self.kind == "registration" and not self.offers_consent:
            problems.append("a registration form must offer at least one topic or channel")
        if self.offers_consent and not self.consent_text:
            problems.append("consent_text is required when topics or channels are offered")
        if "postal" in self.channels and not (self.field("address_line1") and self.field("zip")):
            problems.append("the postal channel needs the fields address_line1 and zip")
        if "phone" in self.channels and not self.field("phone"):
            problems.append("the phone channel needs the field phone")
        dob = self.field("date_of_birth")
        if self.age_check == "date_of_birth" and (dob is None or not dob.required):
            problems.append("age_check = 'date_of_birth' needs the field date_of_birth with required = true")
        if self.allow_partial and self.kind != "survey":
            problems.append("only a survey can allow_partial")
        if not _IDENTIFIER.match(self.honeypot) or self.honeypot in names or self.honeypot in RESERVED_NAMES:
            problems.append(
                f"honeypot {self.honeypot!r} must be a name like 'website' that no field or question uses"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class FormsFile(_Strict):
    forms: dict[str, FormSpec] = Field(default_factory=dict)


@dataclass(frozen=True)
class Forms:
    path: Path
    by_name: dict[str, FormSpec]

    def get(self, name: str) -> FormSpec | None:
        return self.by_name.get(name)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_forms(text: str, *, path: Path, known_topics: frozenset[str]) -> Forms:
    """Read and validate a forms file's text; raises :class:`FormsConfigError`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FormsConfigError(f"forms file {path}: not valid TOML: {exc}") from exc
    try:
        parsed = FormsFile.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        ]
        raise FormsConfigError(f"forms file {path} has problems:\n" + "\n".join(lines)) from None
    problems: list[str] = []
    if not parsed.forms:
        problems.append("  forms: no form is defined (add a [forms.<name>] table)")
    forms: dict[str, FormSpec] = {}
    for name, form in parsed.forms.items():
        if not _FORM_NAME.match(name) or name in RESERVED_FORM_NAMES:
            problems.append(
                f"  forms.{name}: a form name is lower-case letters, digits, - and _ (and not 'confirm')"
            )
        unknown = [t for t in form.topics if t not in known_topics]
        if unknown:
            problems.append(
                f"  forms.{name}.topics: unknown topic {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(known_topics))}; add topics with LISTWARDEN_TOPICS)"
            )
        forms[name] = form.model_copy(update={"name": name})
    if problems:
        raise FormsConfigError(f"forms file {path} has problems:\n" + "\n".join(problems))
    return Forms(path, forms)


@lru_cache(maxsize=8)
def _load(path: str, _mtime_ns: int, known_topics: frozenset[str]) -> Forms:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormsConfigError(f"forms file {path} cannot be read: {exc}") from exc
    return parse_forms(text, path=Path(path), known_topics=known_topics)


def load_forms(settings: Settings | None = None) -> Forms:
    """The forms in force (read again when the file changes); raises :class:`FormsConfigError`."""
    settings = settings or get_settings()
    path = (settings.forms_file or BUNDLED_FORMS_FILE).expanduser().resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise FormsConfigError(
            f"forms file {path} cannot be read: {exc.strerror or exc} (setting LISTWARDEN_FORMS_FILE)"
        ) from exc
    return _load(str(path), mtime, frozenset(DEFAULT_TOPICS) | frozenset(settings.topics))
