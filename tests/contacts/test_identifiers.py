"""The fast path for plain email addresses must agree with email-validator exactly."""

from __future__ import annotations

import random
import string

import email_validator
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.contacts.identifiers import fast_normalise_email, normalise_email

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
