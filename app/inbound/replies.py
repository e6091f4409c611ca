"""Human replies: what the person actually wrote, and whether it asks to opt out.

Every reply quotes our footer, and the footer says "Unsubscribe" — that word must not opt
anyone out. So the reply is cut first: ``mail-parser-reply`` splits the text at reply and
forward headers in many languages ("On … wrote:", "Am … schrieb …:", "-----Original
Message-----", Outlook's From/Sent block) and drops signatures and disclaimers; then the
rules here drop ``>``-quoted lines, cut at the headers that library does not know (Portuguese,
some Outlook and forward separators) and at anything that is ours (the footer sentences, our
links, our postal address).

Only then is the text read for an opt-out request, sentence by sentence, in English,
French, German, Spanish, Portuguese, Italian and Dutch. A request that is negated in the
same clause ("please don't unsubscribe me", "ne me désabonnez pas", "bitte nicht abmelden")
is not one; requests that are themselves negative ("don't send me any more emails", "je ne
veux plus recevoir", "keine E-Mails mehr") are written as their own patterns.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

#: Characters of a reply body that are looked at (a person's own words come first).
MAX_REPLY_CHARS = 30_000
#: Characters handed to the quote parser (its signature patterns are not linear-time safe
#: on huge inputs).
MAX_PARSER_CHARS = 12_000

LANGUAGES = ("en", "fr", "de", "es", "pt", "it", "nl")

# Lines that start the quoted or forwarded part, beyond what mail-parser-reply knows.
_CUT_LINES = re.compile(
    r"^[ \t]*(?:"
    r"-{2,}\s*(?:original message|forwarded message|message d'origine|message transf[ée]r[ée]|"
    r"urspr[üu]ngliche nachricht|weitergeleitete nachricht|mensaje original|mensaje reenviado|"
    r"mensagem original|mensagem encaminhada|messaggio originale|messaggio inoltrato|"
    r"oorspronkelijk bericht|doorgestuurd bericht)\s*-*"
    r"|_{10,}"
    r"|begin forwarded message:?|d[ée]but du message r[ée]exp[ée]di[ée]\s*:?"
    r"|anfang der weitergeleiteten nachricht:?"
    r"|inicio del mensaje reenviado:?|in[íi]cio da mensagem reencaminhada:?|inizio messaggio inoltrato:?"
    r"|begin doorgestuurd bericht:?"
    r"|on .{1,200}(?:wrote|writes)\s*:"
    r"|le .{1,200}a [ée]crit\s*:"
    r"|am .{1,200}schrieb.{0,200}:"
    r"|el .{1,200}escribi[óo]\s*:"
    r"|em .{1,200}escreveu\s*:"
    r"|il .{1,200}ha scritto\s*:"
    r"|op .{1,200}schreef.{0,200}:"
    r"|(?:from|de|von|van|da|od)\s*:\s*.{0,200}\n(?:.*\n){0,3}?[ \t]*(?:sent|envoy[ée]|gesendet|verzonden|"
    r"inviato|enviado|date|datum|data|fecha)\s*:"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
_SIGNATURE_DELIMITER = re.compile(r"^-- ?$", re.MULTILINE)
_MOBILE_SIGNATURE = re.compile(
    r"^[ \t]*(?:sent from my|envoy[ée] de mon|von meinem .{0,40} gesendet|enviado desde mi|"
    r"enviado do meu|inviato da|verzonden (?:vanaf|met) mijn|get outlook for)\b.*$",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_LINE = re.compile(r"^[ \t]*(?:>|\|)")
_URL = re.compile(r"(?:https?://|www\.)\S+|mailto:\S+", re.IGNORECASE)
#: Sentences of our own footer (templates/email/base.*): a line carrying one is ours.
FOOTER_SENTENCES = (
    "you receive this email from",
    "manage your preferences",
    "unsubscribe: http",
    "unsubscribe:http",
)


@dataclass(frozen=True, slots=True)
class OptOutMatch:
    language: str
    phrase: str


def _fold(text: str) -> str:
    """Lower case, typographic apostrophes made plain, accents kept."""
    text = unicodedata.normalize("NFC", text)
    return text.replace("\u2019", "'").replace("\u2018", "'").replace("\u00a0", " ").lower()


# --------------------------------------------------------------------------- reply text
def reply_text(body: str, *, footer_markers: tuple[str, ...] = ()) -> str:
    """The person's own words in a reply (quotes, forwards, signatures and our footer cut)."""
    text = body.replace("\r\n", "\n").replace("\r", "\n")[:MAX_REPLY_CHARS]
    text = _library_cut(text)
    match = _CUT_LINES.search(text)
    if match:
        text = text[: match.start()]
    match = _SIGNATURE_DELIMITER.search(text)
    if match:
        text = text[: match.start()]
    text = _MOBILE_SIGNATURE.sub("", text)
    markers = tuple(m.lower() for m in (*FOOTER_SENTENCES, *footer_markers) if m)
    kept: list[str] = []
    for line in text.split("\n"):
        if _QUOTED_LINE.match(line):
            continue
        lowered = _fold(line)
        if any(marker in lowered for marker in markers):
            break  # our footer (quoted without ">" by some clients): everything after is ours
        kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


