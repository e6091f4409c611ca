"""Machine-written mail: delivery-status reports (bounces), feedback reports (complaints).

Standards first: RFC 3464 ``message/delivery-status`` (per-recipient ``Action``, ``Status``,
``Diagnostic-Code``), RFC 5965 ``message/feedback-report`` (``Feedback-Type``,
``Original-Rcpt-To``), the Amazon SES notification format. Then the non-standard bounces of
common servers: ``flufl.bounce`` (Mailman's detectors) names their failed recipients, and
the heuristics here recognise the bounce itself, the delay warnings and the reason.

Hard or soft is about the *address*: a hard bounce says the address cannot receive mail
(unknown user, unknown host, moved, does not accept mail), so it is suppressed at once. A
soft bounce is a failure of this message (mailbox full, too big, refused as spam, policy,
network, expired): it counts, and repeated soft bounces suppress. A delay warning
(``Action: delayed``) is neither: it is reported and has no effect.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from app.inbound import mime

log = logging.getLogger("listwarden.inbound")
# flufl.bounce logs every detector it runs at INFO; its errors still come through.
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)

HARD_REASONS: frozenset[str] = frozenset({"user_unknown", "host_unknown", "has_moved", "not_accept"})

_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d])")
_SMTP_CODE = re.compile(r"(?<![\d.+\-])([245]\d\d)(?:[ \-](?=[A-Za-z<#(\[']|[245]\.\d)|$)", re.MULTILINE)

#: Where the returned original message starts in the text of a non-standard bounce.
_ORIGINAL_MARKER = re.compile(
    r"^[ \t>]*(?:-+ ?(?:This is a copy of|Original message|Returned message|Below this line)"
    r"|-+ ?original message follows"
    r"|-+ ?The (?:original|header|headers) (?:of the )?(?:message|original message)"
    r"|Original message follows|The original message was received"
    r"|Message headers follow|Returned mail follows|--- ?Returned Message"
    r"|[ \t]*Received: from |Return-path: ?<|Content-Type: message/rfc822)",
    re.IGNORECASE | re.MULTILINE,
)

_DAEMON_LOCAL = re.compile(
    r"^(?:mailer-?daemon|mail-?daemon|postmaster|post_master|mdaemon|mail\.delivery|"
    r"mail-?delivery(?:-?system)?|bounces?|nobody|root|smtp|mmdf|majordomo)(?:[+-].*)?$",
    re.IGNORECASE,
)
_DAEMON_NAME = re.compile(
    r"mail delivery (?:system|subsystem|service)|mailer[- ]daemon|postmaster|system administrator|"
    r"mail administrator|antivirus|delivery status|mail system",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|returned to sender|failure notice|delivery (?:status "
    r"notification|failure|failed|notification|problem|report|has failed)|mail delivery|"
    r"non[- ]?deliver|could not be delivered|failed mail|mail system error|permanent delivery|"
    r"processing error|message status|failure delivery|delivery error|mail failure|"
    r"unzustellbar|nicht zustellbar|non remis|non distribu|no entregado|no se pudo entregar|"
    r"não entregue|non recapitabile|onbestelbaar|niet bezorgd|returned message|"
    r"delayed mail|message delayed|warning: message|delivery delayed|delivery warning|"
    r"delivery status|mail could not|rejected|\u914d\u4fe1\u5931\u6557|\u9000\u4fe1",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(
    r"delay|warning|still being retried|not yet been delivered|retrying|verz\u00f6gert|retard",
    re.IGNORECASE,
)
_DELAY_BODY = re.compile(
    r"this is a warning only|you do not need to resend|will (?:be )?retr(?:y|ied)|will continue "
    r"(?:to try|trying)|has not yet been delivered|not been delivered for|is delayed|is still "
    r"being retried|still trying to deliver|delivery (?:is|has been) delayed|will keep trying",
    re.IGNORECASE,
)
_FAILURE_BODY = re.compile(
    r"could not be delivered|couldn't be delivered|was not delivered|undeliverable|permanent "
    r"(?:error|failure|fatal)|delivery (?:has )?failed|failed (?:permanently|recipient)|"
    r"unable to deliver|delivery to the following recipient|did not reach|user unknown|"
    r"message was rejected|returning message to sender|not be delivered|fatal error|"
    r"delivery failure|error delivering|mail delivery failed|no such user|invalid user|"
    r"requested action not taken|\b55\d[ -]",
    re.IGNORECASE,
)

# Reason patterns, most specific first. The text is the diagnostic of one recipient (a
# DSN) or the bounce's own text (non-standard bounces).
_REASON_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        (
            "challenge",
            r"pre-?approved|requires? confirmation|whitelist\.|to confirm this mail server|"
            r"challenge[- ]response|verify (?:that )?you are|click (?:on )?the following link to "
            r"have your address added",
        ),
        (
            "mailbox_full",
            r"mailbox (?:is )?full|mail ?box full|over ?quota|quota (?:exceeded|full)|exceeded "
            r"(?:the )?(?:storage|quota)|disk quota|insufficient (?:disk |storage )?space|mailbox "
            r"size limit|storage (?:allocation|quota)|not enough (?:disk |storage )?space|full "
            r"mailbox|mailfolder is full|mailbox has exceeded|mailbox exceeds|exceeds allowed size|"
            r"exceeds? (?:his|her|its|the "
            r"user'?s?|their) (?:storage|quota|mailbox)|overquota|account is full|boite pleine|"
            r"postfach (?:ist )?voll|casella piena|buz\u00f3n lleno",
        ),
        (
            "message_too_big",
            r"max(?:imum)? message size exceeded|size exceeded|message (?:size )?(?:is )?too (?:big|large)|"
            r"message size exceeds|exceeds? (?:the )?"
            r"(?:maximum|max|size) (?:message )?size|message length exceeds|message (?:file )?too "
            r"large|size limit|mail size|maximum size|too large|exceeds the allowable",
        ),
        ("exceed_limit", r"too many recipients|recipient limit|exceeded (?:the )?(?:limit|rate)"),
        (
            "rejected",
            r"sender (?:address )?rejected|unroutable sender|sender (?:domain|address) (?:is )?(?:invalid|"
            r"unknown|not allowed)|mail rejet|sender denied|bad sender",
        ),
        ("content", r"media error|content error|line limit|line too long|media type|mime error"),
        (
            "virus",
            r"virus|malware|infected|trojan|harmful (?:content|attachment)",
        ),
        (
            "spam",
            r"spam|junk|bulk mail|unsolicited|blacklist|black list|blocklist|block list|rbl\b|"
            r"spamhaus|spamcop|barracuda|reputation|sorbs|dnsbl|"
            r"(?:considered|classified|identified|detected) as|content (?:filter|rejected)|"
            r"rejected (?:due to|because of|for) (?:content|policy)|message (?:was )?(?:blocked|"
            r"filtered)",
        ),
        (
            "auth_failure",
            r"dmarc|dkim|\bspf\b|authenticat|unauthenticated|sender policy framework|"
            r"reverse (?:dns|lookup)|\bptr\b|rdns|not authorized to send|sender verify failed|"
            r"purported responsible address|sender id\b",
        ),
        (
            "relay_denied",
            r"relay(?:ing)? (?:denied|not permitted|prohibited|access denied|not allowed)|not "
            r"(?:permitted|allowed) to relay|do(?:es)? not relay|unable to relay|relay not "
            r"permitted|not a (?:gateway|relay)|rcpthosts|no relaying|not configured to relay",
        ),
        (
            "rate_limited",
            r"too many (?:connections|messages|emails|concurrent)|rate limit|rate-limit|throttl|"
            r"try (?:again )?later|greylist|graylist|temporarily deferred|deferred due to|"
            r"sending rate|too fast|slow down|speeding|too many recipients (?:this|per) (?:hour|day|minute)",
        ),
        (
            "policy",
            r"policy|prohibited|not allowed|access denied|administrative(?:ly)? prohibit|"
            r"refused|blocked|denied|not accepted for policy|rejected by|banned",
        ),
        (
            "has_moved",
            r"has moved|address (?:has )?changed|user has moved|moved to|new address is",
        ),
        (
            "not_accept",
            r"does not accept (?:e-?)?mail|not accepting (?:network )?messages|null mx|no longer accepts|"
            r"accepts no mail|not accept "
            r"mail|domain does not receive",
        ),
        (
            "host_unknown",
            r"host (?:or domain name )?not found|host unknown|unknown host|domain (?:name )?not "
            r"found|no such (?:domain|host)|domain (?:does not|doesn't) exist|name or service not "
            r"known|unrouteable (?:mail )?domain|no mx|dns (?:lookup )?(?:failure|error)|nxdomain|"
            r"unknown domain|bad destination (?:mail )?host|host .{1,80} not found|unresolvable|"
            r"nameserver error|domain (?:is )?(?:invalid|unknown)|invalid domain|no route to host|"
            r"not (?:a )?(?:known|valid) domain|domain .{0,40}? (?:could not|cannot) be (?:found|"
            r"resolved)",
        ),
        (
            "user_unknown",
            r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|account|person)|"
            r"(?:user|mailbox|recipient|address|account|addressee)(?: \S+)? (?:does not|doesn'?t|"
            r"did not|not) exist|does not exist|doesn'?t exist|invalid (?:recipient|mailbox|address|"
            r"user)|unknown (?:recipient|mailbox|address|local[- ]part|alias)|not listed in|"
            r"no mailbox|mailbox (?:not found|unavailable|does not exist|is unavailable|not "
            r"available|unknown)|unrouteable address|user not found|not a valid (?:user|mailbox|"
            r"recipient)|no (?:such )?account|bad recipient|recipient not found|addressee unknown|"
            r"user (?:doesn'?t|does not) have|no longer (?:valid|active|in use|available)|account "
            r"(?:has been )?(?:closed|deleted|removed|terminated)|unknown or illegal|not our "
            r"customer|no mailbox here|"
            r"unknown recipient|invalid address|illegal alias|is not a valid|"
            r"existiert nicht|unbekannt|n'existe pas|inconnu|no existe|n\u00e3o existe|"
            r"sconosciuto|onbekend|nie istnieje|deactivated|no longer exists|not recogni[sz]ed|discontinued|"
            r"did not (?:exactly )?match",
        ),
        (
            "disabled",
            r"disabled|suspended|inactive|not active|account (?:is )?(?:locked|frozen|expired|"
            r"blocked)|mailbox (?:is )?(?:locked|frozen|inactive)|temporarily unavailable",
        ),
        (
            "expired",
            r"expired|retry time(?:out| exceeded)|could not be delivered (?:for|within)|too long in "
            r"(?:the )?queue|timed? ?out|delivery time|giving up|retry timeout|time limit",
        ),
        (
            "network",
            r"connection (?:refused|timed out|reset|lost|closed)|network|unreachable|no answer|"
            r"could not connect|lost connection|connect to .{1,80} failed",
        ),
        (
            "system_error",
            r"system error|internal error|server error|mailer error|local error|too many hops|"
            r"mail loop|loop detected|loops back|i/o error|configuration error|local delivery "
            r"failed|error writing message|command output|service unavailable|not available|hop count|"
            r"routing loop|pipe to \|",
        ),
        (
            "syntax",
            r"syntax error|bad address syntax|malformed|invalid (?:command|syntax)|not implemented|"
            r"improper sequence|bad sequence|command (?:parameter|unrecognized)",
        ),
        ("refused", r"rejected|not accepted|refused"),
    )
)

_STATUS_REASON: dict[str, str] = {
    "1.1": "user_unknown",
    "1.3": "user_unknown",
    "1.7": "rejected",
    "1.8": "rejected",
    "1.2": "host_unknown",
    "1.6": "has_moved",
    "1.10": "not_accept",
    "4.4": "host_unknown",
    "2.2": "mailbox_full",
    "2.1": "disabled",
    "2.3": "message_too_big",
    "3.4": "message_too_big",
    "4.7": "expired",
    "4.1": "network",
    "4.2": "network",
    "3.0": "system_error",
    "3.2": "not_accept",
    "7.1": "policy",
    "7.0": "policy",
    "6.0": "policy",
    "7.25": "auth_failure",
    "7.26": "auth_failure",
    "7.27": "auth_failure",
}


_SPECIFIC_STATUS = frozenset({"1.1", "1.2", "1.6", "1.7", "1.8", "1.10", "2.2", "3.2", "3.4", "4.4"})
#: Text reasons that win over a specific status code (they name a cause on our side, or
#: say plainly that the mailbox is full).
_OVERRIDING_REASONS = frozenset(
    {
        "challenge",
        "mailbox_full",
        "message_too_big",
        "exceed_limit",
        "spam",
        "auth_failure",
        "rate_limited",
        "relay_denied",
        "virus",
        "rejected",
    }
)
#: Lines of a bounce that quote the original message's headers (their words are not the
#: reason: "Subject: Virus in my mail").
_QUOTED_HEADER_LINE = re.compile(r"^[ \t>]*(?:Subject|To|Cc|From|Sent|Date|Message-id)\s*:.*$", re.I | re.M)


@dataclass(slots=True)
class RecipientReport:
    address: str
    action: str = ""
    status: str = ""
    smtp_code: int | None = None
    diagnostic: str = ""
    source: str = ""


@dataclass(slots=True)
class Report:
    """What a machine-written message says. ``kind``: bounce | complaint | delivered."""

    kind: str
    #: bounce: failed | delayed. complaint: the feedback type. delivered: delivered.
    subtype: str = ""
    recipients: list[RecipientReport] = field(default_factory=list)
    #: Addresses with a weaker source (the To of the returned message, text heuristics).
    weak_recipients: list[str] = field(default_factory=list)
    reason: str = ""
    bounce_type: str = ""  # hard | soft | delayed
    status: str = ""
    smtp_code: int | None = None
    diagnostic: str = ""
    source: str = ""  # dsn | arf | ses | heuristic
    challenge: bool = False


# --------------------------------------------------------------------------- helpers
def clean_address(value: str) -> str:
    """``rfc822; <User@Example.com>`` -> ``user@example.com`` (or '' when it is none)."""
    value = (value or "").strip()
    if ";" in value:
        value = value.split(";", 1)[1]
    match = _ADDRESS.search(value)
    if not match:
        return ""
    return match.group(0).strip(".").lower()


def enhanced_status(*texts: str) -> str:
    for text in texts:
        match = _ENHANCED.search(text or "")
        if match:
            return ".".join(match.groups())
    return ""


def smtp_code(*texts: str) -> int | None:
    for text in texts:
        match = _SMTP_CODE.search(text or "")
        if match:
            return int(match.group(1))
    return None


def reason_for(status: str, code: int | None, text: str) -> str:
    """The reason of a failure from its diagnostic text, else from its status code."""
    text = _QUOTED_HEADER_LINE.sub(" ", (text or "")[:20_000])
    text = _ADDRESS.sub(" ", " ".join(text.split()))
    detail = status.split(".", 1)[1] if status.count(".") == 2 else ""
    # A specific enhanced status code beats generic wording…
    if detail in _SPECIFIC_STATUS:
        specific = _STATUS_REASON[detail]
        for name, pattern in _REASON_PATTERNS:  # …unless the text names a cause of ours
            if name in _OVERRIDING_REASONS and pattern.search(text):
                return name
        return specific
    for name, pattern in _REASON_PATTERNS:
        if pattern.search(text):
            return name
    if detail in _STATUS_REASON:
        return _STATUS_REASON[detail]
    if status.startswith("4.") or (code is not None and 400 <= code < 500):
        return "temporary"
    return "unknown"


def bounce_type_for(reason: str, status: str = "", code: int | None = None) -> str:
    """Hard: the address cannot receive mail. A transient (4.x.x) failure is never hard; a
    permanent (5.x.x or 5xx) failure whose reason could not be told is. Without any code
    and without a reason, it is soft: it counts, and repeated, it suppresses."""
    transient = status.startswith("4.") or (not status and code is not None and 400 <= code < 500)
    if transient:
        return "soft"
    if reason in HARD_REASONS:
        return "hard"
    permanent = status.startswith("5.") or (code is not None and 500 <= code < 600)
    if reason in ("unknown", "temporary") and permanent:
        return "hard"
    return "soft"


def own_text(text: str) -> str:
    """The bounce's own words: the text before the returned original message."""
    match = _ORIGINAL_MARKER.search(text, 40)
    return text[: match.start()] if match else text


