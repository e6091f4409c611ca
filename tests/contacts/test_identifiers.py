"""The fast paths for plain email addresses and international phone numbers must agree
with email-validator and phonenumbers exactly."""

from __future__ import annotations

import random
import string

import email_validator
import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.contacts.identifiers import (
    _validity,
    fast_normalise_email,
    fast_normalise_phone,
    normalise_email,
    normalise_phone,
)
from app.errors import ValidationProblem

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
TRICKY = '.@-"() ,;:<>[]\\\t\n\r\x00ÿéü中\u200b\u2028．'
TLDS = [
    "com",
    "org",
    "de",
    "co",
    "io",
    "museum",
    "xn--p1ai",
    "test",
    "local",
    "localhost",
    "onion",
    "arpa",
    "invalid",
    "c0m",
    "1com",
    "a",
    "example",
    "COM",
    "x-y",
    "ab-",
]


def _label() -> st.SearchStrategy[str]:
    wide = st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=0, max_size=70)
    narrow = st.text(alphabet="axn-1", min_size=0, max_size=8)  # finds "--", "xn--", edges
    return wide | narrow


def address_like() -> st.SearchStrategy[str]:
    local = st.text(alphabet=ATEXT + '."\\ é', min_size=0, max_size=70)
    domain = st.builds(
        lambda labels, tld: ".".join([*labels, tld]),
        st.lists(_label(), min_size=0, max_size=4),
        st.sampled_from(TLDS) | _label(),
    )
    structured = st.builds(lambda a, d: f"{a}@{d}", local, domain)
    noisy = st.text(alphabet=ATEXT + TRICKY, min_size=0, max_size=80)
    return structured | noisy | st.builds(lambda a, b: a + b, structured, noisy)


