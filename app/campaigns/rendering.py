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
import secrets
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from html import escape as html_escape
from typing import Any

import html2text
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from markupsafe import Markup
from markupsafe import escape as markup_escape

from app.campaigns.sandbox import MAX_SIZE, RenderTimeout, TemplateSandbox, bounded_pieces, time_budget
from app.config import TEMPLATES_DIR
from app.delivery.message import QpEncoder
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

    @staticmethod
    def fill_pieces(parts: tuple[str, ...], values: dict[str, str], body: list[str]) -> list[str]:
        """Like :meth:`fill`, as a list of pieces; the body slot gets the body's pieces."""
        out: list[str] = []
        for i, part in enumerate(parts):
            if i % 2 == 0:
                out.append(part)
            elif part == "body":
                out.extend(body)
            else:
                out.append(values[part])
        return out


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


def _pieces(template: Template, shared: dict[str, Any]) -> list[str]:
    """The rendered template as the pieces the compiled template yields (its literal text
    and each value), not joined; stopping once too large, like the sandbox's ``concat``."""
    return bounded_pieces(template.root_render_func(template.new_context(shared, shared=True)))


def _literal_text(env: Environment, source: str) -> set[str]:
    """The literal text pieces of a template (what its compiled code yields as constants)."""
    return {node.data for node in env.parse(source).find_all(nodes.TemplateData)}


class RenderCache:
    """A template's output per distinct values of the variables it uses.

    Campaign templates see only the allowed variables (checked when compiled) and no
    callable globals, so their output is a function of those values: recipients who share
    them (a first name in a subject, a city) share one rendering. The cache gives up on a
    template whose values rarely repeat (a full name, a link), and stops growing at a bound."""

    __slots__ = ("enabled", "entries", "hits", "lookups", "names")

    LIMIT = 2048
    TRIAL = 512
    MIN_HITS = 64

    def __init__(self, names: tuple[str, ...] | None) -> None:
        self.names = names
        self.enabled = names is not None
        self.entries: dict[tuple[Any, ...], Any] = {}
        self.lookups = 0
        self.hits = 0

    def key(self, context: dict[str, Any]) -> tuple[Any, ...] | None:
        if not self.enabled or self.names is None:
            return None
        key = tuple([context.get(name) for name in self.names])
        try:
            hash(key)
        except TypeError:
            return None
        return key

    def get(self, key: tuple[Any, ...] | None) -> Any:
        if key is None:
            return None
        self.lookups += 1
        found = self.entries.get(key)
        if found is not None:
            self.hits += 1
        elif self.lookups >= self.TRIAL and self.hits < self.MIN_HITS:  # values do not repeat
            self.enabled = False
            self.entries.clear()
        return found

    def put(self, key: tuple[Any, ...] | None, value: Any) -> None:
        if key is not None and self.enabled and len(self.entries) < self.LIMIT:
            self.entries[key] = value


def _variables(env: Environment, source: str) -> tuple[str, ...] | None:
    """The variables a template uses, or None when one of them cannot key a cache."""
    names = meta.find_undeclared_variables(env.parse(source))
    if "attributes" in names:  # a dict
        return None
    return tuple(sorted(names))


#: Nodes that capture or transform what the template inside them outputs, or change its
#: escaping: a template with any of them gets no slots (see ``_slot_names``).
_CAPTURING = (
    nodes.FilterBlock,
    nodes.AssignBlock,
    nodes.Macro,
    nodes.CallBlock,
    nodes.Block,
    nodes.Extends,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.ScopedEvalContextModifier,
    nodes.EvalContextModifier,
    nodes.OverlayScope,
)
#: Variables whose values differ from recipient to recipient.
SLOT_VARIABLES = CONTACT_VARIABLES | LINK_VARIABLES
#: Marks a slot in a rendered skeleton; random, so no value can spell it.
_MARK = "\x00lw" + secrets.token_hex(8) + ":"