def _text_parts(msg: Message, limit: int = 3) -> list[str]:
    texts: list[str] = []
    for part, _depth in mime.walk(msg):
        ctype = mime.content_type(part)
        if ctype in ("message/rfc822", "text/rfc822-headers"):
            break  # the returned message: not the bounce's own words
        if mime.broken_multipart(part):
            texts.append(mime.part_text(part, 100_000))
        elif ctype.startswith("text/") and not mime.is_attachment(part):
            text = mime.part_text(part, 100_000)
            if ctype == "text/html":
                text = strip_html(text)
            texts.append(text)
            if len(texts) >= limit:
                break
    return texts


_TAG = re.compile(r"<(?:script|style)[^>]*>.*?</(?:script|style)>|<[^>]{0,2000}>", re.DOTALL | re.IGNORECASE)
_BR = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)[^>]{0,200}>", re.IGNORECASE)


def strip_html(html: str) -> str:
    import html as html_module

    text = _BR.sub("\n", html[:500_000])
    text = _TAG.sub(" ", text)
    return html_module.unescape(text)


# --------------------------------------------------------------------------- RFC 3464
def _dsn_recipients(blocks: list[dict[str, str]], source: str) -> list[RecipientReport]:
    per_message: dict[str, str] = {}
    recipients: list[RecipientReport] = []
    for block in blocks:
        final = block.get("final-recipient", "")
        original = block.get("original-recipient", "")
        actual = block.get("x-actual-recipient", "")
        if not (final or original):
            if not recipients:
                per_message.update(block)
            continue
        merged = {
            **{k: v for k, v in per_message.items() if k in ("action", "status", "diagnostic-code")},
            **block,
        }
        diagnostic = merged.get("diagnostic-code", "") or merged.get("x-diagnostic-code", "")
        status_field = merged.get("status", "")
        status = enhanced_status(status_field, diagnostic)
        action = merged.get("action", "").split()[0].lower() if merged.get("action", "").strip() else ""
        seen: list[str] = []
        for value in (original, final, actual):
            for line in value.split("\n"):
                address = clean_address(line)
                if address and address not in seen:
                    seen.append(address)
        for address in seen:
            recipients.append(
                RecipientReport(
                    address=address,
                    action=action,
                    status=status,
                    smtp_code=smtp_code(diagnostic, status_field),
                    diagnostic=re.sub(r"\s+", " ", diagnostic)[:1000],
                    source=source,
                )
            )
    return recipients