def _reference(raw: str) -> tuple[str, str, str] | None:
    try:
        result = validate_email(raw, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    domain = (result.ascii_domain or result.domain).lower()
    return result.normalized, f"{result.local_part}@{domain}".lower(), domain


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(address_like())
@example("a@ab--cd.com")
@example("a@xn--bcher-kva.ch")
@example("a@mail.localhost")
@example("a@" + "b" * 64 + ".com")
@example("a" * 65 + "@example.com")
@example("a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com")
def test_fast_path_never_disagrees_with_email_validator(raw: str) -> None:
    fast = fast_normalise_email(raw)
    if fast is None:
        return  # deferred to email-validator: always safe
    assert _reference(raw) == (fast.address, fast.key, fast.domain), raw


def test_fast_path_takes_the_common_addresses_and_defers_the_rest() -> None:
    rng = random.Random(7)
    common = [
        f"{rng.choice(['anna', 'J.Smith', 'bob_99', 'x+tag', 'first.last'])}{i}@"
        f"{rng.choice(['example.com', 'Mail.Example.org', 'sub.domain.co.uk', 'a-b.io'])}"
        for i in range(2000)
    ]
    taken = [a for a in common if fast_normalise_email(a) is not None]
    assert len(taken) == len(common)
    for raw in common[:200]:
        fast = fast_normalise_email(raw)
        assert fast is not None and _reference(raw) == (fast.address, fast.key, fast.domain)
    for deferred in [
        "a@b.test",
        "x@localhost",
        "a..b@c.com",
        "a@xn--bcher-kva.ch",
        "üser@example.com",
        '"quoted"@example.com',
        "a@ab--cd.com",
        "a@example",
        "a@example.c0m",
        " a@example.com",
    ]:
        assert fast_normalise_email(deferred) is None, deferred


def test_fast_path_follows_email_validators_special_use_list(monkeypatch) -> None:
    assert fast_normalise_email("a@mail.example.net") is not None
    monkeypatch.setattr(
        email_validator, "SPECIAL_USE_DOMAIN_NAMES", [*email_validator.SPECIAL_USE_DOMAIN_NAMES, "net"]
    )
    assert fast_normalise_email("a@mail.example.net") is None


def test_normalise_email_answers_as_email_validator_on_both_paths() -> None:
    for raw in ["Anna.B@Example.COM", "  anna@example.com ", "a@xn--bcher-kva.ch", "üser@bücher.de"]:
        got = normalise_email(raw)
        assert _reference(raw.strip()) == (got.address, got.key, got.domain)


# ----------------------------------------------------------------------------- phones
#: Country codes with their quirks: shared (+1, +7), national prefix 0 or 1 or 8 (DE, US,
#: RU), Italian leading zeros (+39), prefixes that are digits of real numbers (AR, MX, BR),
#: non-geographic (+800, +882), and codes that are also prefixes of longer ones.
CODES = [1, 7, 20, 27, 30, 31, 33, 34, 39, 41, 43, 44, 46, 49, 52, 54, 55, 61, 81, 86, 91, 234, 353, 354,
         358, 375, 420, 800, 808, 870, 882, 883, 888, 979, 998, 999, 210, 0]  # fmt: skip


def _reference_phone(raw: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def phone_like() -> st.SearchStrategy[str]:
    def build(code: int, digits: str, seps: list[str], prefix: str) -> str:
        out = []
        for i, digit in enumerate(digits):
            out.append(digit)
            if i < len(seps) and seps[i]:
                out.append(seps[i])
        return f"{prefix}{code}{seps[-1] if seps else ''}{''.join(out)}"

    return st.builds(
        build,
        st.sampled_from(CODES),
        st.text("0123456789", min_size=0, max_size=19),
        st.lists(st.sampled_from(["", "", "", " ", "-", ".", "(", ")", "  "]), max_size=20),
        st.sampled_from(["+", "+", "+", "", "00", "+ ", "++"]),
    )


@settings(max_examples=6000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(phone_like(), st.sampled_from([None, "DE", "US", "IT", "GB"]))
@example("+49 30 1234567", None)
@example("+39 06 1234 5678", None)
@example("+1 1 212 555 0123", None)
@example("+54 9 11 1234 5678", None)
def test_phone_fast_path_never_disagrees_with_phonenumbers(raw: str, region: str | None) -> None:
    fast = fast_normalise_phone(raw)
    if fast is not None:
        assert fast == _reference_phone(raw, region)
        assert normalise_phone(raw, region=region) == fast


def test_phone_fast_path_takes_common_international_numbers() -> None:
    rng = random.Random(7)
    samples = {
        "DE": "+49 30 {}",
        "US": "+1 212-555-{}",
        "GB": "+44 20 7946 {}",
        "FR": "+33 1 42 68 {}",
        "NL": "+31 20 555 {}",
    }
    for template in samples.values():
        for _ in range(50):
            raw = template.format(rng.randrange(1000, 9999))
            reference = _reference_phone(raw, None)
            if reference is not None:
                assert fast_normalise_phone(raw) == reference
    taken = [fast_normalise_phone(f"+49 30 {1000000 + i}") for i in range(100)]
    assert all(taken), "the fast path must take plain German numbers"
    # Deferred to phonenumbers: national form, trunk zero, extensions, letters.
    deferred = (
        "030 1234567",
        "+49 (0)30 1234567",
        "+39 06 1234 5678",
        "+49 30 1234567 ext. 12",
        "+1 800 FLOWERS",
    )
    for raw in deferred:
        assert fast_normalise_phone(raw) is None


def test_normalise_phone_words_errors_on_both_paths() -> None:
    assert normalise_phone("+49 30 1234567") == "+49301234567"
    assert normalise_phone("030 1234567", region="DE") == "+49301234567"
    with pytest.raises(ValidationProblem, match="not a valid number"):
        normalise_phone("+1 212 555 01")
    with pytest.raises(ValidationProblem, match="invalid phone number"):
        normalise_phone("12345")


_SINGLE_REGION = sorted(
    c for c, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items() if len(regions) == 1
)


@settings(max_examples=4000, deadline=None)
@given(
    st.sampled_from(_SINGLE_REGION),
    st.text("0123456789", min_size=2, max_size=17).filter(lambda d: d[0] != "0"),
)
def test_compiled_validity_is_phonenumbers_is_valid_number(code: int, national: str) -> None:
    """Both ways: the compiled check says valid exactly when phonenumbers does (for every
    calling code of a single region; shared codes go to phonenumbers itself)."""
    valid = _validity(code)
    assert valid is not None
    expected = phonenumbers.is_valid_number(
        phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    )
    assert valid(national) is expected


def test_compiled_validity_accepts_real_numbers_of_every_single_region_code() -> None:
    """Not just refusals: each region's own example numbers pass the compiled check."""
    checked = 0
    for code in _SINGLE_REGION:
        region = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code][0]
        example = phonenumbers.example_number(region) if region != "001" else None
        if example is None or example.italian_leading_zero:
            continue
        valid = _validity(code)
        assert valid is not None and valid(str(example.national_number)), (code, example)
        checked += 1
    assert checked > 150
