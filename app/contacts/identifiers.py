"""Normalising the identifiers a person is reached by: email, phone, postal address.

Normalised forms are what contacts store and what the keyed hashes are made of, so the
rules here decide whether two spellings are the same person. Email addresses are checked
with email-validator (no DNS unless configured; internationalised addresses accepted);
phone numbers are parsed with phonenumbers and kept in E.164.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any, NamedTuple

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from app.errors import ValidationProblem

_SPACES = re.compile(r"\s+")


class NormalisedEmail(NamedTuple):
    """An address as email-validator normalises it (a named tuple: an import makes one per
    row, five times faster than a frozen dataclass)."""

    address: str
    #: Lower-cased form that hashes and matching use: suppression ignores letter case.
    key: str
    #: ASCII (IDNA) form of the domain, lower case.
    domain: str


#: Plain ASCII addresses: a dot-atom local part and an LDH domain with an alphabetic TLD,
#: no ``--`` anywhere in the domain (so no Punycode or R-LDH labels), well inside every
#: length limit. Anything else goes to email-validator.
PLAIN_EMAIL = re.compile(
    r"([A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})"
)


#: domain as written -> its lower-case form, or None where the fast path defers it (a
#: special-use name that email-validator refuses, or a ``--`` in it); under ``""`` the
#: (id, length) of the special-use list the answers were computed from.
_DOMAINS: dict[str, Any] = {}


def _domain_verdict(domain: str) -> str | None:
    lowered = domain.lower()
    if "--" in lowered or any(
        lowered == name or lowered.endswith("." + name) for name in email_validator.SPECIAL_USE_DOMAIN_NAMES
    ):
        return None
    return lowered


def fast_normalise_email(raw: str) -> NormalisedEmail | None:
    """The result email-validator gives for a plain ASCII address, about ten times
    faster; ``None`` when the address is not plain (then ask email-validator).

    Agreement with email-validator is a property test (tests/contacts/test_identifiers.py):
    whenever this returns a value, ``validate_email`` accepts the address and normalises
    it the same way. It never rejects: rejections and their messages come from
    email-validator."""
    match = PLAIN_EMAIL.fullmatch(raw)
    if match is None:
        return None
    local, domain = match.groups()
    if len(local) > 60 or len(raw) > 200:
        return None
    lowered = plain_domain(domain)
    if lowered is None:
        return None
    return NormalisedEmail(f"{local}@{lowered}", f"{local.lower()}@{lowered}", lowered)


def plain_domain(domain: str) -> str | None:
    """The lower-case form :func:`fast_normalise_email` gives the domain of an address
    that matches :data:`PLAIN_EMAIL`, or None where it defers to email-validator (a
    special-use name, or a ``--`` in it). Answers are remembered per domain."""
    names = email_validator.SPECIAL_USE_DOMAIN_NAMES
    if _DOMAINS.get("") != (id(names), len(names)):  # the list was replaced or changed
        _DOMAINS.clear()
        _DOMAINS[""] = (id(names), len(names))
    lowered = _DOMAINS.get(domain, _UNSEEN)
    if lowered is _UNSEEN:
        lowered = _domain_verdict(domain)
        if len(_DOMAINS) > 10_000:
            _DOMAINS.clear()
            _DOMAINS[""] = (id(names), len(names))
        _DOMAINS[domain] = lowered
    return lowered


def normalise_email(raw: str, *, check_deliverability: bool = False, field: str = "email") -> NormalisedEmail:
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationProblem("an email address is required", field=field)
    if not check_deliverability:
        fast = fast_normalise_email(raw.strip())
        if fast is not None:
            return fast
    try:
        result = validate_email(
            raw.strip(),
            check_deliverability=check_deliverability,
            allow_smtputf8=True,
        )
    except EmailNotValidError as exc:
        raise ValidationProblem(f"invalid email address: {exc}", field=field) from exc
    domain = (result.ascii_domain or result.domain).lower()
    local = result.local_part
    key = f"{local}@{domain}".lower()
    return NormalisedEmail(address=result.normalized, key=key, domain=domain)


def normalise_domain(raw: str, *, field: str = "address") -> str:
    value = raw.strip().lstrip("@").rstrip(".").lower()
    if not value or " " in value or "." not in value:
        raise ValidationProblem("invalid domain name", field=field)
    try:
        result = validate_email(f"x@{value}", check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValidationProblem(f"invalid domain name: {exc}", field=field) from exc
    return (result.ascii_domain or result.domain).lower()


#: An international number written with digits, spaces and hyphens only.
_PLAIN_PHONE = re.compile(r"\+[1-9][0-9 \-]{1,40}")
_NATIONAL_PREFIXES: dict[int, re.Pattern[str] | None] = {}


def fast_normalise_phone(raw: str) -> str | None:
    """The E.164 form ``normalise_phone`` gives for a plain international number (``+``,
    the country code, digits with spaces or hyphens), about five times faster; ``None``
    when the number is not plain or not valid (then ask phonenumbers itself, which also
    words the error).

    It does what ``phonenumbers.parse`` does for such a number — the country code is the
    shortest known prefix, the rest the national number — and leaves to ``parse`` every
    number where more is involved: a national number starting with 0 (Italian leading
    zeros) or with the region's national prefix (parse may strip it), and lengths parse
    refuses. Agreement with phonenumbers is a property test
    (tests/contacts/test_identifiers.py)."""
    if _PLAIN_PHONE.fullmatch(raw) is None:
        return None
    digits = raw[1:].replace(" ", "").replace("-", "")
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[size:]
    if not 2 <= len(national) <= 17 or national[0] == "0":
        return None
    if code not in _NATIONAL_PREFIXES:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            code, phonenumbers.region_code_for_country_code(code)
        )
        prefix = metadata.national_prefix_for_parsing if metadata is not None else None
        _NATIONAL_PREFIXES[code] = re.compile(prefix) if prefix else None
        if metadata is None:
            return None
    prefix_pattern = _NATIONAL_PREFIXES[code]
    if prefix_pattern is not None and prefix_pattern.match(national):
        return None
    valid = _VALIDITY.get(code, _UNSEEN)
    if valid is _UNSEEN:
        valid = _VALIDITY[code] = _validity(code)
    if valid is None:  # a calling code shared by several regions: ask phonenumbers
        number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
        if not phonenumbers.is_valid_number(number):
            return None
    elif not valid(national):
        return None
    return f"+{code}{national}"


_UNSEEN: Any = object()
#: calling code -> national number -> valid?, for calling codes of a single region.
_VALIDITY: dict[int, Any] = {}


def _validity(code: int) -> Callable[[str], bool] | None:
    """``phonenumbers.is_valid_number`` for a calling code of a single region, from the
    same metadata with its patterns compiled once: the number's length must be one the
    region's general description allows and match its pattern, and one of the number
    types ``_number_type_helper`` tries (premium rate … voicemail, fixed line, mobile
    unless it is the fixed-line pattern) must allow that length and match. The patterns
    of the types that allow a length are joined into one expression per length. None for
    calling codes shared by several regions (+1, +7, +44, …), which need phonenumbers' own
    choice of region."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code)
    if not regions or len(regions) != 1:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, regions[0].upper())
    if metadata is None or metadata.general_desc is None:
        return None

    def desc(item: Any) -> tuple[frozenset[int], str] | None:
        if item is None or not item.national_number_pattern:
            return None
        return frozenset(item.possible_length or ()), item.national_number_pattern

    general = desc(metadata.general_desc)
    if general is None:
        return None
    kinds = [
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
    ]
    if not metadata.same_mobile_and_fixed_line_pattern:
        kinds.append(metadata.mobile)
    specific = [d for d in map(desc, kinds) if d is not None]
    general_lengths, general_pattern = general
    general_re = re.compile(general_pattern)
    by_length: dict[int, re.Pattern[str]] = {}
    for length in range(2, 18):
        if general_lengths and length not in general_lengths:
            continue
        patterns = [pattern for lengths, pattern in specific if not lengths or length in lengths]
        if patterns:
            by_length[length] = re.compile("|".join(f"(?:{p})" for p in patterns))

    def valid(national: str) -> bool:
        found = by_length.get(len(national))
        return (
            found is not None
            and general_re.fullmatch(national) is not None
            and found.fullmatch(national) is not None
        )

    return valid


def normalise_phone(raw: str, *, region: str | None = None, field: str = "phone") -> str:
    """Return the number in E.164; numbers without a country code need ``region``."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationProblem("a phone number is required", field=field)
    fast = fast_normalise_phone(raw.strip())
    if fast is not None:
        return fast
    try:
        number = phonenumbers.parse(raw.strip(), (region or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region else " (use the international form, +<country code>…)"
        raise ValidationProblem(f"invalid phone number: {exc.args[0]}{hint}", field=field) from exc
    if not phonenumbers.is_valid_number(number):
        raise ValidationProblem("invalid phone number: not a valid number", field=field)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _fold(value: str | None) -> str:
    if not value:
        return ""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", value)).strip().casefold()


def postal_key(line1: str | None, zip_code: str | None, country: str | None) -> str | None:
    """Canonical key of a postal address (first line, postcode, country), or None."""
    a, z = _fold(line1), _fold(zip_code).replace(" ", "")
    if not a or not z:
        return None
    return f"{a}|{z}|{_fold(country)}"


def mask_email(key: str) -> str:
    local, _, domain = key.partition("@")
    return f"{local[:2]}…@{domain}"


def mask_phone(e164: str) -> str:
    return f"{e164[:3]}…{e164[-3:]}"
