"""``listwarden demo``: what a new user sees first must be Listwarden doing its main job —
a campaign to the demo members, in the outbox, skipping everyone who may not get it."""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

from sqlmodel import Session, select
from typer.testing import CliRunner

from app.cli import app as cli
from app.config import Settings
from app.db import get_engine
from app.models import Campaign, Contact, Delivery
from app.suppression import gate


def test_demo_seeds_and_sends_its_campaign_to_the_outbox(db: Settings, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo", "--contacts", "60"])
    assert result.exit_code == 0, result.output
    assert "demo contacts created: 60" in result.output
    assert "demo campaign" in result.output and ": sent;" in result.output

    messages = [message_from_bytes(p.read_bytes()) for p in (db.var_dir / "outbox").rglob("*.eml")]
    with Session(get_engine(db)) as session:
        campaign = session.exec(select(Campaign)).one()
        sent = session.exec(select(Delivery).where(Delivery.campaign_id == campaign.id)).all()
        assert sent and all(d.status == "sent" for d in sent)
        assert len(messages) == len(sent)
        contacts = session.exec(select(Contact)).all()
        decisions = gate.check(
            session,
            [c.id for c in contacts if c.id],
            channel="email",
            topic=campaign.topic,
            purpose=campaign.purpose,
        )
        allowed = {contact_id for contact_id, decision in decisions.items() if decision.allowed}
        # Some demo people opted out, bounced, complained or were erased: they got nothing.
        assert 0 < len(allowed) < len(contacts)
        assert {d.contact_id for d in sent} == allowed
    assert all(m["List-Unsubscribe"] and m["List-Unsubscribe-Post"] for m in messages)

    again = CliRunner().invoke(cli, ["demo"])  # a second run sends nothing again
    assert again.exit_code == 0, again.output
    assert "demo contacts were already there" in again.output
    assert len(list((db.var_dir / "outbox").rglob("*.eml"))) == len(messages)
