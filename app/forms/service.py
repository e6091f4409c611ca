"""Public registration and survey forms (``/forms/{name}``): what a submission does.

Rules:
- a submission creates or updates a lead through ``app.contacts.service.upsert`` (source
  ``registration``, ``survey`` or ``survey_partial``; ``source_detail`` names the form and
  its version). An unauthenticated form never overwrites what is on file: profile fields
  only fill empty ones; the form's own answers (contact attributes) are replaced;
- nobody is opted in by a form: ticking topics or channels records a request (a consent
  event with status ``requested``, the wording and version shown, IP and user agent) and
  sends a double opt-in mail (service mail); following its link and pressing the button
  records the opt-in (``app.recipients.service.confirm_opt_in``). Until then the gate
  keeps marketing away;
- a submission for an address that is suppressed, or opted out of email as a whole,
  changes nothing at all and gets the same answer as any other (no lead, no event, no
  mail); a ticked topic or channel that the person opted out of is not asked for again
  (only the preference centre can turn it back on);
- a person under the minimum age is refused and nothing is kept; a filled honeypot gets
  the usual answer and nothing is kept;
- a form is shown with a signed render token (the form, the consent version shown, the
  time): a submission without a valid one, with another consent version, sent too soon
  (bots) or too late is shown the form again, values kept;
- an unfinished survey can be saved (``survey_partial``): answers kept, nothing asked for.

Services never commit; the endpoints run :func:`submit` in ``app.recipients.service.run``."""

from __future__ import annotations

import json
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal
from urllib.parse import parse_qsl

from itsdangerous import BadSignature, URLSafeSerializer
from sqlmodel import Session, col, select

from app.auth.actor import Actor
from app.config import ConsentMode, get_settings
from app.contacts import service as contacts
from app.contacts.identifiers import normalise_email, normalise_phone, postal_key
from app.contacts.schemas import ContactIn
from app.errors import ValidationProblem
from app.forms.config import FormSpec
from app.models import Contact, Preference
from app.models.base import Channel, PreferenceStatus, Purpose, Source
from app.preferences.service import PreferenceChange
from app.recipients import service as recipients
from app.recipients.ratelimit import LIMITER
from app.suppression import gate
from app.suppression import repository as suppressions
from app.suppression.hashing import IdentifierKind, keyed_hash
from app.suppression.policy import BLOCKING_REASONS
from app.topics.service import list_topics

#: Larger bodies are refused before they are parsed.
MAX_BODY_BYTES = 32 * 1024
#: At most this many names, values in all, and characters in any one value.
MAX_KEYS = 60
MAX_VALUES = 200
MAX_VALUE_CHARS = 5000
_YES = frozenset({"1", "on", "yes", "true"})
_CHANNEL_LABELS = {"postal": "Letters and catalogues by post", "phone": "Phone calls"}

Raw = dict[str, list[str]]


