from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from app.auth.actor import Actor
from app.deps import ALL_STAFF, Require, SessionDep
from app.topics.service import list_topics

router = APIRouter(prefix="/api/v1/topics", tags=["topics"])


class TopicOut(BaseModel):
    slug: str
    name: str
    description: str


class TopicList(BaseModel):
    items: list[TopicOut]


@router.get("", response_model=TopicList)
def topics(session: SessionDep, actor: Annotated[Actor, Depends(Require(*ALL_STAFF))]) -> TopicList:
    return TopicList(
        items=[TopicOut(slug=t.slug, name=t.name, description=t.description) for t in list_topics(session)]
    )
