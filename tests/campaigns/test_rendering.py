"""Marketer templates: the sandbox holds, headers cannot be injected, the footer is always
there, and errors are reported when the campaign is saved."""

from __future__ import annotations

import pytest

from app.campaigns.rendering import TemplateProblem, compile_campaign, sample_context
from app.delivery.message import HeaderInjection, OutgoingMessage, format_address

ESCAPES = [
    "{{ name.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ name['__class__'] }}",
    "{{ attributes.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ self._TemplateReference__context }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ name.format.__self__ }}",
    "{{ attributes.update({'x': 1}) }}",
    "{{ range(10**7)|list }}",
    "{% for i in range(10**6) %}{% for j in range(10**6) %}x{% endfor %}{% endfor %}",
]


@pytest.mark.parametrize("body", ESCAPES)
def test_sandbox_escapes_are_refused_at_save_time(body: str) -> None:
    with pytest.raises(TemplateProblem):
        compile_campaign("Hi", f"<p>{body}</p>", None)


def test_errors_name_the_field_and_line() -> None:
    with pytest.raises(TemplateProblem) as err:
        compile_campaign("Hi", "<p>one</p>\n<p>two</p>\n{% if name %}", None)
    assert err.value.field == "html" and "line 3" in err.value.message
    with pytest.raises(TemplateProblem) as err:
        compile_campaign("Hi {{ frist_name }}", "<p>x</p>", None)
    assert err.value.field == "subject" and "frist_name" in err.value.message
    with pytest.raises(TemplateProblem) as err:
        compile_campaign("Hi", "<p>x</p>", "text {{ 1/0 }}")
    assert "division" in err.value.message


def test_contact_data_is_escaped_in_html_but_not_in_text() -> None:
    compiled = compile_campaign("Hi {{ name }}", "<p>{{ name }}</p>", "{{ name }}")
    ctx = {**sample_context(), "name": "<script>alert(1)</script> & Co"}
    rendered = compiled.render(ctx)
    assert (
        "<script>" not in rendered.html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in rendered.html
    )
    assert rendered.text.startswith("<script>alert(1)</script> & Co")


@pytest.mark.parametrize(
    "html",
    [
        "<p>hello</p>",
        "<p>hello</p></div></body></html><!--",
        "{% raw %}</body>{% endraw %}<style>.footer{display:none}</style>",
        "",
    ],
)
def test_footer_is_always_present(html: str) -> None:
    compiled = compile_campaign(
        "Subject",
        html,
        "text body" if not html else None,
        postal_address="1 Example Street, Berlin",
        sender_name="ACME",
    )
    ctx = {
        **sample_context(),
        "unsubscribe_url": "https://x.example/u/T0K",
        "preferences_url": "https://x.example/p/T0K",
    }
    rendered = compiled.render(ctx)
    for part in (rendered.html, rendered.text):
        assert "https://x.example/u/T0K" in part
        assert "https://x.example/p/T0K" in part
        assert "1 Example Street, Berlin" in part
    # the footer comes after the marketer's body, so it cannot be commented out by it
    assert rendered.html.index("https://x.example/u/T0K") > rendered.html.index("<div")


def test_text_part_is_derived_from_html() -> None:
    compiled = compile_campaign(
        "S", "<h1>Big news</h1><p>Visit <a href='https://example.com/x'>our shop</a></p>", None
    )
    text = compiled.render(sample_context()).text
    assert "Big news" in text and "https://example.com/x" in text and "<h1>" not in text


@pytest.mark.parametrize(
    "evil",
    [
        "Eve\r\nBcc: victim@example.com",
        "Eve\nX-Injected: 1",
        "Eve\rSubject: other",
        "Eve\u2028Bcc: x@example.com",
        "Eve\x00Bcc: x@example.com",
    ],
)
def test_subject_and_names_cannot_inject_headers(evil: str) -> None:
    compiled = compile_campaign("Hi {{ name }}", "<p>x</p>", None)
    rendered = compiled.render({**sample_context(), "name": evil})
    message = OutgoingMessage(
        mail_from="b@example.com",
        rcpt_to="to@example.com",
        from_header=format_address(evil, "from@example.com"),
        to_header=format_address(evil, "to@example.com"),
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        message_id="<1@example.com>",
    ).to_bytes()
    head = message.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line and not line[:1].isspace()]
    assert b"Bcc" not in names and b"X-Injected" not in names
    assert names.count(b"Subject") == 1
    assert b"\n" not in head.replace(b"\r\n", b"")


def test_subject_template_must_be_one_line_and_addresses_are_checked() -> None:
    with pytest.raises(TemplateProblem):
        compile_campaign("Hi\r\nBcc: x@example.com", "<p>x</p>", None)
    with pytest.raises(HeaderInjection):
        format_address("Eve", "eve@example.com>, <victim@example.com")


def test_campaign_api_reports_template_errors_with_line(client, admin_headers) -> None:  # type: ignore[no-untyped-def]
    r = client.post(
        "/api/v1/campaigns",
        json={"name": "x", "topic": "surveys", "subject": "S", "html": "<p>ok</p>\n{{ name.__class__ }}"},
        headers=admin_headers,
    )
    assert r.status_code == 422
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "html"] and "line 2" in detail["msg"]
    r = client.post(
        "/api/v1/campaigns", json={"name": "x", "subject": "S", "html": "<p>x</p>"}, headers=admin_headers
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "topic"]


def test_renderings_are_shared_by_recipients_with_the_same_values() -> None:
    """Subject and bodies are rendered once per distinct values of the variables they use;
    the output is what a fresh rendering gives; a template whose values never repeat stops
    caching; one that uses ``attributes`` (a dict) never caches."""
    compiled = compile_campaign(
        "Hello {{ first_name }}",
        "<p>{{ name }} in {{ city or 'your city' }}</p><a href='{{ unsubscribe_url }}'>x</a>",
        "Hi {{ first_name }} from {{ city }}",
    )
    fresh = compile_campaign(
        "Hello {{ first_name }}",
        "<p>{{ name }} in {{ city or 'your city' }}</p><a href='{{ unsubscribe_url }}'>x</a>",
        "Hi {{ first_name }} from {{ city }}",
    )
    for i in range(1500):
        context = {
            **sample_context(),
            "name": f"Ann {i}",
            "first_name": "Ann" if i % 2 else "Bob",
            "city": ["Berlin", "Paris", None][i % 3],
            "unsubscribe_url": f"https://example.com/u/{i}",
        }
        assert compiled.render(context) == fresh.render(context)
        fresh.subject_cache.entries.clear()
        fresh.html_cache.entries.clear()
        fresh.text_cache.entries.clear()
    assert compiled.subject_cache.enabled and compiled.subject_cache.hits >= 1490
    assert compiled.text_cache.enabled and compiled.text_cache.hits >= 1490
    assert not compiled.html_cache.enabled and not compiled.html_cache.entries  # unique links
    assert not compile_campaign("Hi", "{{ attributes.plan }}", None).html_cache.enabled