# --------------------------------------------------------------------------- reading input
class BadInput(Exception):
    """A body that is not read at all: too large (413), of another type (415), unreadable (400)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def _check_size(values: Raw) -> Raw:
    if len(values) > MAX_KEYS:
        raise BadInput(413, f"too many fields (at most {MAX_KEYS})")
    if sum(len(v) for v in values.values()) > MAX_VALUES:
        raise BadInput(413, f"too many values (at most {MAX_VALUES})")
    too_long = any(len(x) > MAX_VALUE_CHARS for v in values.values() for x in v)
    if too_long or any(len(key) > 100 for key in values):
        raise BadInput(413, f"a field is too long (at most {MAX_VALUE_CHARS} characters)")
    return values


def parse_body(body: bytes, content_type: str) -> Raw:
    """The fields of a submission: ``application/x-www-form-urlencoded`` or JSON (an
    object of strings, numbers, booleans or lists of them)."""
    if len(body) > MAX_BODY_BYTES:
        raise BadInput(413, f"the submission is too large (at most {MAX_BODY_BYTES // 1024} KiB)")
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(400, "the submission is not UTF-8") from exc
    values: Raw = {}
    if kind == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_VALUES)
        except ValueError as exc:
            raise BadInput(413, f"too many values (at most {MAX_VALUES})") from exc
        for key, value in pairs:
            values.setdefault(key, []).append(value)
        return _check_size(values)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadInput(400, "the submission is not valid JSON") from exc
        if not isinstance(data, dict):
            raise BadInput(400, "the submission must be a JSON object")
        if len(data) > MAX_KEYS:
            raise BadInput(413, f"too many fields (at most {MAX_KEYS})")
        for key, item in data.items():
            items = item if isinstance(item, list) else [item]
            if len(items) > MAX_VALUES:
                raise BadInput(413, f"too many values (at most {MAX_VALUES})")
            for one in items:
                if isinstance(one, bool):
                    if one:
                        values.setdefault(key, []).append("yes")
                elif isinstance(one, str | int | float):
                    values.setdefault(key, []).append(str(one))
                elif one is None:
                    continue
                else:
                    raise BadInput(400, f"field {key[:100]!r}: use strings, numbers, booleans or lists")
            values.setdefault(key, [])
        return _check_size(values)
    raise BadInput(415, "send the form as application/x-www-form-urlencoded or application/json")


def _first(raw: Raw, name: str) -> str:
    found = raw.get(name)
    return found[0] if found else ""


def is_partial(form: FormSpec, raw: Raw) -> bool:
    return form.allow_partial and (
        _first(raw, "partial").strip().lower() in _YES or _first(raw, "action") == "save_for_later"
    )


# --------------------------------------------------------------------------- render token
def _serializer() -> URLSafeSerializer:
    settings = get_settings()
    keys = [*reversed(settings.old_secret_keys), settings.ensure_secret_key()]  # newest last
    return URLSafeSerializer(keys, salt="listwarden/forms/render/v1")


def make_render_token(form: FormSpec, *, now: float | None = None) -> str:
    """Signed (form, consent version shown, time shown): sent back with the submission."""
    issued = int((time.time() if now is None else now) * 1000)
    return str(_serializer().dumps([form.name, form.shown_consent_version, issued]))


TokenCheck = Literal["ok", "missing", "stale", "too_fast"]


def check_render_token(form: FormSpec, token: str, *, now: float | None = None) -> TokenCheck:
    if not token:
        return "missing"
    try:
        name, version, issued = _serializer().loads(token[:500])
    except (BadSignature, ValueError, TypeError):
        return "stale"
    if name != form.name or version != form.shown_consent_version or not isinstance(issued, int):
        return "stale"  # another form, or the wording changed since it was shown
    settings = get_settings()
    age = (time.time() if now is None else now) - issued / 1000
    if age > settings.forms_token_hours * 3600 or age < -60:
        return "stale"
    if age < settings.forms_min_seconds:
        return "too_fast"
    return "ok"


# --------------------------------------------------------------------------- the form as shown
@dataclass
class Widget:
    """One input of the form, with the value typed and its error (when shown again)."""

    name: str
    label: str
    #: email | text | tel | date | textarea | choice | checkbox
    kind: str
    required: bool = False
    hint: str | None = None
    autocomplete: str = "off"
    max_length: int = 200
    choices: list[str] = field(default_factory=list)
    value: str = ""
    checked: bool = False
    error: str | None = None

    @property
    def id(self) -> str:
        return f"f-{self.name}"


@dataclass
class ConsentOption:
    field: str  # topic | channel
    value: str
    label: str
    description: str = ""
    checked: bool = False

    @property
    def id(self) -> str:
        return f"f-{self.field}-{self.value}"


@dataclass
class FormView:
    form: FormSpec
    widgets: list[Widget]
    options: list[ConsentOption]
    age: Widget | None
    token: str
    minimum_age: int
    #: Error of the tick boxes (nothing ticked on a registration form, ...).
    options_error: str | None = None
    #: (input id, message) in the order of the form, for the summary at the top.
    errors: list[tuple[str, str]] = field(default_factory=list)
    notice: str | None = None

    @property
    def submit_label(self) -> str:
        if self.form.submit_label:
            return self.form.submit_label
        return "Sign up" if self.form.kind == "registration" else "Send my answers"

    def error_map(self) -> dict[str, str]:
        """Field name -> message, for a JSON answer."""
        found = {w.name: w.error for w in [*self.widgets, *([self.age] if self.age else [])] if w.error}
        if self.options_error:
            found["topic"] = self.options_error
        return found

    def definition(self) -> dict[str, Any]:
        """The form as JSON, for a page that builds its own (``GET`` with ``Accept: application/json``)."""
        return {
            "form": self.form.name,
            "kind": self.form.kind,
            "title": self.form.title,
            "intro": self.form.intro,
            "version": self.form.version,
            "fields": [
                {
                    "name": w.name,
                    "label": w.label,
                    "type": w.kind,
                    "required": w.required,
                    "max_length": w.max_length,
                    **({"choices": w.choices} if w.choices else {}),
                    **({"hint": w.hint} if w.hint else {}),
                }
                for w in [*self.widgets, *([self.age] if self.age else [])]
            ],
            "options": [{"field": o.field, "value": o.value, "label": o.label} for o in self.options],
            "consent_text": self.form.consent_text,
            "consent_version": self.form.shown_consent_version,
            "allow_partial": self.form.allow_partial,
            "honeypot": self.form.honeypot,
            "form_token": self.token,
        }


def _offered_topics(session: Session, form: FormSpec) -> list[tuple[str, str, str]]:
    """(slug, name, description) of the form's topics that are active, in the form's order."""
    active = {t.slug: t for t in list_topics(session)}
    return [(s, active[s].name, active[s].description or "") for s in form.topics if s in active]


def form_view(session: Session, form: FormSpec, raw: Raw | None = None) -> FormView:
    """The form to show: empty, or with what was typed (``raw``) to correct it."""
    raw = raw or {}
    settings = get_settings()
    widgets: list[Widget] = []
    for spec in form.fields:
        widgets.append(
            Widget(
                name=spec.name,
                label=spec.shown_label,
                kind=spec.spec.input_type,
                required=spec.required,
                hint=spec.hint,
                autocomplete=spec.spec.autocomplete,
                max_length=spec.spec.max_length,
                value=_first(raw, spec.name),
            )
        )
    for question in form.questions:
        value = _first(raw, question.name)
        widgets.append(
            Widget(
                name=question.name,
                label=question.label,
                kind=question.type,
                required=question.required,
                hint=question.hint,
                max_length=question.max_length,
                choices=list(question.choices),
                value=value,
                checked=value.strip().lower() in _YES,
            )
        )
    ticked_topics, ticked_channels = set(raw.get("topic", [])), set(raw.get("channel", []))
    options = [
        ConsentOption("topic", slug, name, description, slug in ticked_topics)
        for slug, name, description in _offered_topics(session, form)
    ]
    options += [
        ConsentOption("channel", c, _CHANNEL_LABELS[c], "", c in ticked_channels) for c in form.channels
    ]
    age = None
    if form.age_check == "confirm":
        age = Widget(
            name="age_confirmed",
            label=f"I am {settings.minimum_age} or over",
            kind="checkbox",
            required=True,
            checked=_first(raw, "age_confirmed").strip().lower() in _YES,
        )
    return FormView(form, widgets, options, age, make_render_token(form), settings.minimum_age)


# --------------------------------------------------------------------------- checking a submission
@dataclass
class Cleaned:
    profile: dict[str, Any]
    answers: dict[str, str | bool]
    topics: list[str]
    channels: list[str]
    age_confirmed: bool


def _bad_characters(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\r\t" for ch in value)


def _clean_profile(name: str, value: str, country: str | None) -> Any:
    """A contact field's value in the form ``upsert`` takes; raises ``ValueError`` with the
    message for the person."""
    if name == "email":
        try:
            return normalise_email(value, check_deliverability=get_settings().check_deliverability).address
        except ValidationProblem:
            raise ValueError("Enter an email address like name@example.com.") from None
    if name == "phone":
        try:
            return normalise_phone(value, region=country)
        except ValidationProblem:
            raise ValueError("Enter a phone number with its country code, like +49 30 1234567.") from None
    if name == "country":
        if len(value) != 2 or not value.isascii() or not value.isalpha():
            raise ValueError("Enter a two-letter country code, like DE.")
        return value.upper()
    if name == "date_of_birth":
        try:
            born = date.fromisoformat(value)
        except ValueError:
            raise ValueError("Enter the date as year-month-day, like 1990-04-21.") from None
        if born > date.today():
            raise ValueError("The date of birth cannot be in the future.")
        return born
    return value


def clean(session: Session, view: FormView, raw: Raw, *, partial: bool) -> Cleaned:
    """Check what was typed against the form; errors are set on ``view`` (shown again)."""
    form = view.form
    errors: list[tuple[str, str]] = []
    profile: dict[str, Any] = {}
    answers: dict[str, str | bool] = {}
    country = _first(raw, "country").strip().upper() or None
    for widget in view.widgets:
        value = widget.value.strip()
        problem: str | None = None
        is_question = form.field(widget.name) is None
        if widget.kind == "checkbox":
            if widget.checked or not partial:
                answers[widget.name] = widget.checked
            if widget.required and not widget.checked and not partial:
                problem = f"Please tick “{widget.label}”."
        elif not value:
            if widget.required and (not partial or widget.name == "email"):
                problem = (
                    f"Please choose an answer to “{widget.label}”."
                    if widget.kind == "choice"
                    else f"Please fill in “{widget.label}”."
                )
        elif len(value) > widget.max_length:
            problem = f"“{widget.label}” can be at most {widget.max_length} characters long."
        elif _bad_characters(value):
            problem = f"“{widget.label}” contains characters that are not allowed."
        elif widget.kind == "choice" and value not in widget.choices:
            problem = f"Please choose one of the answers offered for “{widget.label}”."
        elif is_question:
            answers[widget.name] = value
        else:
            try:
                profile[widget.name] = _clean_profile(widget.name, value, country)
            except ValueError as exc:
                problem = str(exc)
        if problem:
            widget.error = problem
            errors.append((widget.id, problem))

    offered_topics = {o.value for o in view.options if o.field == "topic"}
    topics = [t for t in dict.fromkeys(raw.get("topic", [])) if t in offered_topics]
    channels: list[str] = [c for c in dict.fromkeys(raw.get("channel", [])) if c in form.channels]
    if partial:
        topics, channels = [], []  # a survey saved for later asks for nothing
    elif form.kind == "registration" and not (topics or channels):
        view.options_error = "Tick at least one thing you would like to hear about."
        errors.append((view.options[0].id if view.options else "f-email", view.options_error))
    if "postal" in channels and not (profile.get("address_line1") and profile.get("zip")):
        view.options_error = "To get letters, fill in your street and postcode."
        errors.append(("f-channel-postal", view.options_error))
    if "phone" in channels and not profile.get("phone"):
        view.options_error = "To be called, fill in your phone number."
        errors.append(("f-channel-phone", view.options_error))

    age_confirmed = False
    if view.age is not None:
        age_confirmed = view.age.checked
        if not age_confirmed:
            view.age.error = f"Please confirm that you are {view.minimum_age} or over."
            errors.append((view.age.id, view.age.error))
    elif profile.get("date_of_birth") is not None:
        age_confirmed = True  # the date of birth is checked below
    view.errors = errors
    return Cleaned(profile, answers, topics, channels, age_confirmed)


# --------------------------------------------------------------------------- submitting
Status = Literal["received", "saved", "invalid", "refused", "stale"]


@dataclass
class SubmitResult:
    status: Status
    form: FormSpec
    view: FormView | None = None
    message: str = ""
    #: The confirmation mail to send once the answer is out (None: none is sent).
    mail: recipients.OutgoingMail | None = None


def thanks(form: FormSpec, *, partial: bool) -> str:
    """The answer to every accepted submission of this form, whatever happened to it:
    it depends on the form and on "save for later" only, so it reveals nothing."""
    if partial:
        return (
            "Thank you: your answers so far are saved. To finish the survey, fill it in again "
            "with the same email address."
        )
    if form.thanks:
        return form.thanks
    if form.offers_consent:
        lead = "Thank you for signing up." if form.kind == "registration" else "Thank you for your answers."
        return (
            f"{lead} If you asked to hear from us, we have sent you an email to confirm: "
            "nothing is sent to you until you follow the link in it."
        )
    return "Thank you for your answers."


def refusal(minimum_age: int) -> str:
    return (
        f"Sorry, we can only accept this from people aged {minimum_age} or over. "
        "Nothing you entered has been kept."
    )


def _accepted(form: FormSpec, partial: bool) -> SubmitResult:
    return SubmitResult("saved" if partial else "received", form, message=thanks(form, partial=partial))


def allow_ip(client_ip: str | None) -> bool:
    return LIMITER.allow(f"forms-ip:{client_ip or '?'}", get_settings().forms_per_ip_per_hour)


def _identifier_hashes(profile: dict[str, Any]) -> list[str]:
    email = normalise_email(profile["email"])
    hashes = [keyed_hash(IdentifierKind.EMAIL, email.key), keyed_hash(IdentifierKind.DOMAIN, email.domain)]
    if profile.get("phone"):
        hashes.append(keyed_hash(IdentifierKind.PHONE, profile["phone"]))
    key = postal_key(profile.get("address_line1"), profile.get("zip"), profile.get("country"))
    if key:
        hashes.append(keyed_hash(IdentifierKind.POSTAL, key))
    return hashes


def address_blocked(session: Session, profile: dict[str, Any]) -> bool:
    """The address may not get email at all: a suppression of email (or of every channel)
    that is blocking or covers every topic, or the person opted out of email as a whole."""
    for supp in suppressions.active_for_hashes(session, _identifier_hashes(profile), channel="email"):
        if supp.reason in BLOCKING_REASONS or supp.topic is None:
            return True
    existing = contacts.find_by_email(session, profile["email"])
    if existing is None or existing.id is None:
        return False
    return (
        session.exec(
            select(Preference).where(
                Preference.contact_id == existing.id,
                Preference.channel == Channel.EMAIL.value,
                col(Preference.topic).is_(None),
                Preference.status == PreferenceStatus.OPTED_OUT.value,
            )
        ).first()
        is not None
    )


def _needs_asking(session: Session, contact: Contact, change: PreferenceChange) -> bool:
    """Not opted in yet and nothing against it: the gate says ``no_consent`` (asked in the
    GDPR reading whatever the consent mode, so that a form always records consent)."""
    assert contact.id is not None
    decision = gate.check(
        session,
        [contact.id],
        channel=change.channel,
        topic=change.topic,
        purpose=Purpose.MARKETING,
        consent_mode=ConsentMode.OPT_IN,
    )[contact.id]
    return decision.reason == "no_consent"


def submit(session: Session, form: FormSpec, raw: Raw, actor: Actor) -> SubmitResult:
    """Handle one submission (the body read already, the IP rate limit passed)."""
    settings = get_settings()
    partial = is_partial(form, raw)
    if _first(raw, form.honeypot).strip():
        return _accepted(form, partial)  # a bot: the usual answer, nothing kept

    view = form_view(session, form, raw)
    freshness = check_render_token(form, _first(raw, "form_token"))
    if freshness != "ok":
        view.notice = (
            "Please check your answers and send the form again."
            if freshness == "too_fast"
            else "This form had expired or changed. Please check your answers and send it again."
        )
        return SubmitResult("stale", form, view, view.notice)

    cleaned = clean(session, view, raw, partial=partial)
    if view.errors:
        return SubmitResult("invalid", form, view, "Please correct the answers marked below.")

    born = cleaned.profile.get("date_of_birth")
    if born is not None and contacts.underage_reason(born, None):
        return SubmitResult("refused", form, message=refusal(settings.minimum_age))

    if address_blocked(session, cleaned.profile):
        return _accepted(form, partial)  # the same answer; nothing kept, nothing sent

    source = Source.SURVEY_PARTIAL if partial else Source(form.source)
    detail: dict[str, str | int | float | bool | None] = {"form": form.name, "form_version": form.version}
    first = contacts.upsert(
        session,
        ContactIn(
            **cleaned.profile,
            **({"age_confirmed": True} if cleaned.age_confirmed else {}),
            attributes=dict(cleaned.answers) or None,
            source=source,
            source_detail=detail,
            merge="fill_empty",
        ),
        actor,
    )
    if first.erased_reason:
        return SubmitResult("refused", form, message=refusal(settings.minimum_age))
    contact = first.contact
    if not first.created:
        if cleaned.answers:  # the form's own answers are replaced by the newest ones
            contacts.upsert(
                session,
                ContactIn(
                    email=cleaned.profile["email"],
                    attributes=dict(cleaned.answers),
                    source=source,
                    source_detail=detail,
                    merge="overwrite",
                ),
                actor,
            )
        if contact.source == Source.SURVEY_PARTIAL and source == Source.SURVEY:
            contact.source = Source.SURVEY.value  # the survey was finished
            session.add(contact)
            session.flush()

    changes = [PreferenceChange(Channel.EMAIL, t, PreferenceStatus.OPTED_IN) for t in cleaned.topics]
    changes += [PreferenceChange(Channel(c), None, PreferenceStatus.OPTED_IN) for c in cleaned.channels]
    pending = [c for c in changes if _needs_asking(session, contact, c)]
    result = _accepted(form, partial)
    if not pending or contact.email_hash is None:
        return result
    per_address = settings.forms_confirmations_per_address_per_hour
    if not LIMITER.allow(f"forms-address:{contact.email_hash}", per_address):
        return result
    result.mail = recipients.ask_for_confirmation(
        session,
        contact,
        pending,
        recipients.labels_for(session, contact, pending),
        actor,
        method="form",
        text_shown=form.consent_text,
        text_version=form.shown_consent_version,
        evidence={"form": form.name, "form_version": form.version, "source": source.value},
        subject=f"Please confirm your subscription to {settings.sender_name}",
        template="confirm_subscription",
        context={"form_title": form.title},
    )
    return result
