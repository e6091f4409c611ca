"""Recipient links refuse every token that is not exactly one we made for that person and
that page: altered, truncated, made with another key, swapped between recipients or kinds.
The refusal is a friendly page that offers "unsubscribe by email address", never a trace.
Tokens made with a rotated-out key still work."""

from __future__ import annotations

import base64
import string
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from app.config import Settings, use_settings
from app.models import Delivery, Suppression
from app.recipients import service
from app.recipients.tokens import TokenKind, make_url_token
from tests.recipients.conftest import snapshot


def _refused(r) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert "text/html" in r.headers["content-type"]
    assert "This link does not work" in r.text
    assert 'action="/unsubscribe"' in r.text and 'name="email"' in r.text  # the by-email form
    assert "Traceback" not in r.text and "BadToken" not in r.text


@pytest.fixture
def two(db: Settings, session: Session, make_contact: Callable[..., int], send_campaign: Callable[..., int]):  # type: ignore[no-untyped-def]
    a = make_contact("alex@example.com", name="Alex A")
    b = make_contact("blake@example.com", name="Blake B")
    send_campaign()
    deliveries = {d.contact_id: d.id for d in session.exec(select(Delivery)).all()}
    return a, b, deliveries[a], deliveries[b]


def test_a_good_token_works(web: TestClient, two) -> None:  # type: ignore[no-untyped-def]
    a, _b, da, _db = two
    r = web.get(f"/u/{make_url_token(TokenKind.UNSUBSCRIBE, a, da)}")
    assert r.status_code == 200 and "al…@example.com" in r.text


def test_altered_truncated_and_foreign_tokens_are_refused(
    web: TestClient, db: Settings, session: Session, two
) -> None:  # type: ignore[no-untyped-def]
    a, _b, da, _db = two
    good = make_url_token(TokenKind.UNSUBSCRIBE, a, da)
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[-1] ^= 1
    bitflip = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    hint = ("B" if good[0] != "B" else "C") + good[1:]  # the key hint byte, outside the tag
    use_settings(db.model_copy(update={"secret_key": "some-other-key-entirely", "old_secret_keys": []}))
    other_key = make_url_token(TokenKind.UNSUBSCRIBE, a, da)
    use_settings(db)
    before = snapshot(session)
    for bad in (
        flipped,
        bitflip,
        hint,
        good[:-1],
        good[:20],
        good + "A",
        good + "AAAA",
        other_key,
        "x",
        "%00",
        "-" * 60,
    ):
        _refused(web.get(f"/u/{bad}"))
        _refused(web.post(f"/u/{bad}", data={"List-Unsubscribe": "One-Click"}))
        _refused(web.get(f"/preferences/{bad}"))
        _refused(web.get(f"/preferences/confirm/{bad}"))
    assert snapshot(session) == before


def test_swapped_tokens_are_refused(web: TestClient, session: Session, two) -> None:  # type: ignore[no-untyped-def]
    a, b, da, db_ = two
    before = snapshot(session)
    # A token naming contact A and the delivery of contact B (only the key holder could make
    # it, but if it exists it must not act for anyone).
    _refused(web.get(f"/u/{make_url_token(TokenKind.UNSUBSCRIBE, a, db_)}"))
    _refused(
        web.post(
            f"/u/{make_url_token(TokenKind.UNSUBSCRIBE, a, db_)}", data={"List-Unsubscribe": "One-Click"}
        )
    )
    _refused(web.get(f"/preferences/{make_url_token(TokenKind.PREFERENCES, b, da)}"))
    # Kinds swapped: every page takes exactly its own kind.
    for kind in (TokenKind.PREFERENCES, TokenKind.CONFIRM_OPT_IN, TokenKind.REPLY, TokenKind.BOUNCE):
        _refused(web.get(f"/u/{make_url_token(kind, a, da)}"))
        _refused(web.post(f"/u/{make_url_token(kind, a, da)}", data={"List-Unsubscribe": "One-Click"}))
    for kind in (TokenKind.UNSUBSCRIBE, TokenKind.CONFIRM_OPT_IN, TokenKind.UNSUBSCRIBE_BY_EMAIL):
        _refused(web.get(f"/preferences/{make_url_token(kind, a, da)}"))
    for kind in (TokenKind.UNSUBSCRIBE, TokenKind.PREFERENCES):
        _refused(web.get(f"/preferences/confirm/{make_url_token(kind, a, da)}"))
    # A confirmation token that names no request of this person.
    _refused(web.get(f"/preferences/confirm/{make_url_token(TokenKind.CONFIRM_OPT_IN, a, 999_999)}"))
    # A contact that does not exist.
    _refused(web.get(f"/u/{make_url_token(TokenKind.UNSUBSCRIBE, 987_654, None)}"))
    assert snapshot(session) == before