def _delayed(recipients: list[Any], source: str) -> Report:
    """A delay warning: reported as a bounce of type ``delayed``, which has no effect."""
    first = recipients[0]
    return Report(
        kind="bounce",
        subtype="delayed",
        recipients=recipients,
        bounce_type="delayed",
        reason="delayed",
        status=first.status,
        smtp_code=first.smtp_code,
        diagnostic=first.diagnostic,
        source=source,
    )


def _report_from_recipients(
    recipients: list[RecipientReport], subject: str, body: str, source: str
) -> Report | None:
    if not recipients:
        return None
    actions = {r.action for r in recipients}
    failed = [r for r in recipients if r.action in ("failed", "failure", "")]
    if "failed" not in actions and "failure" not in actions:
        if "delayed" in actions:
            failed = []
        elif "" not in actions and all(a.startswith(("deliver", "relay", "expand")) for a in actions):
            return Report(kind="delivered", subtype="delivered", recipients=recipients, source=source)
    if not failed:
        return _delayed([r for r in recipients if r.action == "delayed"] or recipients, source)
    # No Action at all and only 4.x.x statuses, worded as a warning: a delay.
    if (
        all(not r.action for r in failed)
        and all(r.status.startswith("4") or not r.status for r in failed)
        and (_DELAY_SUBJECT.search(subject) or _DELAY_BODY.search(body))
    ):
        return _delayed(failed, source)
    first = failed[0]
    reasons = [reason_for(r.status, r.smtp_code, f"{r.diagnostic}") for r in failed]
    if all(reason in ("unknown", "temporary", "policy", "system_error") for reason in reasons):
        reasons = [
            reason_for(r.status, r.smtp_code, f"{r.diagnostic}\n{body[:5000]}")
            if reason in ("unknown", "temporary")
            else reason
            for r, reason in zip(failed, reasons, strict=True)
        ]
    reason = next((r for r in reasons if r in HARD_REASONS), reasons[0])
    report = Report(
        kind="bounce",
        subtype="failed",
        recipients=failed,
        reason=reason,
        bounce_type=bounce_type_for(reason, first.status, first.smtp_code),
        status=first.status,
        smtp_code=first.smtp_code,
        diagnostic=first.diagnostic,
        source=source,
    )
    if reason == "challenge":
        report.challenge = True
    return report


