"""Human replies, written here: opt-outs in seven languages, replies that only quote our
footer, "don't unsubscribe me", forwards, HTML replies, auto-replies. No database."""

from __future__ import annotations

import pytest

from app.inbound.classify import Hints, classify
from app.inbound.replies import find_opt_out, reply_text
from tests.inbound.helpers import DOMAIN, FOOTER, reply

HINTS = Hints(footer_markers=("https://lists.example.test/u/", "listwarden demo ltd"))

OPT_OUTS = {
    "en": [
        "Please unsubscribe me.",
        "Remove me from your mailing list, thanks.",
        "Stop sending me these emails!",
        "Take me off your list please",
        "I don't want to receive these emails anymore",
        "Don't email me again.",
        "No more emails please.",
        "UNSUBSCRIBE",
        "How do I unsubscribe from this?",
        "Not interested, please remove me.",
        "I never signed up for this. Opt me out.",
    ],
    "fr": [
        "Merci de me désabonner de votre liste.",
        "Je ne veux plus recevoir vos e-mails.",
        "Veuillez me désinscrire, s'il vous plaît.",
        "Retirez-moi de votre liste de diffusion.",
        "Arrêtez de m'envoyer ces messages.",
    ],
    "de": [
        "Bitte melden Sie mich von Ihrem Newsletter ab.",
        "Ich möchte mich abmelden.",
        "Bitte tragen Sie mich aus dem Verteiler aus.",
        "Ich möchte keine E-Mails mehr von Ihnen erhalten.",
        "Entfernen Sie mich bitte aus Ihrer Liste.",
    ],
    "es": [
        "Por favor, denme de baja de esta lista.",
        "Quiero darme de baja.",
        "No quiero recibir más correos.",
        "Cancelar mi suscripción, por favor.",
        "Eliminarme de su lista de correo.",
    ],
    "pt": [
        "Por favor, quero me descadastrar.",
        "Não quero mais receber estes e-mails.",
        "Remova-me da lista, por favor.",
        "Quero cancelar minha inscrição.",
        "Parem de enviar mensagens.",
    ],
    "it": [
        "Cancellatemi dalla vostra lista.",
        "Vorrei disiscrivermi dalla newsletter.",
        "Non voglio più ricevere queste email.",
        "Rimuovetemi dalla mailing list.",
        "Smettete di inviarmi email.",
    ],
    "nl": [
        "Graag afmelden voor de nieuwsbrief.",
        "Meld mij af alstublieft.",
        "Ik wil geen e-mails meer ontvangen.",
        "Verwijder mij uit uw bestand.",
        "Schrijf mij uit van deze lijst.",
    ],
}

KEEPS = [
    "Please don't unsubscribe me, I love these offers!",
    "Do not remove me from the list, I just changed jobs.",
    "I do not want to unsubscribe, but could you send fewer emails?",
    "Why was I unsubscribed? I want to keep getting the newsletter.",
    "Ne me désabonnez pas, s'il vous plaît.",
    "Je ne veux pas me désabonner.",
    "Bitte melden Sie mich nicht ab.",
    "Ich möchte mich nicht abmelden, nur die Adresse ändern.",
    "No me den de baja, por favor.",
    "Não me descadastre, por favor.",
    "Non cancellatemi, grazie.",
    "Meld mij niet af, ik wil de nieuwsbrief houden.",
    "Ik wil me niet afmelden.",
    "Can you tell me more about the 20% offer? Does it apply to shoes?",
    "Thanks! What are your opening hours on Saturday?",
    "",
]


@pytest.mark.parametrize(
    ("language", "text"), [(lang, text) for lang, texts in OPT_OUTS.items() for text in texts]
)
def test_opt_out_requests_in_each_language(language: str, text: str) -> None:
    result = classify(reply(text), hints=HINTS)
    assert result.kind == "optout", (text, result.text)
    assert result.language == language, (text, result.opt_out_phrase)
    assert result.opt_out_phrase


@pytest.mark.parametrize("text", KEEPS)
def test_replies_that_are_not_opt_outs(text: str) -> None:
    result = classify(reply(text), hints=HINTS)
    assert result.kind == "reply", (text, result.opt_out_phrase, result.text)