def _slot_names(env: Environment, source: str) -> tuple[str, ...]:
    """The per-recipient variables a template only ever outputs as they are (``{{ name }}``:
    no filter, test, operator, condition or assignment uses them, and nothing captures the
    output). Such a value reaches the output as ``escape(value)`` (autoescaped) or
    ``str(value)``, whatever the rest of the template does: the template can be rendered
    once with a marker in its place and the value put in afterwards."""
    ast = env.parse(source)
    if any(True for _ in ast.find_all(_CAPTURING)) or any(f.recursive for f in ast.find_all(nodes.For)):
        return ()
    bare = Counter(
        child.name
        for output in ast.find_all(nodes.Output)
        for child in output.nodes
        if isinstance(child, nodes.Name) and child.ctx == "load"
    )
    every = Counter(node.name for node in ast.find_all(nodes.Name))
    return tuple(sorted(name for name, n in bare.items() if n == every[name] and name in SLOT_VARIABLES))


@dataclass(frozen=True, slots=True)
class _Slot:
    """A value in a skeleton: ``b:<variable>`` (the template's) or ``l:<name>`` (the layout's)."""

    key: str


class _NoSkeleton(Exception):
    """A marker did not come out as a piece of its own: render this template as it is."""


class SlotPlan:
    """How one template is rendered by skeletons: its slot variables (their markers in the
    context), and skeletons cached per distinct values of its other variables."""

    __slots__ = ("cache", "keys", "markers", "names", "slots")

    def __init__(self, env: Environment, source: str) -> None:
        self.slots = _slot_names(env, source)
        #: Each slot variable and its key in a ``_Part``.
        self.keys = tuple((name, f"b:{name}".encode()) for name in self.slots)
        self.markers = {name: f"{_MARK}{name}\x00" for name in self.slots}
        self.names = {marker: name for name, marker in self.markers.items()}
        used = _variables(env, source)
        self.cache = RenderCache(None if used is None else tuple(n for n in used if n not in self.slots))

    def skeleton(self, pieces: list[str]) -> list[str | _Slot]:
        """The rendered pieces with each marker replaced by its slot."""
        out: list[str | _Slot] = []
        for piece in pieces:
            if piece.startswith(_MARK) and piece in self.names:
                out.append(_Slot("b:" + self.names[piece]))
            elif _MARK in piece:
                raise _NoSkeleton
            else:
                out.append(piece)
        return out


class SlotPlans:
    """The plans of a campaign's subject, HTML and text templates."""

    __slots__ = ("names", "plans", "usable")

    def __init__(self, plans: tuple[SlotPlan, SlotPlan, SlotPlan]) -> None:
        self.plans = plans
        self.names = frozenset(name for plan in plans for name in plan.slots)
        self.usable = True


@dataclass(frozen=True, slots=True)
class _Part:
    """A body part (HTML or text) as a skeleton inside its layout, ready for ``bytes``
    formatting: the quoted-printable runs of its constant pieces, already encoded and
    joined, and its slots (``%(key)s``, the key as in ``_Slot``), each preceded by the
    soft line break that joins it to what comes before (see :func:`_fill`)."""

    format: bytes
    #: Each slot of the body (its key) and how often it occurs (for the body's size).
    body_counts: tuple[tuple[bytes, int], ...]
    body_size: int  # of the constant pieces of the body
    #: The constant runs hold nothing that DKIM's relaxed body form changes (``_canonical``).
    canonical: bool


def _canonical(encoded: bytes) -> bool:
    """No tab, no two spaces in a row, no space before a line end: an encoded piece that
    DKIM's relaxed canonicalisation leaves as it is. Pieces are joined by soft line breaks
    (``=`` CRLF), so no run of white space spans two of them."""
    return b"\t" not in encoded and b"  " not in encoded and b" \r" not in encoded