def parse_dsn(msg: Message, subject: str) -> Report | None:
    """An RFC 3464 report: a ``message/delivery-status`` part anywhere in the message."""
    for part, _depth in mime.walk(msg):
        if mime.content_type(part) in ("message/delivery-status", "message/global-delivery-status"):
            blocks = mime.parse_fields(mime.raw_part_text(part))
            recipients = _dsn_recipients(blocks, "dsn")
            body = "\n".join(own_text(t) for t in _text_parts(msg))
            report = _report_from_recipients(recipients, subject, body, "dsn")
            if report is not None:
                return report
    return None


_INLINE_DSN = re.compile(r"^(?:Final|Original)-Recipient:", re.IGNORECASE | re.MULTILINE)


def parse_inline_dsn(texts: list[str], subject: str) -> Report | None:
    """Delivery-status fields written into a text part (some servers do that)."""
    for text in texts:
        match = _INLINE_DSN.search(text)
        if not match:
            continue
        start = text.rfind("\n\n", 0, match.start())
        chunk = text[start + 2 if start >= 0 else 0 :]
        lines = [ln for ln in chunk.replace("\r\n", "\n").split("\n")]
        # Keep the field lines (and their continuations); a blank line separates blocks.
        kept: list[str] = []
        for line in lines:
            if re.match(r"^[A-Za-z][A-Za-z0-9-]*:", line) or (line[:1] in (" ", "\t") and kept):
                kept.append(line)
            elif not line.strip():
                kept.append("")
        blocks = mime.parse_fields("\n".join(kept))
        merged: dict[str, str] = {}
        for block in blocks:  # servers that write them inline often break the blocks
            for key, value in block.items():
                merged.setdefault(key, value)
        recipients = _dsn_recipients([merged], "inline-dsn")
        report = _report_from_recipients(recipients, subject, "\n".join(texts), "inline-dsn")
        if report is not None:
            return report
    return None