@pytest.mark.parametrize(
    "header",
    [
        "On Tue, 3 Mar 2026 at 10:00, Listwarden <news@listwarden.example> wrote:",
        "Le mar. 3 mars 2026 à 10:00, Listwarden <news@listwarden.example> a écrit :",
        "Am 03.03.2026 um 10:00 schrieb Listwarden <news@listwarden.example>:",
        "El mar, 3 mar 2026 a las 10:00, Listwarden (<news@listwarden.example>) escribió:",
        "Em ter., 3 de mar. de 2026 às 10:00, Listwarden <news@listwarden.example> escreveu:",
        "Il giorno mar 3 mar 2026 alle ore 10:00 Listwarden <news@listwarden.example> ha scritto:",
        "Op di 3 mrt 2026 om 10:00 schreef Listwarden <news@listwarden.example>:",
        "-----Original Message-----",
    ],
)
def test_quoted_footer_never_opts_out(header: str) -> None:
    """Every reply quotes our footer and its "Unsubscribe"; a thank-you is still a reply."""
    result = classify(reply("Thank you, see you at the shop!", quote_header=header), hints=HINTS)
    assert result.kind == "reply", result.opt_out_phrase
    assert "Unsubscribe" not in result.text
    assert result.text.startswith("Thank you")


def test_footer_quoted_without_quote_marks_is_cut() -> None:
    """Some clients paste the original under the reply without ">" or a header line."""
    raw = reply("Sounds great, I'll come on Friday.\n\n" + FOOTER, quote=False)
    result = classify(raw, hints=HINTS)
    assert result.kind == "reply"
    assert result.text == "Sounds great, I'll come on Friday."


def test_outlook_style_reply_block() -> None:
    body = (
        "Please remove me.\n\n"
        "________________________________\n"
        "From: Listwarden <news@listwarden.example>\n"
        "Sent: Tuesday, March 3, 2026 10:00 AM\n"
        "To: anna@example.org\n"
        "Subject: Spring offers\n\n" + FOOTER
    )
    assert classify(reply(body, quote=False), hints=HINTS).kind == "optout"
    thanks = body.replace("Please remove me.", "Thanks for the info.")
    assert classify(reply(thanks, quote=False), hints=HINTS).kind == "reply"


def test_forwarded_message_with_a_request_above_it() -> None:
    forwarded = (
        "Please take me off this list.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Listwarden <news@listwarden.example>\n"
        "Date: Tue, 3 Mar 2026 at 10:00\nSubject: Spring offers\nTo: <anna@example.org>\n\n" + FOOTER
    )
    result = classify(reply(forwarded, subject="Fwd: Spring offers", quote=False), hints=HINTS)
    assert result.kind == "optout"


def test_forwarded_message_without_a_request_is_a_reply() -> None:
    forwarded = (
        "FYI - maybe interesting for the team.\n\n"
        "Begin forwarded message:\n\n"
        "From: Listwarden <news@listwarden.example>\nSubject: Spring offers\n\n" + FOOTER
    )
    result = classify(reply(forwarded, subject="Fwd: Spring offers", quote=False), hints=HINTS)
    assert result.kind == "reply"
    assert result.text == "FYI - maybe interesting for the team."


def test_forward_as_attachment_reads_only_the_persons_words() -> None:
    from email.message import EmailMessage

    inner = EmailMessage()
    inner["From"] = "Listwarden <news@listwarden.example>"
    inner["Subject"] = "Spring offers"
    inner.set_content("Spring offers!\n\n" + FOOTER)
    outer = EmailMessage()
    outer["From"] = "anna@example.org"
    outer["To"] = f"reply@{DOMAIN}"
    outer["Subject"] = "Fwd: Spring offers"
    outer.set_content("Look at this one.")
    outer.add_attachment(inner)
    result = classify(outer.as_bytes(), hints=HINTS)
    assert result.kind == "reply"
    assert result.text == "Look at this one."