@lru_cache(maxsize=1)
def _parser() -> object:
    from mailparser_reply import EmailReplyParser

    return EmailReplyParser(languages=list(LANGUAGES))


def _library_cut(text: str) -> str:
    """The first reply of the text according to mail-parser-reply (signatures dropped)."""
    head, rest = text[:MAX_PARSER_CHARS], text[MAX_PARSER_CHARS:]
    try:
        message = _parser().read(head)  # type: ignore[attr-defined]
        replies = message.replies
    except Exception:
        return text
    if not replies:
        return text
    first = replies[0]
    # The content, not ``body``: its signature cut would drop "Thanks, please remove me".
    # Disclaimers go (their legalese may say "unsubscribe"); our own "-- " cut follows.
    body = first.content or ""
    for disclaimer in first.disclaimers or []:
        body = body.replace(disclaimer, "")
    body = body.strip()
    if len(replies) > 1 or len(body) < len(head.strip()):
        return body
    return body + rest


# --------------------------------------------------------------------------- opt-out
# (language, pattern). Patterns are matched on folded text (lower case, plain apostrophes).
_NEG_PREFIX = r"(?:don't|do not|dont|never|please don't)"
_OPT_OUT: tuple[tuple[str, str], ...] = (
    # English
    ("en", r"\bun-?subscribe\b|\bunsub\b|\bunsubscribing\b"),
    ("en", r"\bremove (?:me|us|my (?:e-?mail|address|name|details))\b"),
    (
        "en",
        r"\b(?:take|get|strike|delete|drop|cross) (?:me|us|my (?:e-?mail|address|name)) (?:off|from|out)\b",
    ),
    ("en", r"\bstop (?:sending|emailing|e-mailing|mailing|contacting|spamming|writing|messaging)\b"),
    ("en", r"\bopt(?:ing)?[ -]?(?:me )?out\b"),
    ("en", r"\b" + _NEG_PREFIX + r" (?:send|e-?mail|mail|contact|write (?:to )?|message|spam) (?:me|us)\b"),
    ("en", r"\bno (?:more|further) (?:e-?mails?|mails?|messages?|newsletters?|marketing|offers|spam)\b"),
    (
        "en",
        r"\b(?:i|we) (?:don't|do not|no longer) (?:want|wish|like) (?:to (?:receive|get)|any more|"
        r"anymore|these|your|any)\b",
    ),
    (
        "en",
        r"\b(?:i|we) (?:want|wish|would like|'d like) to (?:be removed|unsubscribe|opt out|stop receiving)\b",
    ),
    ("en", r"\bstop receiving\b|\bcancel (?:my|the|this) (?:subscription|newsletter)\b"),
    ("en", r"^\s*(?:stop|remove|unsubscribe|remove me|stop it)\s*[.!]*\s*$"),
    # French
    ("fr", r"d[ée]sabonn|d[ée]sinscri|d[ée]-?inscri|d[ée]sabo\b"),
    (
        "fr",
        r"\b(?:retirez|supprimez|enlevez|rayez|effacez)[- ](?:moi|mon adresse|mon e-?mail|mon courriel)\b",
    ),
    ("fr", r"\bne (?:plus|pas) (?:me )?(?:recevoir|contacter|envoyer)\b"),
    ("fr", r"\bje ne (?:veux|souhaite|d[ée]sire) plus\b"),
    ("fr", r"\b(?:arr[êe]tez|cessez) (?:de m'|de me |d'|de )(?:envoyer|[ée]crire|contacter|spammer)"),
    ("fr", r"\bne m'envoyez plus\b|\bne plus [êe]tre contact[ée]\b"),
    # German
    ("de", r"\babmelden\b|\babmeldung\b|\babbestellen\b|\babbestellung\b|\bausstragen\b|\baustragen\b"),
    ("de", r"\b(?:melden|tragen) sie mich(?: bitte)?(?: sofort)?(?: von [\w ]{1,40})? (?:ab|aus)\b"),
    ("de", r"\b(?:entfernen|l[öo]schen|streichen) sie (?:mich|meine (?:e-?mail-?)?adresse)\b"),
    (
        "de",
        r"\bkeine (?:weiteren (?:e-?mails?|mails|nachrichten|newsletter|werbung|post)|"
        r"(?:werbe-?)?(?:e-?mails?|mails|nachrichten|newsletter|werbung|post) mehr)\b",
    ),
    ("de", r"\bnicht mehr (?:kontaktieren|anschreiben|zusenden|erhalten|bekommen|schicken|senden|mailen)\b"),
    ("de", r"\b(?:m[öo]chte|will|wünsche) (?:ich )?(?:keine|nichts) (?:mehr|weitere)\b"),
    ("de", r"\bh[öo]ren sie auf\b"),
    # Spanish
    (
        "es",
        r"\b(?:dar(?:me|nos)?|d[ée]nme|den|des|doy) de baja\b|^\s*baja\s*[.!]*\s*$",
    ),
    (
        "es",
        r"\bdesuscrib|\bdes-?suscrib|\bcancelar (?:mi |la )?suscripci[óo]n\b|"
        r"\banular (?:mi )?suscripci[óo]n\b",
    ),
    (
        "es",
        r"\b(?:eliminar(?:me)?|quitar(?:me)?|borrar(?:me)?|s[áa]quenme|el[íi]minenme|b[óo]rrenme|"
        r"qu[íi]tenme) (?:de|del)\b",
    ),
    ("es", r"\bno (?:quiero|deseo) (?:recibir|seguir recibiendo|m[áa]s)\b"),
    ("es", r"\bno me (?:env[íi]en|manden|escriban|contacten) m[áa]s\b|\bdejen de (?:enviar|mandar|escribir)"),
    # Portuguese
    ("pt", r"\bdescadastr|\bcancelar (?:a |minha )?(?:inscri[çc][ãa]o|subscri[çc][ãa]o|assinatura)\b"),
    (
        "pt",
        r"\b(?:remov(?:a|am|er)|retir(?:e|em|ar)|exclu(?:a|am|ir)|tir(?:e|em|ar))[- ]?(?:-me|me)? "
        r"(?:da|de|do)\b",
    ),
    ("pt", r"\bn[ãa]o (?:quero|desejo) (?:mais )?(?:receber|ser contactad)"),
    (
        "pt",
        r"\bparem de (?:enviar|mandar|me enviar)\b|\bn[ãa]o me (?:enviem|mandem) mais\b|"
        r"\bdeixar de receber\b",
    ),
    # Italian
    ("it", r"\bdisiscriv|\bcancellami\b|\bcancellatemi\b|\bdisiscrizione\b"),
    ("it", r"\bcancell(?:are|a|ate) (?:la mia |l')?iscrizione\b|\brimuov(?:ermi|etemi|imi|ere il mio)\b"),
    (
        "it",
        r"\bnon (?:voglio|desidero) (?:pi[ùu] )?ricevere\b|\bnon (?:inviatemi|mandatemi|scrivetemi) pi[ùu]\b",
    ),
    ("it", r"\bsmettete(?:la)? di (?:inviar|mandar|scriver)"),
    # Dutch
    (
        "nl",
        r"\bafmelden\b|\bafmelding\b|\buitschrijven\b|\buitschrijving\b|\bmeld (?:mij|me) af\b|"
        r"\bschrijf (?:mij|me) uit\b",
    ),
    ("nl", r"\bverwijder (?:mij|me|mijn (?:e-?mail(?:adres)?|adres|gegevens))\b"),
    ("nl", r"\bgeen (?:e-?mails?|mails|berichten|nieuwsbrie(?:f|ven)|reclame) meer\b"),
    (
        "nl",
        r"\bniet meer (?:ontvangen|mailen|benaderen|sturen|contacteren)\b|"
        r"\bstop met (?:sturen|mailen|e-?mailen)\b",
    ),
)
_OPT_OUT_RE: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (lang, re.compile(p, re.IGNORECASE | re.MULTILINE)) for lang, p in _OPT_OUT
)