# --------------------------------------------------------------------------- RFC 5965
_FEEDBACK_RECIPIENT_FIELDS = ("original-rcpt-to", "removal-recipient")


def parse_arf(msg: Message) -> Report | None:
    feedback_parts = [
        part for part, _d in mime.walk(msg) if mime.content_type(part) == "message/feedback-report"
    ]
    is_report = False
    try:
        is_report = msg.get_content_type() == "multipart/report" and (
            (msg.get_param("report-type") or "").__str__().lower() == "feedback-report"
        )
    except Exception:
        is_report = False
    if not feedback_parts and not is_report:
        return None
    fields: dict[str, str] = {}
    for part in feedback_parts:
        for block in mime.parse_fields(mime.raw_part_text(part)):
            for key, value in block.items():
                fields[key] = f"{fields[key]}\n{value}" if key in fields else value
    feedback_type = (fields.get("feedback-type", "") or "abuse").split("\n")[0].strip().lower()
    recipients: list[RecipientReport] = []
    seen: set[str] = set()
    for name in _FEEDBACK_RECIPIENT_FIELDS:
        for line in fields.get(name, "").split("\n"):
            address = clean_address(line)
            if address and address not in seen:
                seen.add(address)
                recipients.append(RecipientReport(address=address, action="complaint", source="arf"))
    weak: list[str] = []
    for enclosed in mime.enclosed_messages(msg):
        for address in mime.addresses(enclosed, "To"):
            if address not in seen and _ADDRESS.fullmatch(address):
                weak.append(address)
    return Report(
        kind="complaint",
        subtype=feedback_type,
        recipients=recipients,
        weak_recipients=weak,
        reason=feedback_type,
        source="arf",
    )


