"""Turning one CSV record into a validated, normalised lead — or a reject with its reason.

Everything here is a pure function of the record and a :class:`Context`, with no database,
so batches can be prepared in other processes while the importer writes the previous one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from app.contacts.identifiers import normalise_email, normalise_phone, postal_key
from app.contacts.schemas import MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES
from app.errors import ValidationProblem
from app.suppression.hashing import keyed_hasher

YES = frozenset(
    {"yes", "y", "true", "t", "1", "x", "ja", "oui", "si", "opted_in", "subscribed", "confirmed", "on"}
)
NO = frozenset({"no", "n", "false", "f", "0", "nein", "non", "opted_out", "unsubscribed", "off"})
#: ``email_opt_out`` values that mean "this person opted out" (besides a date and YES).
OPTED_OUT = frozenset({"blocklisted", "blacklisted", "unsubscribed", "opted_out", "cleaned"})
NOT_OPTED_OUT = frozenset({"", "enabled", "active", "subscribed"})
LIMITS = {
    "name": 200,
    "first_name": 200,
    "last_name": 200,
    "address_line1": 200,
    "address_line2": 200,
    "company": 200,
    "position": 200,
    "primary_business": 200,
    "city": 120,
    "region": 120,
    "zip": 20,
}
_TOPIC_SPLIT = re.compile(r"\s*[,;|]\s*")
_DATE_SLASHED = re.compile(r"(\d{1,4})[./-](\d{1,2})[./-](\d{1,4})")


@dataclass(frozen=True, slots=True)
class Context:
    targets: tuple[str, ...]
    hash_key: bytes
    #: Topic slug or lower-cased name -> slug.
    topics: dict[str, str]
    default_topics: tuple[str, ...] = ()
    #: ``01/02/1990`` is 1 February (day first) or 2 January.
    day_first: bool = True
    region: str = ""
    minimum_age: int = 18
    today: date = field(default_factory=date.today)
    consent_text: str | None = None
    consent_version: str | None = None
    check_deliverability: bool = False


@dataclass(slots=True)
class Lead:
    row: int
    #: Keyed hash the row is matched and de-duplicated by (email, else phone, else postal).
    key: str
    key_kind: str
    email: str | None
    email_hash: str | None
    domain_hash: str | None
    phone_hash: str | None
    postal_hash: str | None
    #: Normalised profile fields given in the row (empty cells left out).
    values: dict[str, Any]
    attributes: dict[str, Any]
    #: (channel, topic or None) the row opts in to / out of.
    opt_ins: list[tuple[str, str | None]]
    opt_outs: list[tuple[str, str | None]]
    #: Per channel: when consent was given (ISO date) and the wording shown.
    given_at: dict[str, str]
    texts: dict[str, str]
    consent_version: str | None
    consent_ip: str | None
    underage: bool = False
    age_refused: bool = False
    #: Rows merged into this one (duplicates inside the same batch).
    merged_rows: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reject:
    row: int
    field: str | None
    reason: str
    cells: list[str]


class _Bad(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


_DOMAINS: dict[tuple[bytes, str], str] = {}


def keyed(key: bytes, kind: str, value: str) -> str:
    """Same as :func:`app.suppression.hashing.keyed_hash`, with the key passed in."""
    return keyed_hasher(key)(kind, value)


def _domain_hash(key: bytes, domain: str) -> str:
    found = _DOMAINS.get((key, domain))
    if found is None:
        if len(_DOMAINS) > 50_000:
            _DOMAINS.clear()
        found = _DOMAINS[(key, domain)] = keyed(key, "domain", domain)
    return found


def _yes_no(value: str, column: str) -> bool | None:
    lowered = value.strip().lower()
    if not lowered:
        return None
    if lowered in YES:
        return True
    if lowered in NO:
        return False
    raise _Bad(column, f"{column}: expected yes or no, got {value.strip()[:40]!r}")


_DATES: dict[tuple[str, bool], date] = {}


def parse_date(value: str, column: str, *, day_first: bool) -> date:
    found = _DATES.get((value, day_first))
    if found is None:
        found = _parse_date(value, column, day_first=day_first)
        if len(_DATES) > 20_000:
            _DATES.clear()
        _DATES[(value, day_first)] = found
    return found


_ISO_DATES: dict[tuple[str, bool], str] = {}


def _iso_date(value: str, column: str, day_first: bool) -> str:
    """``parse_date(…).isoformat()``, cached (consent dates repeat across a file)."""
    found = _ISO_DATES.get((value, day_first))
    if found is None:
        found = parse_date(value, column, day_first=day_first).isoformat()
        if len(_ISO_DATES) > 20_000:
            _ISO_DATES.clear()
        _ISO_DATES[(value, day_first)] = found
    return found


def _parse_date(value: str, column: str, *, day_first: bool) -> date:
    text = value.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        pass
    match = _DATE_SLASHED.fullmatch(text.split(" ")[0])
    if match:
        a, b, c = (int(x) for x in match.groups())
        if len(match.group(1)) == 4:
            year, month, day = a, b, c
        else:
            year = c + (2000 if c < 100 and c <= date.today().year % 100 else 1900 if c < 100 else 0)
            day, month = (a, b) if day_first else (b, a)
        try:
            return date(year, month, day)
        except ValueError:
            pass
    raise _Bad(column, f"{column}: not a date: {text[:40]!r} (use YYYY-MM-DD)")


def _age(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _email(value: str, ctx: Context) -> tuple[str, str, str]:
    try:
        found = normalise_email(value, check_deliverability=ctx.check_deliverability)
    except ValidationProblem as exc:
        raise _Bad("email", str(exc)) from exc
    return found.address, found.key, found.domain


def prepare(row: int, cells: list[str], ctx: Context) -> Lead | Reject:
    """One record -> a lead, or a reject naming the column and the reason."""
    try:
        return _prepare(row, cells, ctx)
    except _Bad as bad:
        return Reject(row, bad.field, bad.reason, cells)


# What each column is, decided once per header (the per-cell work is then one lookup).
_LIMITED, _EMAIL, _PHONE, _COUNTRY, _BIRTH, _AGE, _CONSENT, _GIVEN, _TEXT = range(9)
_VERSION, _IP, _OPT_OUT, _TOPICS, _TOPIC, _ATTRIBUTE, _ATTRIBUTES = range(9, 16)
_PLANS: dict[tuple[str, ...], tuple[tuple[int, int, str, str], ...]] = {}


def _column_plan(targets: tuple[str, ...]) -> tuple[tuple[int, int, str, str], ...]:
    """(cell index, kind, target, argument) for every column that is not ignored."""
    found = _PLANS.get(targets)
    if found is not None:
        return found
    plan: list[tuple[int, int, str, str]] = []
    for i, target in enumerate(targets):
        if target == "ignore":
            continue
        if target in LIMITS:
            step = (_LIMITED, target)
        elif target in ("email", "phone", "country", "date_of_birth", "age_confirmed"):
            step = ({"email": _EMAIL, "phone": _PHONE, "country": _COUNTRY}.get(target, -1), target)
            step = (_BIRTH if target == "date_of_birth" else _AGE, target) if step[0] < 0 else step
        elif target.endswith("_consent"):
            step = (_CONSENT, target.removesuffix("_consent"))
        elif target.endswith("_consent_date"):
            step = (_GIVEN, target.removesuffix("_consent_date"))
        elif target.endswith("_consent_text"):
            step = (_TEXT, target.removesuffix("_consent_text"))
        elif target == "consent_version":
            step = (_VERSION, target)
        elif target == "consent_ip":
            step = (_IP, target)
        elif target == "email_opt_out":
            step = (_OPT_OUT, target)
        elif target == "topics":
            step = (_TOPICS, target)
        elif target.startswith("topic:"):
            step = (_TOPIC, target.removeprefix("topic:"))
        elif target.startswith("attribute:"):
            step = (_ATTRIBUTE, target.removeprefix("attribute:"))
        elif target == "attributes":
            step = (_ATTRIBUTES, target)
        else:
            continue
        plan.append((i, step[0], target, step[1]))
    if len(_PLANS) > 100:
        _PLANS.clear()
    result = _PLANS[targets] = tuple(plan)
    return result


def _prepare(row: int, cells: list[str], ctx: Context) -> Lead:
    if len(cells) != len(ctx.targets):
        raise _Bad(
            None,
            f"the row has {len(cells)} cells but the header has {len(ctx.targets)} columns"
            + (" (was the file cut off?)" if len(cells) < len(ctx.targets) else ""),
        )
    values: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    consent: dict[str, bool] = {}
    given: dict[str, str] = {}
    texts: dict[str, str] = {}
    topic_ins: list[str] = []
    topic_outs: list[str] = []
    listed_topics: list[str] = []
    opted_out_email = False
    version = ctx.consent_version
    ip: str | None = None
    for i, kind, target, arg in _column_plan(ctx.targets):
        raw = cells[i]
        if "\x00" in raw:
            raise _Bad(target, f"{target}: contains the NUL character")
        value = raw.strip()
        if not value:
            continue
        if kind == _LIMITED:
            if len(value) > LIMITS[target]:
                raise _Bad(target, f"{target}: longer than {LIMITS[target]} characters")
            values[target] = value
        elif kind in (_EMAIL, _PHONE):
            values[target] = value
        elif kind == _CONSENT:
            answer = _yes_no(value, target)
            if answer is not None:
                consent[arg] = answer
        elif kind == _GIVEN:
            given[arg] = _iso_date(value, target, ctx.day_first)
        elif kind == _COUNTRY:
            if len(value) != 2 or not value.isascii() or not value.isalpha():
                raise _Bad("country", f"country: expected a two-letter code (ISO 3166), got {value[:40]!r}")
            values["country"] = value.upper()
        elif kind == _TOPICS:
            listed_topics.extend(topic_list(value, ctx))
        elif kind == _BIRTH:
            values["date_of_birth"] = parse_date(value, target, day_first=ctx.day_first)
        elif kind == _AGE:
            values["age_confirmed"] = _yes_no(value, target)
        elif kind == _TEXT:
            texts[arg] = value[:5000]
        elif kind == _VERSION:
            version = value[:64]
        elif kind == _IP:
            ip = value[:64]
        elif kind == _OPT_OUT:
            lowered = value.lower()
            if lowered in OPTED_OUT or lowered in YES:
                opted_out_email = True
            elif lowered not in NOT_OPTED_OUT and lowered not in NO:
                parse_date(value, target, day_first=ctx.day_first)  # a date: opted out then
                opted_out_email = True
        elif kind == _TOPIC:
            slug = _topic(arg, ctx)
            answer = _yes_no(value, target)
            if answer is not None:
                (topic_ins if answer else topic_outs).append(slug)
        elif kind == _ATTRIBUTE:
            if len(value) > MAX_ATTRIBUTE_VALUE:
                raise _Bad(target, f"{target}: longer than {MAX_ATTRIBUTE_VALUE} characters")
            attributes[arg] = value
        elif kind == _ATTRIBUTES:
            attributes.update(_json_attributes(value))
    if len(attributes) > MAX_ATTRIBUTES:
        raise _Bad("attributes", f"more than {MAX_ATTRIBUTES} custom attributes")

    first, last = values.pop("first_name", None), values.pop("last_name", None)
    if "name" not in values and (first or last):
        name = f"{first} {last}" if first and last else first or last
        if len(name) > LIMITS["name"]:
            raise _Bad("name", f"name: longer than {LIMITS['name']} characters")
        values["name"] = name

    email = email_hash = domain_hash = phone_hash = postal_hash = None
    if "email" in values:
        email, email_key, domain = _email(values.pop("email"), ctx)
        email_hash = keyed(ctx.hash_key, "email", email_key)
        domain_hash = _domain_hash(ctx.hash_key, domain)
    if "phone" in values:
        try:
            values["phone"] = normalise_phone(
                values["phone"], region=values.get("country") or ctx.region or None
            )
        except ValidationProblem as exc:
            raise _Bad("phone", str(exc)) from exc
        phone_hash = keyed(ctx.hash_key, "phone", values["phone"])
    pkey = (
        postal_key(values["address_line1"], values.get("zip"), values.get("country"))
        if "address_line1" in values
        else None
    )
    if pkey:
        postal_hash = keyed(ctx.hash_key, "postal", pkey)
    if email_hash:
        key, key_kind = email_hash, "email"
    elif phone_hash:
        key, key_kind = phone_hash, "phone"
    elif values.get("address_line1"):
        key_kind = "postal"
        key = postal_hash or keyed(
            ctx.hash_key, "postal", f"{values['address_line1']}|{values.get('zip', '')}"
        )
    else:
        raise _Bad("email", "the row has no email address, phone number or postal address")

    underage = False
    born = values.get("date_of_birth")
    if born is not None:
        if born > ctx.today:
            raise _Bad("date_of_birth", "date_of_birth: in the future")
        underage = _age(born, ctx.today) < ctx.minimum_age
    age_refused = values.get("age_confirmed") is False

    opt_ins: list[tuple[str, str | None]] = []
    opt_outs: list[tuple[str, str | None]] = []
    for channel, answer in consent.items():
        if not (email if channel == "email" else phone_hash if channel == "phone" else postal_hash):
            raise _Bad(f"{channel}_consent", f"{channel}_consent given but the row has no {_WHAT[channel]}")
        if not answer:
            opt_outs.append((channel, None))
        elif channel != "email":
            opt_ins.append((channel, None))
    if opted_out_email:
        if email is None:
            raise _Bad("email_opt_out", "email_opt_out given but the row has no email address")
        opt_outs.append(("email", None))
    if (topic_ins or topic_outs) and email is None:
        raise _Bad("topics", "topic choices given but the row has no email address")
    if consent.get("email"):
        chosen = listed_topics or list(ctx.default_topics)
        if len(chosen) == 1:
            opt_ins.append(("email", chosen[0]))
        elif chosen:
            opt_ins.extend(("email", slug) for slug in dict.fromkeys(chosen))
        else:
            opt_ins.append(("email", None))
    if topic_ins:
        opt_ins.extend(("email", slug) for slug in dict.fromkeys(topic_ins) if ("email", slug) not in opt_ins)
    if topic_outs:
        opt_outs.extend(("email", slug) for slug in dict.fromkeys(topic_outs))
    # Positional: the order of Lead's fields (cheaper than keywords, once per row).
    return Lead(
        row,
        key,
        key_kind,
        email,
        email_hash,
        domain_hash,
        phone_hash,
        postal_hash,
        values,
        attributes,
        opt_ins,
        opt_outs,
        given,
        texts,
        version,
        ip,
        underage,
        age_refused,
    )


_WHAT = {"email": "email address", "phone": "phone number", "postal": "postal address (line 1 and postcode)"}


def _topic(name: str, ctx: Context) -> str:
    slug = ctx.topics.get(name.strip().lower())
    if slug is None:
        raise _Bad(
            "topics",
            f"unknown topic {name.strip()[:64]!r} (known: {', '.join(sorted(set(ctx.topics.values())))})",
        )
    return slug


def topic_list(value: str, ctx: Context) -> tuple[str, ...]:
    """The topic slugs a ``topics`` cell names (several separated by ``,``, ``;`` or ``|``)."""
    if "," in value or ";" in value or "|" in value:
        return tuple(_topic(name, ctx) for name in _TOPIC_SPLIT.split(value) if name)
    return (_topic(value, ctx),)


def _json_attributes(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise _Bad("attributes", f"attributes: not a JSON object ({exc})") from exc
    if not isinstance(parsed, dict):
        raise _Bad("attributes", "attributes: not a JSON object")
    out: dict[str, Any] = {}
    for key, item in parsed.items():
        if isinstance(item, dict | list):
            item = json.dumps(item, ensure_ascii=False)
        if isinstance(item, str) and len(item) > MAX_ATTRIBUTE_VALUE:
            raise _Bad("attributes", f"attributes: {key!r} is longer than {MAX_ATTRIBUTE_VALUE} characters")
        if isinstance(item, float) and item != item:
            item = None
        out[str(key)[:64]] = item
    return out