def _part(layout_parts: tuple[str, ...], body: list[str | _Slot], qp: QpEncoder) -> _Part:
    pieces: list[str | _Slot] = []
    for i, part in enumerate(layout_parts):  # as Layout.fill_pieces, with slots
        if i % 2 == 0:
            pieces.append(part)
        elif part == "body":
            pieces.extend(body)
        else:
            pieces.append(_Slot("l:" + part))
    chunks: list[bytes] = []
    run: list[bytes] = []
    canonical = True
    for piece in [*pieces, _Slot("")]:  # a last slot that flushes the last run
        if isinstance(piece, _Slot):
            if run:
                encoded = qp.join_run(run)
                canonical = canonical and _canonical(encoded)
                chunks.append((_SOFT_BREAK + encoded).replace(b"%", b"%%"))
                run = []
            if piece.key:
                chunks.append(b"%(" + piece.key.encode() + b")s")
        elif piece:
            run.append(qp.piece(piece))
    counts = Counter(p.key.encode() for p in body if isinstance(p, _Slot))
    body_size = sum(len(p) for p in body if not isinstance(p, _Slot))
    return _Part(b"".join(chunks), tuple(counts.items()), body_size, canonical)


_SOFT_BREAK = QpEncoder.SOFT_BREAK


def _fill(part: _Part, values: dict[bytes, str], qp: QpEncoder, memo: dict[str, bytes]) -> tuple[bytes, bool]:
    """The part with these values (by slot key) in its slots, encoded as ``qp.encode``
    encodes the pieces (an empty value is no piece), and whether it is in DKIM relaxed
    form (``_canonical``). ``memo``: values already encoded for this message (a piece's
    encoding depends on the piece alone; the links are in both parts)."""
    piece = qp.piece
    canonical = part.canonical
    encoded: dict[bytes, bytes] = {}
    for key, value in values.items():
        if value:
            data = memo.get(value)
            if data is None:
                data = memo[value] = piece(value)
            if canonical and (b"\t" in data or b"  " in data or b" \r" in data):
                canonical = False
            encoded[key] = _SOFT_BREAK + data
        else:
            encoded[key] = b""
    # Every piece comes with the soft line break before it: the first one has none.
    data = (part.format % encoded)[len(_SOFT_BREAK) :]
    if data[-1:] in (b" ", b"\t"):  # trailing white space at the end of the part
        data += b"="
    return data, canonical


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """One rendered message: the subject, and both bodies inside their layout, encoded
    quoted-printable (``QpEncoder``)."""

    subject: str
    html: bytes
    text: bytes
    #: Both bodies hold no tab, no two spaces in a row and no space before a line end: a
    #: message made of them has its body in DKIM relaxed form already. False when unknown.
    canonical: bool = False


@dataclass(frozen=True, slots=True)
class RenderedPieces:
    """One rendered message with its bodies as pieces (see ``QpEncoder``)."""

    subject: str
    html: list[str]
    text: list[str]