# --------------------------------------------------------------------------- Amazon SES
def parse_ses_notification(text: str) -> Report | None:
    """An Amazon SES event published by SNS (JSON body with ``notificationType``)."""
    start = text.find("{")
    if start < 0 or '"notificationType"' not in text[:200_000]:
        return None
    data: object = None
    for candidate in (text[start:], re.sub(r"\r?\n", "", text[start:])):
        try:
            data, _end = json.JSONDecoder().raw_decode(candidate)
            break
        except (ValueError, RecursionError):
            continue
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("Message"), str):  # an SNS envelope around the SES event
        try:
            inner = json.loads(data["Message"])
        except (ValueError, RecursionError):
            return None
        if isinstance(inner, dict):
            data = inner
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    if kind == "complaint":
        complaint = data.get("complaint") or {}
        recipients = [
            RecipientReport(
                address=clean_address(str(r.get("emailAddress", ""))), action="complaint", source="ses"
            )
            for r in complaint.get("complainedRecipients", [])
            if isinstance(r, dict)
        ]
        feedback = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        return Report(
            kind="complaint",
            subtype=feedback,
            recipients=[r for r in recipients if r.address],
            reason=feedback,
            source="ses",
        )
    if kind == "bounce":
        bounce = data.get("bounce") or {}
        permanent = str(bounce.get("bounceType", "")).lower() == "permanent"
        recipients = []
        for r in bounce.get("bouncedRecipients", []):
            if not isinstance(r, dict):
                continue
            diagnostic = str(r.get("diagnosticCode") or "")
            status = enhanced_status(str(r.get("status") or ""), diagnostic)
            recipients.append(
                RecipientReport(
                    address=clean_address(str(r.get("emailAddress", ""))),
                    action="failed",
                    status=status,
                    smtp_code=smtp_code(diagnostic),
                    diagnostic=diagnostic[:1000],
                    source="ses",
                )
            )
        recipients = [r for r in recipients if r.address]
        first = recipients[0] if recipients else RecipientReport(address="")
        reason = reason_for(first.status, first.smtp_code, first.diagnostic)
        if permanent and reason in ("unknown", "temporary", "policy"):
            sub = str(bounce.get("bounceSubType", "")).lower()
            reason = {
                "general": "user_unknown",
                "nomailbox": "user_unknown",
                "suppressed": "user_unknown",
            }.get(sub, reason)
        return Report(
            kind="bounce",
            subtype="failed",
            recipients=recipients,
            reason=reason,
            bounce_type=bounce_type_for(reason, first.status, first.smtp_code),
            status=first.status,
            smtp_code=first.smtp_code,
            diagnostic=first.diagnostic,
            source="ses",
        )
    if kind in ("delivery", "deliverydelay", "send", "open", "click"):
        return Report(kind="delivered", subtype=kind, source="ses")
    return None