def test_tokens_made_with_a_rotated_out_key_still_work(
    app, web: TestClient, db: Settings, session: Session, two
) -> None:  # type: ignore[no-untyped-def]
    a, b, da, db_ = two
    old_unsubscribe = make_url_token(TokenKind.UNSUBSCRIBE, a, da)
    old_preferences = make_url_token(TokenKind.PREFERENCES, b, db_)
    rotated = db.model_copy(
        update={"secret_key": "the-new-key-0123456789", "old_secret_keys": [db.secret_key]}
    )
    use_settings(rotated)
    new = make_url_token(TokenKind.UNSUBSCRIBE, a, da)
    assert new != old_unsubscribe  # new links use the new key
    assert web.get(f"/u/{old_unsubscribe}").status_code == 200
    assert web.get(f"/preferences/{old_preferences}").status_code == 200
    with TestClient(app, base_url="https://lists.example.test") as bare:
        assert bare.post(f"/u/{old_unsubscribe}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    session.expire_all()
    assert [s.reason for s in session.exec(select(Suppression)).all()] == ["one_click"]
    # Once the old key is dropped from the list, its tokens stop working.
    use_settings(rotated.model_copy(update={"old_secret_keys": []}))
    _refused(web.get(f"/preferences/{old_preferences}"))


ALPHABET = string.ascii_letters + string.digits + "-_=+/. %"


def _mutations(token: str) -> st.SearchStrategy[str]:
    index = st.integers(min_value=0, max_value=len(token) - 1)
    char = st.sampled_from(ALPHABET)
    return st.one_of(
        st.tuples(index, char).map(lambda ic: token[: ic[0]] + ic[1] + token[ic[0] + 1 :]),  # substitute
        index.map(lambda i: token[:i] + token[i + 1 :]),  # delete
        st.tuples(index, char).map(lambda ic: token[: ic[0]] + ic[1] + token[ic[0] :]),  # insert
        index.map(lambda i: token[:i]),  # truncate
        st.tuples(index, index).map(
            lambda ij: token[: min(ij)] + token[max(ij) :] + token[min(ij) : max(ij)]
        ),
        st.text(alphabet=ALPHABET, min_size=0, max_size=3).map(lambda s: token + s),  # extend
        st.binary(min_size=1, max_size=60).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()),
    )


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_mutation_of_a_token_is_accepted(db: Settings, session: Session, data: st.DataObject) -> None:
    kind = data.draw(
        st.sampled_from([TokenKind.UNSUBSCRIBE, TokenKind.PREFERENCES, TokenKind.CONFIRM_OPT_IN])
    )
    good = make_url_token(kind, data.draw(st.integers(1, 2**31 - 1)), data.draw(st.integers(1, 2**31 - 1)))
    bad = data.draw(_mutations(good))
    if bad == good:
        return
    resolve = {
        TokenKind.UNSUBSCRIBE: service.resolve_unsubscribe,
        TokenKind.PREFERENCES: service.resolve_preferences,
        TokenKind.CONFIRM_OPT_IN: service.resolve_confirmation,
    }[kind]
    with pytest.raises(service.LinkProblem) as refused:
        resolve(session, bad)
    assert refused.value.kind == "invalid"


def test_tokens_keep_their_format(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Links and addresses already mailed keep working: tokens made now are, bit for bit,
    those the first implementation made (the same key, kind and ids; AES-SIV is
    deterministic), through the module functions and through a ``Sealer`` alike."""
    from app.recipients.tokens import (
        address_spelling,
        make_address_token,
        read_address_token,
        sealer,
        url_spelling,
    )

    use_settings(Settings(secret_key="golden-key-for-token-format", var_dir=tmp_path))
    try:
        golden = [
            (TokenKind.UNSUBSCRIBE, 42, 7, "Qsjrqu6VWDP6sZOwOfLVcEgJlof2n7gxa73Lv_8Am3SenC8", None),
            (TokenKind.BOUNCE, 42, 7, None, "iijp6rm7mpqgv5oxe5zebq5i7xuk3d4qh3pc562zxy2hms3h5c3a4zxz"),
            (TokenKind.PREFERENCES, 2**40 + 3, None, "QuQ14odvTSZEfy-rz9DBJQSgIi0RHMVN0rvv6E-LpAqi13E", None),
            (TokenKind.REPLY, 1, 2**63 - 1, None, "ikxkpzj6rkr2sl4x5jqsfq2ds5px7zs6hu5tod3rvnnq7xquj7kbg2e6"),
        ]
        for kind, contact, delivery, url, address in golden:
            sealed = sealer().seal(kind, contact, delivery)
            if url is not None:
                assert make_url_token(kind, contact, delivery) == url == url_spelling(sealed)
            if address is not None:
                assert make_address_token(kind, contact, delivery) == address == address_spelling(sealed)
                assert read_address_token(address, kind).delivery_id == delivery
    finally:
        use_settings(None)
