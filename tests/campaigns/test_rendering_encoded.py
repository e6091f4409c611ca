"""Rendering for sending (``render_encoded``): skeletons with slots for per-recipient values
give exactly the message that rendering each template with the values gives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.campaigns.rendering import (
    CompiledCampaign,
    EncodedMessage,
    TemplateProblem,
    compile_campaign,
    sample_context,
)
from app.delivery.dkim import relaxed_body
from app.delivery.message import OutgoingMessage

BENCH_HTML = (
    "<h1>Hello {{ name }}</h1>"
    + "<p>Offers for {{ company or 'you' }}: <a href='https://shop.example.com/?c={{ zip }}'>shop</a>.</p>"
    * 3
)

#: (subject, html, text, variables slotted in the HTML template)
TEMPLATES: list[tuple[str, str, str | None, set[str]]] = [
    ("Hello {{ first_name }}, offers", BENCH_HTML, None, {"name", "zip"}),
    ("{{ first_name|title }} {{ first_name }}", "<p>{{ name|upper }} and {{ name }}</p>", None, set()),
    ("Hi", "{% if city %}<p>{{ city }} {{ name }}</p>{% endif %}", "{{ name }} in {{ city }}", {"name"}),
    ("Hi", "{% for i in range(3) %}<b>{{ name }}</b>{{ i }}{% endfor %}", None, {"name"}),
    ("Hi", "{% set x %}{{ name }}{% endset %}<p>{{ x|upper }} {{ email }}</p>", None, set()),
    ("Hi", "{% filter upper %}<p>{{ name }}</p>{% endfilter %}{{ email }}", None, set()),
    ("Hi", "{% macro m(v) %}<i>{{ v }}</i>{% endmacro %}{{ m(name) }} {{ email }}", None, set()),
    ("Hi", "{% autoescape false %}{{ name }}{% endautoescape %} {{ email }}", None, set()),
    (
        "Hi",
        "<a href='{{ unsubscribe_url }}'>out</a> <a href='{{ preferences_url }}'>prefs</a>",
        None,
        {"unsubscribe_url", "preferences_url"},
    ),
    ("Hi {{ name }}", "<p>{{ attributes.plan }} {{ name }}</p>", "{{ name }}: {{ company }}", {"name"}),
    ("Hi", "{% set name = 'x' %}<p>{{ name }}</p>", None, set()),
    ("Hi", "<p>{{ name ~ '!' }} {{ position }}</p>", "   {{ position }}   ", {"position"}),
    ("{{ name }}  ", "{{ name }}", "{{ name }}\t", {"name"}),
]

VALUES = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(["Zoë", "<b>&'\"", "a=b", "trailing ", " \t", "x" * 90, "Ünïcödé " * 12, "A\r\nB"]),
    st.text(max_size=60),
)


def _context(**values: Any) -> dict[str, Any]:
    context = sample_context()
    context.update(values)
    return context


def _reference(compiled: CompiledCampaign, context: dict[str, Any]) -> EncodedMessage:
    rendered = compiled.render_pieces(context)
    return EncodedMessage(
        subject=rendered.subject,
        html=compiled.html_qp.encode(rendered.html),
        text=compiled.text_qp.encode(rendered.text),
    )


def _same_message(encoded: EncodedMessage, reference: EncodedMessage) -> bool:
    """The same subject and bodies; and when ``encoded`` says its bodies are in DKIM
    relaxed form, a message made of them has its body in that form indeed."""
    if encoded.canonical:
        body = _body(encoded)
        assert relaxed_body(body) == body
    ours = (encoded.subject, encoded.html, encoded.text)
    return ours == (reference.subject, reference.html, reference.text)


def _body(encoded: EncodedMessage) -> bytes:
    message = OutgoingMessage(
        mail_from="b@example.com",
        rcpt_to="a@example.com",
        from_header="a@example.com",
        to_header="a@example.com",
        subject="x",
        html="",
        text="",
        html_qp=encoded.html,
        text_qp=encoded.text,
        message_id="<x@example.com>",
    )
    return message.to_bytes().partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("template", TEMPLATES, ids=range(len(TEMPLATES)))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_encoded_message_is_the_message_rendered_with_the_values(
    template: tuple[str, str, str | None, set[str]], data: st.DataObject
) -> None:
    subject, html, text, slotted = template
    compiled = compile_campaign(subject, html, text, postal_address="1 Example Street")
    assert compiled.plans is not None
    assert set(compiled.plans.plans[1].slots) == slotted
    for _ in range(4):  # several recipients, so that skeletons are reused
        context = _context(
            name=data.draw(VALUES),
            first_name=data.draw(VALUES),
            company=data.draw(st.sampled_from([None, "", "Acme & Co"])),
            zip=data.draw(VALUES),
            city=data.draw(st.sampled_from([None, "Köln"])),
            position=data.draw(VALUES),
            email=data.draw(st.sampled_from(["a@example.com", "b@example.com"])),
            unsubscribe_url=data.draw(st.sampled_from(["https://l.example/u/a", "https://l.example/u/<b>"])),
            preferences_url="https://l.example/p/" + data.draw(st.text(alphabet="abc&=", max_size=8)),
        )
        assert _same_message(compiled.render_encoded(context), _reference(compiled, context))


def test_skeletons_are_reused_across_recipients() -> None:
    compiled = compile_campaign("Hello {{ first_name }}", BENCH_HTML, None)
    assert compiled.plans is not None
    for i in range(50):
        compiled.render_encoded(_context(name=f"Person {i}", first_name=f"P{i}", zip=str(10000 + i)))
    assert [plan.cache.hits for plan in compiled.plans.plans] == [49, 49, 49]  # the first renders them


def test_a_marker_inside_a_larger_piece_falls_back_to_rendering_with_the_values() -> None:
    """A recursive loop outputs its inner rendering as one piece: no slots for that template,
    and if a marker ever shows up inside a piece, the campaign renders as it is."""
    html = "{% for x in [1, 2] recursive %}{{ name }}{% endfor %}"
    compiled = compile_campaign("Hi", html, "{{ name }}")
    assert compiled.plans is not None and compiled.plans.plans[1].slots == ()
    context = _context(name="Ann")
    assert _same_message(compiled.render_encoded(context), _reference(compiled, context))
    plan = compiled.plans.plans[2]
    marker = plan.markers["name"]
    with pytest.raises(Exception):  # noqa: B017 - the plan refuses a marker inside a piece
        plan.skeleton([f"x{marker}y"])


def test_values_too_large_are_refused_as_when_rendered_with_them() -> None:
    compiled = compile_campaign("Hi", "<p>{{ name }}{{ name }}</p>", None)
    context = _context(name="x" * 1_000_001)
    with pytest.raises(TemplateProblem) as encoded:
        compiled.render_encoded(context)
    with pytest.raises(TemplateProblem) as rendered:
        compiled.render_pieces(context)
    assert encoded.value.message == rendered.value.message


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("Ann Lee", True), ("Ann  Lee", False), ("Ann\tLee", False), ("Ann ", True), ("", True), (None, True)],
)
def test_bodies_say_when_they_are_in_dkim_relaxed_form(name: str | None, canonical: bool) -> None:
    """The campaign's messages are signed without looking for runs of white space in
    their bodies when rendering says there are none: a value with two spaces or a tab
    says otherwise (and trailing white space is encoded or followed by a soft break)."""
    compiled = compile_campaign("Hi {{ name }}", "<p>{{ name }}</p>", "Dear {{ name }}")
    encoded = compiled.render_encoded(_context(name=name))
    assert encoded.canonical is canonical
    body = _body(encoded)
    assert (relaxed_body(body) == body) is canonical
    # a constant run with two spaces in a row: never canonical, whatever the values
    spaced = compile_campaign("Hi", "<p>{{ name }}  </p>", None).render_encoded(_context(name="Ann"))
    assert spaced.canonical is False
