"""Which column of a lead file holds what.

A mapping is ``{column header: target}``. Targets are contact fields (``email``, ``name``,
``first_name`` …), consent columns (``email_consent``, ``email_consent_date`` …),
``topics``, ``topic:<slug>`` (yes/no per topic), ``attribute:<key>`` (a custom attribute),
``attributes`` (a JSON object, as listmonk exports it) or ``ignore``. Without an explicit
mapping, headers are recognised from common spellings, including Mailchimp's and
listmonk's export columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.errors import ValidationProblem

PROFILE_TARGETS = (
    "email",
    "name",
    "first_name",
    "last_name",
    "phone",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "zip",
    "country",
    "company",
    "position",
    "primary_business",
    "date_of_birth",
    "age_confirmed",
)
CHANNELS = ("email", "postal", "phone")
CONSENT_TARGETS = tuple(
    f"{channel}_{suffix}" for channel in CHANNELS for suffix in ("consent", "consent_date", "consent_text")
)
OTHER_TARGETS = ("consent_version", "consent_ip", "email_opt_out", "topics", "attributes", "ignore")
TARGETS = frozenset((*PROFILE_TARGETS, *CONSENT_TARGETS, *OTHER_TARGETS))
PREFIXED = ("topic:", "attribute:")

_ALIASES: dict[str, tuple[str, ...]] = {
    "email": ("email", "e_mail", "email_address", "emailaddress", "mail", "e_mail_address"),
    "name": ("name", "full_name", "fullname", "contact_name", "display_name"),
    "first_name": ("first_name", "firstname", "given_name", "fname", "first", "vorname", "prenom"),
    "last_name": ("last_name", "lastname", "surname", "family_name", "lname", "last", "nachname", "nom"),
    "phone": (
        "phone",
        "phone_number",
        "telephone",
        "telephone_number",
        "tel",
        "mobile",
        "mobile_phone",
        "cell",
    ),
    "address_line1": ("address", "address_line1", "address_line_1", "address1", "street", "street_address"),
    "address_line2": ("address_line2", "address_line_2", "address2"),
    "city": ("city", "town", "locality"),
    "region": ("region", "state", "province", "county"),
    "zip": ("zip", "zip_code", "zipcode", "postcode", "postal_code", "post_code", "plz"),
    "country": ("country", "country_code"),
    "company": ("company", "company_name", "organisation", "organization", "employer"),
    "position": ("position", "job_title", "jobtitle"),
    "primary_business": ("primary_business", "industry", "business"),
    "date_of_birth": ("date_of_birth", "dob", "birth_date", "birthdate"),
    "age_confirmed": ("age_confirmed", "over_18", "is_adult", "adult"),
    "email_consent": (
        "email_consent",
        "consent",
        "email_opt_in",
        "opt_in",
        "optin",
        "marketing_consent",
        "gdpr_consent",
        "newsletter",
    ),
    # Mailchimp: OPTIN_TIME / CONFIRM_TIME (the double opt-in confirmation wins).
    "email_consent_date": ("email_consent_date", "consent_date", "confirm_time", "optin_time", "opt_in_date"),
    "email_consent_text": ("email_consent_text", "consent_text", "consent_wording"),
    "postal_consent": ("postal_consent", "post_consent", "mail_consent", "postal_opt_in"),
    "postal_consent_date": ("postal_consent_date",),
    "postal_consent_text": ("postal_consent_text",),
    "phone_consent": ("phone_consent", "sms_consent", "call_consent", "telephone_consent", "phone_opt_in"),
    "phone_consent_date": ("phone_consent_date",),
    "phone_consent_text": ("phone_consent_text",),
    "consent_version": ("consent_version", "consent_text_version"),
    "consent_ip": ("consent_ip", "confirm_ip", "optin_ip"),
    # Mailchimp's "unsubscribed" export: UNSUB_TIME.
    "email_opt_out": ("email_opt_out", "unsub_time", "unsubscribed_at", "opt_out_date"),
    "topics": ("topics", "topic", "interests", "subscriptions"),
    "attributes": ("attributes",),
}
_BY_HEADER = {alias: target for target, aliases in _ALIASES.items() for alias in aliases}
_NON_WORD = re.compile(r"[^0-9a-z]+")
#: listmonk's subscriber export: its ``status`` is ``enabled`` or ``blocklisted``.
_LISTMONK = {"uuid", "email", "name", "attributes", "status"}


def normalise_header(header: str) -> str:
    return _NON_WORD.sub("_", header.strip().lower()).strip("_")


@dataclass(frozen=True, slots=True)
class Mapping:
    #: Target of each column, by position; ``ignore`` for unmapped columns.
    targets: tuple[str, ...]
    header: tuple[str, ...]
    #: Headers that were not recognised (reported, their cells are not imported).
    unmapped: tuple[str, ...] = field(default=())

    def describe(self) -> dict[str, object]:
        columns = {h: t for h, t in zip(self.header, self.targets, strict=True) if t != "ignore"}
        return {"columns": columns, "unmapped": list(self.unmapped), "header": list(self.header)}


def _check_target(target: str, column: str) -> str:
    target = target.strip()
    if target in TARGETS:
        return target
    for prefix in PREFIXED:
        if target.startswith(prefix) and len(target) > len(prefix) and len(target) <= len(prefix) + 64:
            return prefix + target[len(prefix) :].strip()
    raise ValidationProblem(
        f"column {column!r}: unknown target {target!r} (a contact field, a consent column, "
        "topics, topic:<slug>, attribute:<key>, attributes or ignore)",
        field="mapping",
    )


def _detect_one(header: str, listmonk: bool) -> str | None:
    raw = header.strip()
    lowered = raw.lower()
    for prefix, target_prefix in (
        ("attr:", "attribute:"),
        ("attribute:", "attribute:"),
        ("topic:", "topic:"),
    ):
        if lowered.startswith(prefix) and len(raw) > len(prefix):
            return target_prefix + raw[len(prefix) :].strip()
    key = normalise_header(raw)
    if listmonk and key == "status":
        return "email_opt_out"
    if listmonk and key == "attributes":
        return "attributes"
    return _BY_HEADER.get(key)


def build(header: list[str], explicit: dict[str, str] | None = None) -> Mapping:
    """The mapping of a file: explicit entries win; other columns are recognised by name."""
    explicit = dict(explicit or {})
    known = set(header)
    for column in explicit:
        if column not in known:
            raise ValidationProblem(
                f"the mapping names column {column!r}, which the file does not have", field="mapping"
            )
    listmonk = {normalise_header(h) for h in header} >= _LISTMONK
    targets: list[str] = []
    unmapped: list[str] = []
    taken: dict[str, str] = {}
    for column in header:
        if column in explicit:
            target = _check_target(explicit[column], column)
        else:
            target = _detect_one(column, listmonk) or "ignore"
            if target == "ignore" and column.strip():
                unmapped.append(column)
            elif target in taken and not target.startswith(PREFIXED):
                # Two columns for one field (e.g. OPTIN_TIME and CONFIRM_TIME): keep the first
                # explicit or recognised one, except that a confirmation time beats an opt-in time.
                if normalise_header(column) == "confirm_time":
                    targets[header.index(taken[target])] = "ignore"
                else:
                    target = "ignore"
                    unmapped.append(column)
        if target != "ignore" and not target.startswith(PREFIXED):
            if target in taken and column in explicit and taken[target] in explicit:
                raise ValidationProblem(
                    f"columns {taken[target]!r} and {column!r} both map to {target}", field="mapping"
                )
            taken[target] = column
        targets.append(target)
    if "email" not in targets and "phone" not in targets and "address_line1" not in targets:
        raise ValidationProblem(
            "no column holds an email address, a phone number or a postal address "
            f"(columns: {', '.join(header)}); give a mapping",
            field="mapping",
        )
    return Mapping(targets=tuple(targets), header=tuple(header), unmapped=tuple(unmapped))
