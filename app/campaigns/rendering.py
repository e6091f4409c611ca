"""Campaign templates: marketer-written Jinja2, in a sandbox, checked when saved.

- Subject, HTML and text are compiled by an ``ImmutableSandboxedEnvironment``; HTML is
  autoescaped, so a contact's name can never inject markup; attribute and method access
  that could reach Python internals is refused by the sandbox.
- Templates are checked at save time: syntax errors are reported with their line, unknown
  variables by name, and a trial render with a sample contact catches sandbox violations.
- The trusted layouts in ``templates/email/`` wrap every body and add the footer
  (unsubscribe link, preference centre, sender's postal address); a campaign cannot
  remove it because it never sees the layout.
- The text part is derived from the HTML (html2text) when none is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape as html_escape
from typing import Any

import html2text
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from markupsafe import Markup

from app.campaigns.sandbox import RenderTimeout, TemplateSandbox, time_budget
from app.config import TEMPLATES_DIR
from app.delivery.repository import CONTACT_COLUMNS
from app.errors import ValidationProblem

#: The contact's fields a template sees: what the claim step reads, and the name split in two.
CONTACT_VARIABLES = frozenset(CONTACT_COLUMNS) | {"first_name", "last_name"}
LINK_VARIABLES = frozenset({"unsubscribe_url", "preferences_url"})
SENDER_VARIABLES = frozenset({"postal_address", "sender_name", "campaign_name", "topic_name"})
ALLOWED_VARIABLES = CONTACT_VARIABLES | LINK_VARIABLES | SENDER_VARIABLES

MAX_SUBJECT = 300
MAX_OUTPUT = 2_000_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")

SAMPLE_CONTACT: dict[str, Any] = {
    "name": "Sam Sample",
    "first_name": "Sam",
    "last_name": "Sample",
    "email": "sam@example.com",
    "phone": "+4930123456",
    "company": "Example GmbH",
    "position": "Buyer",
    "primary_business": "retail",
    "city": "Berlin",
    "region": None,
    "zip": "10115",
    "country": "DE",
    "attributes": {"plan": "pro"},
    "source": "registration",
}


class TemplateProblem(ValidationProblem):
    """A campaign template that cannot be used; ``field`` names subject, html or text."""


def _sandbox(*, autoescape: bool) -> TemplateSandbox:
    return TemplateSandbox(autoescape=autoescape, trim_blocks=False, keep_trailing_newline=False)


_HTML_ENV = _sandbox(autoescape=True)
_PLAIN_ENV = _sandbox(autoescape=False)
_LAYOUTS = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR / "email"),
    autoescape=True,
    undefined=StrictUndefined,
    auto_reload=False,
)
_LAYOUTS_TEXT = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR / "email"),
    autoescape=False,  # noqa: S701 - plain text output, never HTML
    undefined=StrictUndefined,
    auto_reload=False,
)
_SLOTS = ("subject", "body", "unsubscribe_url", "preferences_url")
_SLOT_RE = re.compile("\x00(" + "|".join(_SLOTS) + ")\x00")


@dataclass(frozen=True, slots=True)
class Layout:
    """A trusted layout rendered once per campaign and split around its per-message slots."""

    html_parts: tuple[str, ...]
    text_parts: tuple[str, ...]

    @classmethod
    def build(cls, *, footer: bool, sender_name: str, topic_name: str | None, postal_address: str) -> Layout:
        slots = {name: f"\x00{name}\x00" for name in _SLOTS}
        context = {
            "footer": footer,
            "sender_name": sender_name,
            "topic_name": topic_name,
            "postal_address": postal_address,
            **{k: Markup(v) for k, v in slots.items()},  # noqa: S704 - fixed markers, no user data
        }
        html = _LAYOUTS.get_template("base.html").render(context)
        text = _LAYOUTS_TEXT.get_template("base.txt").render({**context, **slots})
        return cls(tuple(_SLOT_RE.split(html)), tuple(_SLOT_RE.split(text)))

    @staticmethod
    def fill(parts: tuple[str, ...], values: dict[str, str]) -> str:
        # re.split with one group: even indexes are literal text, odd ones are slot names.
        return "".join(part if i % 2 == 0 else values[part] for i, part in enumerate(parts))


def _compile(env: Environment, source: str, field: str) -> Template:
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"{field}: line {exc.lineno}: {exc.message}", field=field) from exc
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = (
            node.attr
            if isinstance(node, nodes.Getattr)
            else getattr(getattr(node, "arg", None), "value", None)
        )
        if isinstance(attr, str) and attr.startswith("_"):
            raise TemplateProblem(
                f"{field}: line {node.lineno}: access to {attr!r} is not allowed in templates", field=field
            )
    unknown = sorted(meta.find_undeclared_variables(ast) - ALLOWED_VARIABLES)
    if unknown:
        line = _first_line_of(ast, unknown[0])
        where = f"line {line}: " if line else ""
        known = ", ".join(sorted(ALLOWED_VARIABLES))
        raise TemplateProblem(
            f"{field}: {where}unknown variable {unknown[0]!r} (known: {known})", field=field
        )
    try:
        return env.from_string(source)
    except SecurityError as exc:  # a limit met while folding constants
        raise TemplateProblem(f"{field}: refused by the template sandbox: {exc}", field=field) from exc
    except (TemplateError, ValueError, ArithmeticError, MemoryError) as exc:
        raise TemplateProblem(f"{field}: {exc}", field=field) from exc


def _first_line_of(ast: nodes.Template, name: str) -> int | None:
    for node in ast.find_all(nodes.Name):
        if node.name == name:
            return int(node.lineno)
    return None


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.protect_links = True
    converter.unicode_snob = True
    return converter.handle(html).strip()


def clean_header(value: str, *, limit: int = MAX_SUBJECT) -> str:
    """One line, no control characters: nothing rendered can add a header."""
    return _CONTROL.sub(" ", value).strip()[:limit]


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str
    text: str


def _render(template: Template, shared: dict[str, Any]) -> str:
    """``Template.render`` without copying the variables again (they are not changed)."""
    return template.environment.concat(template.root_render_func(template.new_context(shared, shared=True)))


@dataclass(frozen=True, slots=True)
class CompiledCampaign:
    subject: Template
    html: Template
    text: Template
    layout: Layout

    def render(self, context: dict[str, Any]) -> Rendered:
        """Render one message. Raises ``TemplateProblem`` for sandbox or data errors."""
        try:
            # One context for the three templates (Template.render would copy it three times).
            shared = {**_HTML_ENV.globals, **context}
            with time_budget():
                subject = clean_header(_render(self.subject, shared))
                body_html = _render(self.html, shared)
                body_text = _render(self.text, shared)
        except RenderTimeout as exc:
            raise TemplateProblem("the template takes too long to render", field="html") from exc
        except SecurityError as exc:
            raise TemplateProblem(f"refused by the template sandbox: {exc}", field="html") from exc
        except (TemplateError, UndefinedError, TypeError, ValueError, ArithmeticError) as exc:
            raise TemplateProblem(f"template error: {exc}", field="html") from exc
        if len(body_html) > MAX_OUTPUT or len(body_text) > MAX_OUTPUT:
            raise TemplateProblem("the rendered message is too large", field="html")
        unsubscribe_url = str(context.get("unsubscribe_url", ""))
        preferences_url = str(context.get("preferences_url", ""))
        html = Layout.fill(
            self.layout.html_parts,
            {
                "subject": html_escape(subject),
                "body": body_html,
                "unsubscribe_url": html_escape(unsubscribe_url),
                "preferences_url": html_escape(preferences_url),
            },
        )
        text = Layout.fill(
            self.layout.text_parts,
            {
                "subject": subject,
                "body": body_text,
                "unsubscribe_url": unsubscribe_url,
                "preferences_url": preferences_url,
            },
        )
        return Rendered(subject=subject, html=html, text=text)


def compile_campaign(
    subject: str,
    html: str,
    text: str | None,
    *,
    footer: bool = True,
    sender_name: str = "Listwarden",
    topic_name: str | None = None,
    postal_address: str = "",
) -> CompiledCampaign:
    """Compile and check a campaign's templates; raise ``TemplateProblem`` naming the field."""
    if not subject.strip():
        raise TemplateProblem("subject: a subject is required", field="subject")
    if "\n" in subject or "\r" in subject:
        raise TemplateProblem("subject: must be a single line", field="subject")
    if not html.strip() and not (text or "").strip():
        raise TemplateProblem("html: an HTML or a text body is required", field="html")
    text_source = text if (text or "").strip() else html_to_text(html)
    compiled = CompiledCampaign(
        subject=_compile(_PLAIN_ENV, subject, "subject"),
        html=_compile(_HTML_ENV, html or "<pre>{{ '' }}</pre>", "html"),
        text=_compile(_PLAIN_ENV, text_source or "", "text"),
        layout=Layout.build(
            footer=footer, sender_name=sender_name, topic_name=topic_name, postal_address=postal_address
        ),
    )
    compiled.render(sample_context())  # a trial render catches sandbox violations at save time
    return compiled


def sample_context() -> dict[str, Any]:
    return {
        **SAMPLE_CONTACT,
        "unsubscribe_url": "https://example.invalid/u/sample",
        "preferences_url": "https://example.invalid/preferences/sample",
        "postal_address": "1 Example Street, Example City",
        "sender_name": "Example",
        "campaign_name": "Sample",
        "topic_name": "Sample topic",
    }
