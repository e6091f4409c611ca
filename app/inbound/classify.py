"""Classifying one received message: a pure function from bytes (and envelope) to a result.

No database, no settings, no network: the corpus tests and the benchmark call it directly,
and the service applies its result. The order of the checks matters:

1. nothing that looks like mail -> ``unparseable``;
2. mail to our ``mailto:`` unsubscribe address (or an Apple Mail unsubscribe) -> ``optout``;
3. an RFC 5965 feedback report (or an SES complaint) -> ``complaint``;
4. an RFC 3464 delivery-status report -> ``bounce`` (``failed`` or ``delayed``), or
   ``autoreply`` when it reports a delivery or a challenge ("sender not pre-approved");
5. a non-standard bounce with strong evidence (``X-Failed-Recipients``, a mailer-daemon
   writing "Undelivered Mail…") -> ``bounce``; bounces often carry ``Auto-Submitted`` too,
   so this comes before…
6. RFC 3834 and the other auto-reply marks, out-of-office subjects -> ``autoreply``;
7. weaker bounce evidence -> ``bounce``;
8. everything else is a human reply: ``optout`` when what the person wrote asks for it,
   else ``reply``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from email.message import Message
from typing import Any

from app.inbound import mime, replies, reports

KINDS = ("pending", "bounce", "complaint", "autoreply", "optout", "reply", "unparseable")

#: Local parts of our VERP addresses: ``<kind>+<address token>@<domain>``.
TOKEN_ADDRESS = re.compile(rb"\b(bounce|reply|unsubscribe)\+([a-z2-7]{40,80})@([a-z0-9.\-]+)", re.IGNORECASE)
#: Our Message-IDs: ``<lw.<delivery id>.<12 hex>@domain>``.
OUR_MESSAGE_ID = re.compile(rb"<(lw\.(\d{1,18})\.[0-9a-f]{12}@[a-z0-9.\-]+)>", re.IGNORECASE)
#: Feedback types that mean "this person does not want our mail".
SUPPRESSING_FEEDBACK = frozenset({"abuse", "fraud", "opt-out", "optout", "other", "complaint", ""})

_TOP_RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|sv|vs|antw|antwort|r|rif|res|ref|r\u00e9f|odp|fw|fwd|wg|tr|enc|rv|doorst|i)"
    r"\s*(?:\[\d+\])?\s*:\s*)+",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response|answer)|"
    r"autoreply|\bauto:|away from (?:the office|my desk)|on (?:vacation|holiday|leave)|vacation "
    r"(?:reply|notice|message)|\baway until\b|i am away|absence|abwesen|automatische antwort|"
    r"nicht im b\u00fcro|au[s\u00df]er haus|r\u00e9ponse automatique|absent(?:e)? du bureau|"
    r"respuesta autom\u00e1tica|fuera de (?:la )?oficina|resposta autom\u00e1tica|fora do escrit\u00f3rio|"
    r"ausente|risposta automatica|fuori (?:sede|ufficio)|assente|automatisch antwoord|afwezig|"
    r"niet aanwezig|automatyczna odpowied|nieobecno|thank you for (?:your|the) (?:e-?mail|message)|"
    r"we (?:have )?received your (?:e-?mail|message)|ticket (?:received|created)|\[auto",
    re.IGNORECASE,
)
_CHALLENGE = re.compile(
    r"pre-?approved|whitelist|white-list|approved senders?|sender verification|challenge[- ]response|"
    r"(?:verify|confirm) (?:that )?you are (?:a )?(?:human|real|not a robot)|added to (?:the|my) "
    r"(?:recipient'?s? )?(?:allowed|approved|safe) (?:list|senders)|to ensure delivery of your "
    r"e?mail|\(action required\)|please (?:verify|confirm) (?:your|that you)",
    re.IGNORECASE,
)
_AUTO_BODY = re.compile(
    r"i am (?:currently )?(?:out of the office|away|on (?:vacation|holiday|leave))|this is an "
    r"automat(?:ed|ic) (?:response|reply|message)|i will (?:be )?(?:back|return)|je suis absent|"
    r"ich bin (?:bis|vom|derzeit|zurzeit) .{0,40}(?:abwesend|nicht im b\u00fcro)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Hints:
    """What the classifier may know about us: phrases that mark our quoted footer."""

    footer_markers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenRef:
    """A VERP address found in the message: which kind, the token, and where it was."""

    kind: str  # bounce | reply | unsubscribe
    token: str
    place: str  # envelope | header | enclosed


@dataclass(slots=True)
class Classification:
    kind: str
    reason: str = ""
    bounce_type: str | None = None  # hard | soft | delayed (bounces only)
    status: str = ""
    smtp_code: int | None = None
    diagnostic: str = ""
    feedback_type: str | None = None
    #: Failed or complaining recipients named by the report (reliable sources).
    recipients: list[str] = field(default_factory=list)
    #: Addresses from weaker sources (the To of a returned message, the bounce's text).
    weak_recipients: list[str] = field(default_factory=list)
    report_source: str = ""
    tokens: list[TokenRef] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    from_address: str = ""
    subject: str = ""
    #: A reply's own words (quotes, signature, our footer removed), for sales.
    text: str = ""
    opt_out_phrase: str | None = None
    language: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def suppressing_complaint(self) -> bool:
        return self.kind == "complaint" and (self.feedback_type or "") in SUPPRESSING_FEEDBACK

    def to_detail(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens"] = [{"kind": t.kind, "place": t.place} for t in self.tokens]
        data["text"] = self.text[:4000]
        return {k: v for k, v in data.items() if v not in (None, "", [])}


# --------------------------------------------------------------------------- helpers
def _tokens(raw: bytes, msg: Message | None, envelope_to: str | None) -> list[TokenRef]:
    found: list[TokenRef] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: bytes | str, token: bytes | str, place: str) -> None:
        k = kind.decode() if isinstance(kind, bytes) else kind
        t = token.decode() if isinstance(token, bytes) else token
        key = (k.lower(), t.lower())
        if key not in seen:
            seen.add(key)
            found.append(TokenRef(key[0], key[1], place))

    if envelope_to:
        for match in TOKEN_ADDRESS.finditer(envelope_to.encode("utf-8", "replace")):
            add(match.group(1), match.group(2), "envelope")
    if msg is not None:
        for name in _TOP_RECIPIENT_HEADERS:
            try:
                values = msg.get_all(name) or []
            except Exception:  # noqa: S112  (broken mail: skip this header or part)
                continue
            for value in values:
                for match in TOKEN_ADDRESS.finditer(str(value).encode("utf-8", "replace")):
                    add(match.group(1), match.group(2), "header")
    for match in TOKEN_ADDRESS.finditer(raw[:4_000_000]):
        add(match.group(1), match.group(2), "enclosed")
    return found[:20]


def _message_ids(raw: bytes, msg: Message | None) -> list[str]:
    ids: list[str] = []
    if msg is not None:
        for name in ("In-Reply-To", "References"):
            try:
                value = str(msg.get(name) or "")
            except Exception:  # noqa: S112  (broken mail: skip this header or part)
                continue
            for match in OUR_MESSAGE_ID.finditer(value.encode("utf-8", "replace")):
                mid = f"<{match.group(1).decode().lower()}>"
                if mid not in ids:
                    ids.append(mid)
    for match in OUR_MESSAGE_ID.finditer(raw[:4_000_000]):
        mid = f"<{match.group(1).decode().lower()}>"
        if mid not in ids:
            ids.append(mid)
    return ids[:20]


def _header_present(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:
        return None
    return None if value is None else str(value).strip()


def autoreply_kind(msg: Message, subject: str) -> str | None:
    """Why this looks automatic (RFC 3834 and its relatives, subjects), or None."""
    auto_submitted = (_header_present(msg, "Auto-Submitted") or "").lower()
    challenge = bool(
        _header_present(msg, "X-Bluebottle-Request")
        or any(str(k).lower().startswith(("x-boxbe", "x-challenge")) for k in msg)
        or _CHALLENGE.search(subject)
    )
    if challenge:
        return "challenge"
    if auto_submitted and auto_submitted.split(";")[0].strip() != "no":
        return "vacation" if "replied" in auto_submitted else "auto_generated"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply", "X-Vacation"):
        if _header_present(msg, name) is not None:
            return "vacation"
    precedence = (_header_present(msg, "Precedence") or "").lower()
    if precedence in ("auto_reply", "auto-reply", "bulk", "junk"):
        return "vacation" if precedence.startswith("auto") else f"precedence_{precedence}"
    if _header_present(msg, "X-Auto-Response-Suppress") is not None and _AUTO_SUBJECT.search(subject):
        return "vacation"
    if _AUTO_SUBJECT.search(subject):
        return "vacation"
    if _header_present(msg, "X-Auto-Response-Suppress") is not None:
        return "auto_response_suppress"  # weak: Outlook sets it on some mail people write
    return None


def _human_text(msg: Message) -> str:
    """The text a person wrote: the first text/plain part, else the first HTML part."""
    html: str | None = None
    for part, _depth in mime.walk(msg, into_messages=False):
        ctype = mime.content_type(part)
        if mime.broken_multipart(part):
            return mime.part_text(part, replies.MAX_REPLY_CHARS * 2)
        if mime.is_attachment(part) or not ctype.startswith("text/"):
            continue
        if ctype == "text/plain":
            return mime.part_text(part, replies.MAX_REPLY_CHARS * 2)
        if ctype == "text/html" and html is None:
            html = _html_reply(mime.part_text(part, replies.MAX_REPLY_CHARS * 4))
    return html or ""


_HTML_QUOTE = re.compile(
    r"<blockquote.*|<div[^>]*(?:gmail_quote|divRplyFwdMsg|moz-cite-prefix|OutlookMessageHeader|"
    r"yahoo_quoted|appendonsend|mail-quote)[^>]*>.*|<hr[^>]*>.*",
    re.IGNORECASE | re.DOTALL,
)


def _html_reply(html: str) -> str:
    return reports.strip_html(_HTML_QUOTE.sub("", html))


def _is_unsubscribe_mail(msg: Message, tokens: list[TokenRef]) -> bool:
    if any(t.kind == "unsubscribe" and t.place in ("envelope", "header") for t in tokens):
        return True
    apple = (_header_present(msg, "X-Apple-Unsubscribe") or "").lower()
    return apple == "true"


# --------------------------------------------------------------------------- classify
def classify(
    raw: bytes,
    *,
    envelope_from: str | None = None,
    envelope_to: str | None = None,
    hints: Hints | None = None,
) -> Classification:
    """Classify one message. Never raises for any input."""
    hints = hints or Hints()
    try:
        return _classify(raw, envelope_from, envelope_to, hints)
    except RecursionError:
        return Classification(kind="unparseable", reason="too_deeply_nested", problems=["recursion limit"])
    except Exception as exc:  # the last guard: a message is marked, never lost
        return Classification(
            kind="unparseable", reason="parser_error", problems=[f"{type(exc).__name__}: {exc}"[:300]]
        )


def _classify(raw: bytes, envelope_from: str | None, envelope_to: str | None, hints: Hints) -> Classification:
    if not raw or not raw.strip():
        return Classification(kind="unparseable", reason="empty", problems=["empty message"])
    if not mime.looks_like_mail(raw):
        return Classification(
            kind="unparseable",
            reason="no_headers",
            problems=["no header block: not an RFC 5322 message"],
            tokens=_tokens(raw, None, envelope_to),
            message_ids=_message_ids(raw, None),
        )
    msg = mime.parse(raw)
    subject = mime.header_text(msg, "Subject")[:500]
    result = Classification(
        kind="reply",
        subject=subject,
        from_address=mime.sender_address(msg)[:320],
        tokens=_tokens(raw, msg, envelope_to),
        message_ids=_message_ids(raw, msg),
        problems=sorted({type(d).__name__ for d in getattr(msg, "defects", [])})[:10],
    )

    if _is_unsubscribe_mail(msg, result.tokens):
        result.kind = "optout"
        result.reason = "list_unsubscribe"
        result.text = replies.reply_text(_human_text(msg), footer_markers=hints.footer_markers)
        return result

    report = reports.parse_arf(msg)
    if report is None:
        report = _ses(msg)
    if report is None:
        report = reports.parse_dsn(msg, subject)
    if report is None:
        report = reports.parse_heuristic(msg, subject, envelope_from, strict=True, raw=raw)
    if report is not None:
        return _from_report(result, report)

    auto = autoreply_kind(msg, subject)
    if auto is not None and auto != "auto_response_suppress":
        result.kind = "autoreply"
        result.reason = auto
        return result

    report = reports.parse_heuristic(msg, subject, envelope_from, strict=False, raw=raw)
    if report is not None:
        return _from_report(result, report)

    text = _human_text(msg)
    own = replies.reply_text(text, footer_markers=hints.footer_markers)
    result.text = own
    if _AUTO_BODY.search(own[:2000]):
        result.kind = "autoreply"
        result.reason = "vacation"
        return result
    if auto is not None and replies.find_opt_out(own) is None:
        result.kind = "autoreply"  # only the weak mark: an opt-out request written under it still counts
        result.reason = auto
        return result
    match = replies.find_opt_out(own)
    if match is None and subject and not _REPLY_PREFIX.match(subject):
        match = replies.find_opt_out(subject)
    if match is not None:
        result.kind = "optout"
        result.reason = "reply_request"
        result.opt_out_phrase = match.phrase[:200]
        result.language = match.language
        return result
    result.kind = "reply"
    return result


def _ses(msg: Message) -> reports.Report | None:
    sender = mime.sender_address(msg)
    if "amazonaws.com" not in sender and "amazonses.com" not in sender:
        return None
    for part, _depth in mime.walk(msg, into_messages=False):
        if mime.content_type(part) == "text/plain":
            return reports.parse_ses_notification(mime.part_text(part, 1_000_000))
    return None


def _from_report(result: Classification, report: reports.Report) -> Classification:
    result.report_source = report.source
    result.recipients = [r.address for r in report.recipients if r.address][:50]
    result.weak_recipients = [a for a in report.weak_recipients if a not in result.recipients][:20]
    result.status = report.status
    result.smtp_code = report.smtp_code
    result.diagnostic = report.diagnostic[:1000]
    if report.kind == "complaint":
        result.kind = "complaint"
        result.feedback_type = report.subtype or "abuse"
        result.reason = result.feedback_type
        return result
    if report.kind == "delivered":
        result.kind = "autoreply"
        result.reason = "delivery_report"
        return result
    if report.challenge:
        result.kind = "autoreply"
        result.reason = "challenge"
        return result
    result.kind = "bounce"
    result.bounce_type = report.bounce_type or "soft"
    result.reason = report.reason
    return result