@dataclass(frozen=True, slots=True)
class CompiledCampaign:
    subject: Template
    html: Template
    text: Template
    layout: Layout
    #: Quoted-printable encoders that remember the encoding of the literal pieces.
    html_qp: QpEncoder = dataclass_field(default_factory=lambda: QpEncoder(()))
    text_qp: QpEncoder = dataclass_field(default_factory=lambda: QpEncoder(()))
    #: Output per distinct values of the variables each template uses.
    subject_cache: RenderCache = dataclass_field(default_factory=lambda: RenderCache(None))
    html_cache: RenderCache = dataclass_field(default_factory=lambda: RenderCache(None))
    text_cache: RenderCache = dataclass_field(default_factory=lambda: RenderCache(None))
    #: Skeletons with slots for the values that differ per recipient (``render_encoded``).
    plans: SlotPlans | None = None

    def render(self, context: dict[str, Any]) -> Rendered:
        """Render one message. Raises ``TemplateProblem`` for sandbox or data errors."""
        pieces = self.render_pieces(context)
        return Rendered(subject=pieces.subject, html="".join(pieces.html), text="".join(pieces.text))

    def render_pieces(self, context: dict[str, Any]) -> RenderedPieces:
        """Render one message, bodies as pieces. Raises ``TemplateProblem``."""
        subject_key = self.subject_cache.key(context)
        html_key = self.html_cache.key(context)
        text_key = self.text_cache.key(context)
        subject: str | None = self.subject_cache.get(subject_key)
        body_html: list[str] | None = self.html_cache.get(html_key)
        body_text: list[str] | None = self.text_cache.get(text_key)
        try:
            if subject is None or body_html is None or body_text is None:
                # One context for the three templates (Template.render would copy it three times).
                shared = {**_HTML_ENV.globals, **context}
                with time_budget():
                    if subject is None:
                        subject = clean_header(_render(self.subject, shared))
                        self.subject_cache.put(subject_key, subject)
                    if body_html is None:
                        body_html = _pieces(self.html, shared)
                        self.html_cache.put(html_key, body_html)
                    if body_text is None:
                        body_text = _pieces(self.text, shared)
                        self.text_cache.put(text_key, body_text)
        except RenderTimeout as exc:
            raise TemplateProblem("the template takes too long to render", field="html") from exc
        except SecurityError as exc:
            raise TemplateProblem(f"refused by the template sandbox: {exc}", field="html") from exc
        except (TemplateError, UndefinedError, TypeError, ValueError, ArithmeticError) as exc:
            raise TemplateProblem(f"template error: {exc}", field="html") from exc
        if sum(map(len, body_html)) > MAX_OUTPUT or sum(map(len, body_text)) > MAX_OUTPUT:
            raise TemplateProblem("the rendered message is too large", field="html")
        unsubscribe_url = str(context.get("unsubscribe_url", ""))
        preferences_url = str(context.get("preferences_url", ""))
        html = Layout.fill_pieces(
            self.layout.html_parts,
            {
                "subject": html_escape(subject),
                "unsubscribe_url": html_escape(unsubscribe_url),
                "preferences_url": html_escape(preferences_url),
            },
            body_html,
        )
        text = Layout.fill_pieces(
            self.layout.text_parts,
            {"subject": subject, "unsubscribe_url": unsubscribe_url, "preferences_url": preferences_url},
            body_text,
        )
        return RenderedPieces(subject=subject, html=html, text=text)

    def render_encoded(self, context: dict[str, Any]) -> EncodedMessage:
        """Render one message for sending: the same message as :meth:`render_pieces` with
        the bodies encoded by ``html_qp`` and ``text_qp``, but each template is rendered
        once per distinct values of the variables it does more with than output them (see
        ``SlotPlan``); the per-recipient values are put into the cached skeleton, whose
        constant text is already encoded. Raises ``TemplateProblem``."""
        plans = self.plans
        if plans is None or not plans.usable or not context.keys() >= plans.names:
            return self._encode(self.render_pieces(context))
        keys = [plan.cache.key(context) for plan in plans.plans]
        found: list[Any] = [plan.cache.get(key) for plan, key in zip(plans.plans, keys, strict=True)]
        try:
            if None in found:
                base = {**_HTML_ENV.globals, **context}
                with time_budget():
                    for i, template in enumerate((self.subject, self.html, self.text)):
                        if found[i] is None:
                            found[i] = self._skeleton(i, plans.plans[i], template, base)
                            plans.plans[i].cache.put(keys[i], found[i])
        except _NoSkeleton:
            plans.usable = False  # this campaign's messages are rendered as they are
            return self._encode(self.render_pieces(context))
        except RenderTimeout as exc:
            raise TemplateProblem("the template takes too long to render", field="html") from exc
        except SecurityError as exc:
            raise TemplateProblem(f"refused by the template sandbox: {exc}", field="html") from exc
        except (TemplateError, UndefinedError, TypeError, ValueError, ArithmeticError) as exc:
            raise TemplateProblem(f"template error: {exc}", field="html") from exc
        subject_items, html_part, text_part = found
        subject_plan, html_plan, text_plan = plans.plans
        values = {f"b:{name}": str(context[name]) for name in subject_plan.slots}
        subject = clean_header("".join([v if v.__class__ is str else values[v.key] for v in subject_items]))
        unsubscribe_url = str(context.get("unsubscribe_url", ""))
        preferences_url = str(context.get("preferences_url", ""))
        html_values = {key: str(markup_escape(context[name])) for name, key in html_plan.keys}
        html_values[b"l:subject"] = html_escape(subject)
        html_values[b"l:unsubscribe_url"] = html_escape(unsubscribe_url)
        html_values[b"l:preferences_url"] = html_escape(preferences_url)
        text_values = {key: str(context[name]) for name, key in text_plan.keys}
        text_values[b"l:subject"] = subject
        text_values[b"l:unsubscribe_url"] = unsubscribe_url
        text_values[b"l:preferences_url"] = preferences_url
        for part, part_values in ((html_part, html_values), (text_part, text_values)):
            size = part.body_size + sum([len(part_values[key]) * n for key, n in part.body_counts])
            if size > MAX_SIZE:  # what the sandbox's bounded_pieces says, had it rendered the values
                raise TemplateProblem(
                    "refused by the template sandbox: the rendered text is too large "
                    "(templates are limited in size and time)",
                    field="html",
                )
            if size > MAX_OUTPUT:
                raise TemplateProblem("the rendered message is too large", field="html")
        memo: dict[str, bytes] = {}
        text, text_canonical = _fill(text_part, text_values, self.text_qp, memo)
        html, html_canonical = _fill(html_part, html_values, self.html_qp, memo)
        canonical = html_canonical and text_canonical
        return EncodedMessage(subject=subject, html=html, text=text, canonical=canonical)

    def _skeleton(self, which: int, plan: SlotPlan, template: Template, base: dict[str, Any]) -> Any:
        pieces = _pieces(template, {**base, **plan.markers})
        if which == 0:  # the subject: its pieces, joined and cleaned per message
            return plan.skeleton(pieces)
        if which == 1:
            return _part(self.layout.html_parts, plan.skeleton(pieces), self.html_qp)
        return _part(self.layout.text_parts, plan.skeleton(pieces), self.text_qp)

    def _encode(self, rendered: RenderedPieces) -> EncodedMessage:
        return EncodedMessage(
            subject=rendered.subject,
            html=self.html_qp.encode(rendered.html),
            text=self.text_qp.encode(rendered.text),
        )


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
    html_source = html or "<pre>{{ '' }}</pre>"
    layout = Layout.build(
        footer=footer, sender_name=sender_name, topic_name=topic_name, postal_address=postal_address
    )
    compiled = CompiledCampaign(
        subject=_compile(_PLAIN_ENV, subject, "subject"),
        html=_compile(_HTML_ENV, html_source, "html"),
        text=_compile(_PLAIN_ENV, text_source or "", "text"),
        layout=layout,
        html_qp=QpEncoder(_literal_text(_HTML_ENV, html_source) | set(layout.html_parts[::2])),
        text_qp=QpEncoder(_literal_text(_PLAIN_ENV, text_source or "") | set(layout.text_parts[::2])),
        subject_cache=RenderCache(_variables(_PLAIN_ENV, subject)),
        html_cache=RenderCache(_variables(_HTML_ENV, html_source)),
        text_cache=RenderCache(_variables(_PLAIN_ENV, text_source or "")),
        plans=SlotPlans(
            (
                SlotPlan(_PLAIN_ENV, subject),
                SlotPlan(_HTML_ENV, html_source),
                SlotPlan(_PLAIN_ENV, text_source or ""),
            )
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