def test_html_only_reply_with_gmail_quote() -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "anna@example.org"
    msg["To"] = f"reply@{DOMAIN}"
    msg["Subject"] = "Re: Spring offers"
    msg.set_content(
        "<div dir=ltr>Bitte melden Sie mich ab.</div><br>"
        '<div class="gmail_quote"><blockquote>Unsubscribe: <a href="https://x/u/1">here</a></blockquote></div>',
        subtype="html",
    )
    assert classify(msg.as_bytes(), hints=HINTS).kind == "optout"
    msg.replace_header("Content-Type", "text/html; charset=utf-8")
    raw = msg.as_bytes().replace(b"Bitte melden Sie mich ab.", b"Danke, bis bald!")
    assert classify(raw, hints=HINTS).kind == "reply"


def test_subject_only_request_on_a_new_message() -> None:
    raw = reply("", subject="Unsubscribe", quote=False)
    assert classify(raw, hints=HINTS).kind == "optout"
    # …but our own subject in a "Re:" never counts
    raw = reply("Great, thanks", subject="Re: Unsubscribe from paper statements", quote=False)
    assert classify(raw, hints=HINTS).kind == "reply"


def test_mail_to_the_unsubscribe_address_always_opts_out() -> None:
    token = "a" * 56
    raw = reply("", to=f"unsubscribe+{token}@{DOMAIN}", subject="unsubscribe", quote=False)
    result = classify(raw)
    assert result.kind == "optout" and result.reason == "list_unsubscribe"
    raw = reply("Please keep me!", quote=False)
    result = classify(raw, envelope_to=f"unsubscribe+{token}@{DOMAIN}")
    assert result.kind == "optout"


def test_signature_and_mobile_footer_are_not_read() -> None:
    text = "Thanks, see you soon.\n\n-- \nAnna\nTo unsubscribe from my newsletter reply STOP\n"
    assert classify(reply(text, quote=False), hints=HINTS).kind == "reply"
    text = "Unsubscribe me\n\nSent from my iPhone"
    assert classify(reply(text), hints=HINTS).kind == "optout"


def test_thanks_line_before_the_request_is_kept() -> None:
    assert classify(reply("Hi,\nThanks, but please remove me from the list."), hints=HINTS).kind == "optout"


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        ("Out of Office: Spring offers", {}),
        ("Automatic reply: Spring offers", {}),
        ("Abwesenheitsnotiz: Spring offers", {}),
        ("Réponse automatique : Spring offers", {}),
        ("Respuesta automática: Spring offers", {}),
        ("Resposta automática: Spring offers", {}),
        ("Risposta automatica: Spring offers", {}),
        ("Automatisch antwoord: Spring offers", {}),
        ("Re: Spring offers", {"Auto-Submitted": "auto-replied"}),
        ("Re: Spring offers", {"X-Autoreply": "yes"}),
        ("Re: Spring offers", {"X-Autorespond": "yes"}),
        ("Re: Spring offers", {"Precedence": "auto_reply"}),
        ("Re: Spring offers", {"Precedence": "bulk"}),
        ("Re: Spring offers", {"X-Auto-Response-Suppress": "All"}),
    ],
)
def test_auto_replies_never_opt_out(subject: str, headers: dict[str, str]) -> None:
    """An out-of-office that happens to say "unsubscribe" is still only an auto-reply."""
    raw = reply(
        "I am away until Monday. To unsubscribe from my list write to x.",
        subject=subject,
        extra_headers=headers,
    )
    result = classify(raw, hints=HINTS)
    assert result.kind == "autoreply", (subject, headers, result.kind)


def test_outlook_suppress_header_alone_does_not_hide_an_opt_out() -> None:
    raw = reply("Please remove me from this list.", extra_headers={"X-Auto-Response-Suppress": "All"})
    assert classify(raw, hints=HINTS).kind == "optout"
    raw = reply("Thanks for the info.", extra_headers={"X-Auto-Response-Suppress": "All"})
    assert classify(raw, hints=HINTS).kind == "autoreply"


def test_auto_submitted_no_is_a_person() -> None:
    raw = reply("Please unsubscribe me", extra_headers={"Auto-Submitted": "no"})
    assert classify(raw, hints=HINTS).kind == "optout"


def test_reply_text_helper_cuts_quotes_and_footer() -> None:
    body = "Hello!\n\n> quoted line\nOn Mon, X wrote:\n> more\n"
    assert reply_text(body) == "Hello!"
    assert find_opt_out("please don't stop sending me the newsletter") is None
    assert find_opt_out("stop sending me the newsletter") is not None
