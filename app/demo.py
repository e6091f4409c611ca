"""Demo data: a few hundred leads from every source, with real opt-outs and suppressions,
so that a new user sees Listwarden's rules at work the moment it starts."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlmodel import Session, col, select

from app.auth.actor import Actor
from app.auth.service import create_token, hash_password
from app.contacts import service as contacts
from app.contacts.schemas import ContactIn, PreferenceItem
from app.db import session_scope
from app.models import ApiToken, Contact, Import, Role, User, utcnow
from app.models.base import Channel, PreferenceStatus, Source
from app.preferences.service import PreferenceChange, apply_changes
from app.suppression import service as suppressions
from app.suppression.policy import Reason

FIRST = [
    "Ada",
    "Ben",
    "Chloé",
    "Dmitri",
    "Eva",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Lars",
    "Maya",
    "Nils",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoë",
]
LAST = [
    "Adler",
    "Brown",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "García",
    "Hansen",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "López",
    "Müller",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Weber",
]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example", "post.example"]
COMPANIES = ["Acme GmbH", "Globex", "Initech", "Umbrella Ltd", "Stark Industries", None, None]
BUSINESS = ["retail", "manufacturing", "healthcare", "education", "hospitality", None]
SOURCES = [Source.REGISTRATION, Source.SURVEY, Source.SURVEY_PARTIAL, Source.IMPORT, Source.EVENT, Source.API]
TOPICS = ["member-updates", "special-offers", "partner-offers", "surveys"]
CONSENT_TEXT = "Yes, send me news and offers by email. I can unsubscribe at any time."

DEMO_ADMIN_EMAIL = "admin@listwarden.demo"


@dataclass
class DemoResult:
    created: int
    admin_email: str
    admin_password: str
    admin_token: str


def seed(session: Session, *, contacts_count: int = 300, rng_seed: int = 7) -> DemoResult:
    """Create demo contacts (once) and a fresh admin password and token (every time)."""
    rng = random.Random(rng_seed)
    system = Actor.system()
    created = 0
    already = session.exec(select(Contact).where(Contact.source_detail["demo"].as_boolean() == True)).first()  # noqa: E712
    if already is None:
        people: list[Contact] = []
        for index in range(contacts_count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            source = rng.choice(SOURCES)
            topics = rng.sample(TOPICS, k=rng.randint(1, 3))
            prefs = [PreferenceItem(channel=Channel.EMAIL, topic=None, status=PreferenceStatus.OPTED_IN)]
            prefs += [
                PreferenceItem(channel=Channel.EMAIL, topic=t, status=PreferenceStatus.OPTED_IN)
                for t in topics
            ]
            if rng.random() < 0.3:
                prefs.append(
                    PreferenceItem(channel=Channel.POSTAL, topic=None, status=PreferenceStatus.OPTED_IN)
                )
            born = date(rng.randint(1950, 2000), rng.randint(1, 12), rng.randint(1, 28))
            data = ContactIn(
                email=f"{first}.{last}.{index}@{rng.choice(DOMAINS)}".lower(),
                name=f"{first} {last}",
                phone=f"+49 30 {rng.randint(1000000, 9999999)}" if rng.random() < 0.5 else None,
                address_line1=f"{rng.randint(1, 200)} {rng.choice(LAST)}straße",
                zip=f"{rng.randint(10115, 14199)}",
                city="Berlin",
                country="DE",
                company=rng.choice(COMPANIES),
                primary_business=rng.choice(BUSINESS),
                date_of_birth=born,
                age_confirmed=True,
                source=source,
                source_detail={"demo": True, "form": "newsletter-signup", "form_version": "2026-03"},
                attributes={"plan": rng.choice(["free", "plus", "pro"])},
                preferences=prefs,
                consent_text=CONSENT_TEXT,
                consent_version="2026-03",
            )
            result = contacts.upsert(session, data, system)
            people.append(result.contact)
            created += 1
        # What recipients did afterwards: unsubscribed, left a topic, bounced, complained.
        for contact in people[:25]:
            apply_changes(
                session,
                contact,
                [PreferenceChange(Channel.EMAIL, None, PreferenceStatus.OPTED_OUT)],
                method=rng.choice(["one_click", "link", "preference_centre", "reply"]),
                actor=Actor.recipient(ip="198.51.100.7", user_agent="Mozilla/5.0 (demo)"),
            )
        for contact in people[25:45]:
            apply_changes(
                session,
                contact,
                [PreferenceChange(Channel.EMAIL, "partner-offers", PreferenceStatus.OPTED_OUT)],
                method="preference_centre",
                actor=Actor.recipient(ip="203.0.113.9", user_agent="Mozilla/5.0 (demo)"),
            )
        staff = Actor(kind="staff", role=Role.SALES)
        for contact, reason in zip(
            people[45:60], [Reason.HARD_BOUNCE] * 10 + [Reason.COMPLAINT] * 5, strict=False
        ):
            assert contact.email
            suppressions.add_for_address(
                session,
                address=contact.email,
                channel="email",
                topic=None,
                reason=reason,
                method=None,
                note="demo",
                actor=Actor.system(),
            )
        for contact in people[60:64]:
            assert contact.email
            suppressions.add_for_address(
                session,
                address=contact.email,
                channel="phone",
                topic=None,
                reason=Reason.MANUAL_REQUEST,
                method="phone",
                note="Asked on the phone not to be called again.",
                actor=staff,
            )
        suppressions.add_for_address(
            session,
            address="@competitor.example",
            channel="email",
            topic=None,
            reason=Reason.DOMAIN_BLOCK,
            method=None,
            note="competitor domain",
            actor=staff,
        )
        for contact in people[64:70]:
            contacts.erase(session, contact, staff, note="erasure request (demo)")

    password = secrets.token_urlsafe(12)
    admin = session.exec(select(User).where(User.email == DEMO_ADMIN_EMAIL)).first()
    if admin is None:
        admin = User(email=DEMO_ADMIN_EMAIL, name="Demo admin", role=Role.ADMIN)
    admin.password_hash = hash_password(password)
    admin.active = True
    session.add(admin)
    session.flush()
    for old in session.exec(
        select(ApiToken).where(ApiToken.name == "demo", col(ApiToken.revoked_at).is_(None))
    ):
        old.revoked_at = utcnow()  # one demo token at a time: the one printed last
        session.add(old)
    _row, token = create_token(session, Role.ADMIN, name="demo", user_id=admin.id)
    return DemoResult(
        created=created, admin_email=DEMO_ADMIN_EMAIL, admin_password=password, admin_token=token
    )


DEMO_LEADS = """Email Address,First Name,Last Name,Company,email_consent,email_consent_date,topics
nora.event@example.com,Nora,Berg,Acme GmbH,yes,2026-10-02,special-offers
omar.event@example.org,Omar,Haddad,,yes,2026-10-02,
NORA.EVENT@example.com,,,Acme GmbH (Berlin),yes,2026-10-02,surveys
left.us@example.com,Leonie,Vogt,,yes,2026-10-02,
not-an-address,Broken,Row,,yes,,
=cmd@example.net,Formula,Cell,"=HYPERLINK(""http://x.example"")",,,
"""


def demo_import(var_dir: Path) -> Import:
    """A small event-list import, to show the importer at work: a duplicate merged, a bad
    row rejected with its reason, and someone who had opted out kept opted out although
    the file says "consent: yes"."""
    from app.imports import service as imports

    staff = Actor(kind="staff", role=Role.SALES)
    with session_scope() as session:
        suppressions.add_for_address(
            session,
            address="left.us@example.com",
            channel="email",
            topic=None,
            reason=Reason.MANUAL_REQUEST,
            method="phone",
            note="asked by phone to hear no more (demo)",
            actor=staff,
        )
    var_dir.mkdir(parents=True, exist_ok=True)  # on PostgreSQL nothing else may have made it
    path = var_dir / "demo-event-leads.csv"
    path.write_text(DEMO_LEADS, encoding="utf-8")
    with session_scope() as session, path.open("rb") as handle:
        job = imports.create(
            session,
            handle,
            path.name,
            imports.ImportOptions(
                source="event", consent_text="Yes, send me news and offers (event sign-up sheet)"
            ),
            staff,
            enqueue=False,
        )
        import_id = job.id
    assert import_id is not None
    imports.run(import_id, processes=0)
    with session_scope() as session:
        return imports.get(session, import_id)


DEMO_CAMPAIGN = {
    "name": "Member updates: welcome (demo)",
    "topic": "member-updates",
    "purpose": "marketing",
    "subject": "Hello {{ first_name or 'there' }}: what is new for members",
    "html": (
        "<h1>Hello {{ first_name or 'there' }}</h1>"
        "<p>This is the demo campaign. It went to every demo contact subscribed to member "
        "updates who had not opted out, bounced, complained or been erased; the footer below "
        "carries the one-click unsubscribe link and the preference centre.</p>"
    ),
}


def demo_campaign(session: Session) -> int:
    """A draft campaign to the demo contacts subscribed to member updates; its id."""
    from app.campaigns import service as campaigns
    from app.campaigns.schemas import CampaignIn

    campaign = campaigns.create(
        session, CampaignIn.model_validate(DEMO_CAMPAIGN), Actor(kind="staff", role=Role.MARKETER)
    )
    assert campaign.id is not None
    return campaign.id
