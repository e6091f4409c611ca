"""Marketer-written templates cannot exhaust the process: size limits and a time budget."""

from __future__ import annotations

import threading
import time

import pytest

from app.campaigns import sandbox
from app.campaigns.rendering import TemplateProblem, compile_campaign, sample_context
from app.campaigns.sandbox import RenderTimeout, time_budget

BOMBS = [
    '{{ "x" * 100000000 }}',
    "{{ 2 ** 100000 }}",
    "{{ 7 ** 77777 }}",
    '{{ "ab"|list * 50000000 }}',
    '{{ "x"|center(10**9) }}',
    '{{ "x".ljust(10**9) }}',
    '{{ "{:>1000000000}".format(1) }}',
    '{{ "{:{w}}".format(1, w=1000000000) }}',
    '{{ "%1000000000d" % 1 }}',
    '{{ "%*d" % (1000000000, 1) }}',
    '{{ "%05d"|format(1) }}{{ "%1000000000d"|format(1) }}',
    '{% set a = "x" * 1000000 %}{% set b = a ~ a ~ a %}{{ b }}',
    '{{ (["x" * 1000000] * 3)|join }}',
    '{{ ", ".join(["x" * 1000000] * 3) }}',
    '{{ ("x" * 1000000).replace("x", "yyy") }}',
    '{{ ("x" * 1000000)|replace("x", "yyy") }}',
    '{% set a = "\\n" * 1000000 %}{{ a|indent(100) }}',
    '{{ ("x" * 1000000)|wordwrap(1, wrapstring="\\n\\n\\n\\n") }}',
    '{{ ("\\t" * 1000000).expandtabs(100) }}',
    '{% for i in range(100000) %}{{ "x" * 100 }}{% endfor %}',
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    '{% for i in range(100000) %}{% for j in range(100000) %}{% set x = "a" ~ i %}{% endfor %}{% endfor %}',
]


@pytest.mark.parametrize("body", BOMBS)
def test_resource_bombs_are_refused_at_save_time_and_quickly(body: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateProblem) as refused:
        compile_campaign("Hello", body, None)
    assert time.perf_counter() - started < sandbox.RENDER_SECONDS + 1.5
    assert (
        "too large" in str(refused.value)
        or "too long" in str(refused.value)
        or "limited" in str(refused.value)
    )


def test_ordinary_templates_with_loops_filters_and_arithmetic_still_render() -> None:
    body = (
        "<p>Hi {{ first_name|default('there')|upper|center(20) }}</p>"
        "{% for i in range(5) %}{{ i * 2 }}/{{ 2 ** 10 }}/{{ '-' * 10 }}{% endfor %}"
        "{{ [1, 2, 3]|join(', ') }} {{ '%05d'|format(42) }} {{ '{:>8}'.format(name) }}"
        "{{ 'a\\nb'|indent(4) }} {{ (name ~ '!')|replace('!', '?') }} {{ 'x %s' % city }}"
        "{{ attributes.plan|title|wordwrap(10) }} {{ ', '.join(['a', 'b']) }}"
    )
    rendered = compile_campaign("Hi {{ first_name }}", body, None).render(sample_context())
    assert "SAM" in rendered.html and "0/1024/----------" in rendered.html
    assert "1, 2, 3" in rendered.html and "00042" in rendered.html and "Sam Sample?" in rendered.html
    assert "x Berlin" in rendered.html and "a, b" in rendered.html


def test_a_slow_render_of_one_message_is_a_template_error_not_a_hang() -> None:
    """The budget also applies to each message (data can make a loop long)."""
    body = "{% for a in attributes.rows %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    compiled = compile_campaign("Hi", "{% if attributes.slow %}" + body + "{% endif %}ok", None)
    context = {**sample_context(), "attributes": {"slow": True, "rows": list(range(100000))}}
    started = time.perf_counter()
    with pytest.raises(TemplateProblem, match="too long"):
        compiled.render(context)
    assert time.perf_counter() - started < sandbox.RENDER_SECONDS + 1.5


def test_time_budget_interrupts_only_the_thread_that_overran() -> None:
    results: dict[str, str] = {}

    def slow() -> None:
        try:
            with time_budget(0.2):
                while True:
                    pass
        except RenderTimeout:
            results["slow"] = "stopped"

    def quick() -> None:
        try:
            for _ in range(2000):
                with time_budget(0.2):
                    sum(range(100))
            time.sleep(0.5)  # past the budget: nothing may be raised here any more
            results["quick"] = "done"
        except RenderTimeout:  # pragma: no cover - the failure this test is for
            results["quick"] = "interrupted"

    threads = [threading.Thread(target=slow), threading.Thread(target=quick)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {"slow": "stopped", "quick": "done"}


def test_renders_at_their_deadline_never_carry_the_timeout_into_later_code() -> None:
    """Blocks that end at (or past) their deadline: a timeout is raised inside the block
    or not at all, never in the code that runs after it."""
    leaked = 0
    for _ in range(200):
        try:
            with time_budget(0.0):
                time.sleep(0.0005)
        except RenderTimeout:
            pass
        try:
            for _ in range(20_000):  # ordinary code after the block, a few milliseconds
                pass
        except RenderTimeout:
            leaked += 1
    assert leaked == 0
