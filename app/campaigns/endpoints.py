"""Campaign routes: compose, preview, test, send, pause, resume, cancel, status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from app.auth.actor import Actor
from app.campaigns import service
from app.campaigns.schemas import CampaignIn, CampaignOut, CampaignPatch, PreviewOut, TestSendIn, TestSendOut
from app.deps import ALL_STAFF, Require, SessionDep
from app.models import Campaign, Role

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"])

CampaignId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Reader = Annotated[Actor, Depends(Require(*ALL_STAFF))]
Marketer = Annotated[Actor, Depends(Require(Role.MARKETER))]


@router.post("", response_model=CampaignOut, status_code=201)
def create(data: CampaignIn, session: SessionDep, actor: Marketer) -> CampaignOut:
    """Create a draft. Templates are checked now: errors name the field and the line."""
    return service.out(session, service.create(session, data, actor))


@router.get("", response_model=dict[str, list[CampaignOut]])
def list_campaigns(
    session: SessionDep,
    actor: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, list[CampaignOut]]:
    from sqlmodel import col, select

    rows = session.exec(select(Campaign).order_by(col(Campaign.id).desc()).limit(limit)).all()
    return {"items": [service.out(session, c) for c in rows]}


@router.get("/{campaign_id}", response_model=CampaignOut)
def read(campaign_id: CampaignId, session: SessionDep, actor: Reader) -> CampaignOut:
    """Status and counts by delivery status."""
    return service.out(session, service.get(session, campaign_id))


@router.patch("/{campaign_id}", response_model=CampaignOut)
def edit(campaign_id: CampaignId, patch: CampaignPatch, session: SessionDep, actor: Marketer) -> CampaignOut:
    campaign = service.update_campaign(session, service.get(session, campaign_id), patch, actor)
    return service.out(session, campaign)


@router.get("/{campaign_id}/preview", response_model=PreviewOut)
def preview(
    campaign_id: CampaignId,
    session: SessionDep,
    actor: Marketer,
    contact_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> PreviewOut:
    """Render with a real contact (or a sample one)."""
    rendered = service.preview(session, service.get(session, campaign_id), contact_id)
    return PreviewOut(subject=rendered.subject, html=rendered.html, text=rendered.text)


@router.post("/{campaign_id}/test", response_model=TestSendOut)
def test(campaign_id: CampaignId, data: TestSendIn, session: SessionDep, actor: Marketer) -> TestSendOut:
    sent, refused = service.test_send(
        session, service.get(session, campaign_id), data.emails, data.contact_id, actor
    )
    return TestSendOut(sent=sent, refused=refused)


@router.post("/{campaign_id}/send", response_model=CampaignOut)
def send(campaign_id: CampaignId, session: SessionDep, actor: Marketer) -> CampaignOut:
    """Send now, or schedule when ``scheduled_at`` is in the future."""
    return service.out(session, service.send(session, service.get(session, campaign_id), actor))


@router.post("/{campaign_id}/pause", response_model=CampaignOut)
def pause(campaign_id: CampaignId, session: SessionDep, actor: Marketer) -> CampaignOut:
    return service.out(session, service.pause(session, service.get(session, campaign_id), actor))


@router.post("/{campaign_id}/resume", response_model=CampaignOut)
def resume(campaign_id: CampaignId, session: SessionDep, actor: Marketer) -> CampaignOut:
    return service.out(session, service.resume(session, service.get(session, campaign_id), actor))


@router.post("/{campaign_id}/cancel", response_model=CampaignOut)
def cancel(campaign_id: CampaignId, session: SessionDep, actor: Marketer) -> CampaignOut:
    return service.out(session, service.cancel(session, service.get(session, campaign_id), actor))