# --------------------------------------------------------------------------- non-standard
def is_daemon_sender(msg: Message) -> bool:
    raw_from = mime.header_text(msg, "From")
    address = mime.sender_address(msg)
    local = address.split("@", 1)[0] if address else ""
    if not address or address in ("<>", "mailer-daemon"):
        return raw_from.strip() in ("", "<>") or bool(_DAEMON_NAME.search(raw_from)) or "<>" in raw_from
    return bool(_DAEMON_LOCAL.match(local)) or bool(_DAEMON_NAME.search(raw_from.split("<")[0]))


def null_sender(msg: Message, envelope_from: str | None) -> bool:
    if envelope_from is not None and envelope_from.strip() in ("", "<>"):
        return True
    return_path = mime.header_text(msg, "Return-Path").strip()
    return return_path in ("<>", "") and bool(msg.get("Return-Path") is not None)


def _flufl(msg: Message) -> tuple[list[str], list[str]]:
    try:
        from flufl.bounce import all_failures

        temporary, permanent = all_failures(msg)
    except Exception:  # a detector that trips over a broken message
        log.debug("flufl.bounce failed", exc_info=True)
        return [], []

    def norm(items: frozenset[bytes] | frozenset[str] | set[bytes]) -> list[str]:
        out: list[str] = []
        for item in items:
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            address = clean_address(text)
            plain = text.strip().strip("<>").lower() == address or ("@" in text and " " not in text.strip())
            if address and _ADDRESS.fullmatch(address) and address not in out and plain:
                out.append(address)
        return sorted(out)

    return norm(temporary), norm(permanent)


_RCPT_LINE = re.compile(
    r"(?:^|\s)<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)>?"
    r"(?:[:,]|\s*\.{3}|\s+(?:on|\(|-)|\s*$)",
    re.MULTILINE,
)


def text_recipients(text: str, exclude: set[str]) -> list[str]:
    found: list[str] = []
    for match in _RCPT_LINE.finditer(text[:50_000]):
        address = match.group(1).strip(".").lower()
        if address not in exclude and address not in found and not address.startswith(("bounce+", "reply+")):
            found.append(address)
    if not found:
        for match in _ADDRESS.finditer(text[:50_000]):
            address = match.group(0).strip(".").lower()
            if address not in exclude and address not in found:
                found.append(address)
    return found[:20]


#: flufl.bounce's heuristic detectors are slow on huge messages: they read at most this.
FLUFL_MAX_BYTES = 1_000_000