# A negation shortly before an opt-out word, in the same clause, cancels it.
_NEGATION = re.compile(
    r"(?:\b(?:don't|do not|dont|doesn't|didn't|did not|never|not|no need to|no reason to|"
    r"without|wasn't|won't|shouldn't|haven't|have not|n't)\b|"
    r"\bne\b|\bn'|\bpas\b|\bnicht\b|\bkein\b|\bnie\b|\bno\b|\bn[ãa]o\b|\bnon\b|\bniet\b|\bgeen\b|\bnooit\b)",
    re.IGNORECASE,
)
# The same negation *after* the verb in languages that put it there.
_NEGATION_AFTER = re.compile(r"^\W{0,3}(?:\w+\W+){0,2}?(?:pas|nicht|niet)\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r"[.!?;:,\n]+|\bbut\b|\baber\b|\bpero\b|\bmaar\b")
#: Patterns that carry their own negation: never cancelled by it.
_SELF_NEGATED = re.compile(
    r"don't|do not|dont|never|no (?:more|further)|ne |ne plus|ne pas|je ne|keine|nicht mehr|"
    r"no (?:quiero|deseo|me)|"
    r"n[ãa]o |non |geen |niet meer|ne m'",
    re.IGNORECASE,
)


def find_opt_out(text: str) -> OptOutMatch | None:
    """The first opt-out request in ``text`` that is not negated, or None."""
    folded = _fold(text)[:MAX_REPLY_CHARS]
    for clause in _CLAUSE_SPLIT.split(folded):
        clause = clause.strip()
        if not clause or _URL.fullmatch(clause):
            continue
        clause = _URL.sub(" ", clause)
        for language, pattern in _OPT_OUT_RE:
            for match in pattern.finditer(clause):
                phrase = match.group(0).strip()
                if _SELF_NEGATED.search(phrase):
                    return OptOutMatch(language, phrase)
                before = clause[max(0, match.start() - 60) : match.start()]
                words_before = " ".join(before.split()[-6:])
                if _NEGATION.search(words_before):
                    continue
                after = clause[match.end() : match.end() + 30]
                if language in ("fr", "de", "nl") and _NEGATION_AFTER.search(after):
                    continue
                if _is_question_about(clause, match.start()):
                    continue
                return OptOutMatch(language, phrase)
    return None


_QUESTION_ABOUT = re.compile(
    r"\b(?:why (?:was|am|were|have|did)|was i|have i been|did (?:you|i|someone)|who)\b[^.?!]{0,60}$",
    re.IGNORECASE,
)


def _is_question_about(clause: str, start: int) -> bool:
    """ "Why was I unsubscribed", "did you remove me" ask about it; they don't request it."""
    return bool(_QUESTION_ABOUT.search(clause[max(0, start - 80) : start]))
