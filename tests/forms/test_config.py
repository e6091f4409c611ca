"""The forms file: the bundled default works, and every mistake is reported when the file is
loaded, with its place in the file, before anything is served."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import DEFAULT_TOPICS, Settings
from app.forms.config import BUNDLED_FORMS_FILE, FormsConfigError, load_forms, parse_forms

TOPICS = frozenset(DEFAULT_TOPICS)

GOOD = """
[forms.signup]
kind = "registration"
title = "Sign up"
version = "1"
consent_text = "Yes please."
topics = ["special-offers"]
fields = [{ name = "email", required = true }]
"""


def parse(text: str) -> None:
    parse_forms(text, path=Path("forms.toml"), known_topics=TOPICS)


def test_the_bundled_default_has_a_newsletter_and_a_survey() -> None:
    forms = load_forms(Settings(secret_key="x"))
    assert forms.path == BUNDLED_FORMS_FILE
    newsletter, survey = forms.get("newsletter"), forms.get("survey")
    assert newsletter is not None and newsletter.kind == "registration" and newsletter.consent_text
    assert survey is not None and survey.kind == "survey" and survey.allow_partial
    assert {q.name for q in survey.questions} == {"satisfaction", "recommend", "improve"}
    assert newsletter.shown_consent_version == "2026-05"


def test_a_good_file_parses() -> None:
    forms = parse_forms(GOOD, path=Path("forms.toml"), known_topics=TOPICS)
    signup = forms.get("signup")
    assert signup is not None and signup.name == "signup" and signup.honeypot == "website"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t + "\n[forms.broken\n", "not valid TOML"),
        (
            lambda t: t.replace('name = "email"', 'name = "shoe_size"'),
            "forms.signup.fields.0: 'shoe_size' is not",
        ),
        (lambda t: t.replace("required = true", "required = false"), "needs the field email with required"),
        (lambda t: t.replace('"special-offers"', '"cats"'), "forms.signup.topics: unknown topic 'cats'"),
        (lambda t: t.replace('kind = "registration"', 'kind = "poll"'), "forms.signup.kind"),
        (
            lambda t: t.replace('title = "Sign up"', 'title = "Sign up"\ncolour = "red"'),
            "forms.signup.colour",
        ),
        (lambda t: t.replace('version = "1"\n', ""), "forms.signup.version: Field required"),
        (lambda t: t.replace('topics = ["special-offers"]', "topics = []"), "must offer at least one topic"),
        (lambda t: t.replace('consent_text = "Yes please."', ""), "consent_text is required"),
        (
            lambda t: t.replace("topics =", 'channels = ["postal"]\ntopics ='),
            "postal channel needs the fields",
        ),
        (
            lambda t: t.replace("topics =", 'channels = ["phone"]\ntopics ='),
            "phone channel needs the field phone",
        ),
        (lambda t: t.replace("topics =", 'channels = ["fax"]\ntopics ='), "forms.signup.channels.0"),
        (
            lambda t: t.replace("topics =", "allow_partial = true\ntopics ="),
            "only a survey can allow_partial",
        ),
        (
            lambda t: t.replace("topics =", 'age_check = "date_of_birth"\ntopics ='),
            "needs the field date_of_birth",
        ),
        (lambda t: t.replace("[forms.signup]", "[forms.confirm]"), "forms.confirm: a form name is"),
        (lambda t: t.replace("[forms.signup]", "[forms.Sign-Up]"), "forms.Sign-Up: a form name is"),
        (lambda t: t.replace("topics =", 'honeypot = "email"\ntopics ='), "honeypot 'email'"),
        (lambda t: t.replace("[forms.signup]", "[other]"), "other: Extra inputs are not permitted"),
        (lambda _t: "", "no form is defined"),
        (
            lambda t: t + '[[forms.signup.questions]]\nname = "topic"\nlabel = "Topic?"\n',
            "forms.signup.questions.0: question name 'topic' is reserved",
        ),
        (
            lambda t: t + '[[forms.signup.questions]]\nname = "Size"\nlabel = "Size?"\n',
            "question name 'Size' must be lower-case",
        ),
        (
            lambda t: t + '[[forms.signup.questions]]\nname = "phone"\nlabel = "Phone?"\n',
            "is a contact field: list it under fields",
        ),
        (
            lambda t: t + '[[forms.signup.questions]]\nname = "size"\nlabel = "Size?"\ntype = "choice"\n',
            "a choice needs at least two choices",
        ),
        (
            lambda t: (
                t + '[[forms.signup.questions]]\nname = "size"\nlabel = "Size?"\nchoices = ["S", "M"]\n'
            ),
            "only a question of type 'choice' has choices",
        ),
        (
            lambda t: t + '[[forms.signup.questions]]\nname = "size"\nlabel = "Size?"\nmax_length = 5000\n',
            "forms.signup.questions.0.max_length",
        ),
        (
            lambda t: t + '[[forms.signup.questions]]\nname = "email"\nlabel = "Again?"\n',
            "is a contact field",
        ),
    ],
)
def test_mistakes_are_reported_with_their_place(change, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FormsConfigError) as raised:
        parse(change(GOOD))
    assert message in str(raised.value)
    assert "forms.toml" in str(raised.value)


def test_several_mistakes_are_reported_together() -> None:
    text = GOOD.replace("required = true", "required = false").replace(
        "topics = [", 'channels = ["phone"]\ntopics = ['
    )
    with pytest.raises(FormsConfigError) as raised:
        parse(text)
    assert "needs the field email" in str(raised.value) and "phone channel" in str(raised.value)


def test_the_setting_names_the_file_and_a_bad_one_stops_the_start(tmp_path: Path) -> None:
    from app.main import create_app

    def settings(name: str, text: str | None, **extra: object) -> Settings:
        path = tmp_path / name
        if text is not None:
            path.write_text(text, encoding="utf-8")
        return Settings(secret_key="x", var_dir=tmp_path, forms_file=path, **extra)  # type: ignore[arg-type]

    with pytest.raises(FormsConfigError, match="cannot be read"):
        load_forms(settings("missing.toml", None))
    cats = GOOD.replace('"special-offers"', '"cats"')
    with pytest.raises(FormsConfigError, match="unknown topic 'cats'"):
        create_app(settings("cats.toml", cats), start_workers=False)
    forms = load_forms(settings("good.toml", GOOD))
    assert forms.path == (tmp_path / "good.toml").resolve() and set(forms.by_name) == {"signup"}
    # Topics configured with LISTWARDEN_TOPICS may be offered.
    assert load_forms(settings("cats.toml", None, topics=[*DEFAULT_TOPICS, "cats"])).get("signup")


def test_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD, encoding="utf-8")
    monkeypatch.setenv("LISTWARDEN_FORMS_FILE", str(path))
    assert Settings(secret_key="x").forms_file == path
    monkeypatch.setenv("LISTWARDEN_FORMS_FILE", "")
    assert Settings(secret_key="x").forms_file is None