def parse_heuristic(
    msg: Message, subject: str, envelope_from: str | None, *, strict: bool, raw: bytes = b""
) -> Report | None:
    """A bounce that is not an RFC 3464 report. ``strict``: only with strong evidence (it
    runs before the auto-reply checks, which would otherwise claim such bounces). ``raw``:
    the message's bytes, to give flufl.bounce only the head of a huge message."""
    failed_values = [mime.decode_words(v) for v in msg.get_all("X-Failed-Recipients") or []]
    failed_header = [clean_address(a) for a in ",".join(failed_values).split(",")]
    failed_header = [a for a in failed_header if a]
    daemon = is_daemon_sender(msg)
    bounce_subject = bool(_BOUNCE_SUBJECT.search(subject))
    texts = _text_parts(msg)
    body = "\n".join(texts)
    own = own_text(body)
    if strict and not failed_header and not daemon:
        return None
    if not (failed_header or daemon or bounce_subject or null_sender(msg, envelope_from)):
        return None  # nothing machine-like about it: not worth running the detectors
    flufl_msg = mime.parse(raw[:FLUFL_MAX_BYTES]) if len(raw) > FLUFL_MAX_BYTES else msg
    temporary, permanent = _flufl(flufl_msg)
    if strict and not failed_header and not bounce_subject and not (permanent or temporary):
        return None
    evidence = bool(failed_header) or (daemon and (bounce_subject or bool(permanent or temporary)))
    if not evidence:
        evidence = bounce_subject and bool(permanent or temporary or _FAILURE_BODY.search(own))
    if not evidence:
        evidence = (daemon or null_sender(msg, envelope_from)) and bool(_FAILURE_BODY.search(own))
    if not evidence:
        return None
    inline = parse_inline_dsn(texts, subject)
    exclude = set(mime.addresses(msg, "From", "To", "Return-Path", "Reply-To", "Sender"))
    recipients: list[RecipientReport] = []
    seen: set[str] = set()

    def add(address: str, source: str) -> None:
        if address and address not in seen and address not in exclude:
            seen.add(address)
            recipients.append(RecipientReport(address=address, action="failed", source=source))

    for address in failed_header:
        add(address, "x-failed-recipients")
    if inline is not None:
        for r in inline.recipients:
            add(r.address, "inline-dsn")
    for address in permanent + temporary:
        add(address, "flufl.bounce")
    weak: list[str] = []
    if not recipients:
        weak = text_recipients(own, exclude)
        if not weak:
            for enclosed in mime.enclosed_messages(msg)[:1]:
                weak = [a for a in mime.addresses(enclosed, "To") if a not in exclude]
            if not weak:
                weak = text_recipients(body, exclude)
    delayed = (bool(temporary) and not permanent and not failed_header) or (
        (bool(_DELAY_SUBJECT.search(subject)) or bool(_DELAY_BODY.search(own)))
        and not _FAILURE_BODY.search(subject)
        and not failed_header
        and not permanent
    )
    diagnostic_text = own[:20_000]
    status = inline.status if inline is not None else enhanced_status(diagnostic_text)
    code = inline.smtp_code if inline is not None else smtp_code(diagnostic_text)
    if delayed and (inline is None or inline.bounce_type == "delayed"):
        return Report(
            kind="bounce",
            subtype="delayed",
            recipients=recipients,
            weak_recipients=weak,
            reason="delayed",
            bounce_type="delayed",
            status=status,
            smtp_code=code,
            diagnostic=_first_line_with_code(diagnostic_text),
            source="heuristic",
        )
    if inline is not None and inline.reason not in ("unknown", "temporary", ""):
        reason = inline.reason
    else:
        reason = reason_for(status, code, f"{subject}\n{diagnostic_text}")
    report = Report(
        kind="bounce",
        subtype="failed",
        recipients=recipients,
        weak_recipients=weak,
        reason=reason,
        bounce_type=bounce_type_for(reason, status, code),
        status=status,
        smtp_code=code,
        diagnostic=_first_line_with_code(diagnostic_text),
        source="heuristic",
    )
    report.challenge = reason == "challenge"
    return report


def _first_line_with_code(text: str) -> str:
    for line in text.splitlines():
        if _SMTP_CODE.search(line) or _ENHANCED.search(line):
            return line.strip()[:500]
    return " ".join(text.split())[:300]
