"""The audit trail of staff actions."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.auth.actor import Actor
from app.models import AuditLog


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: object = None,
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    entry = AuditLog(
        actor_token_id=actor.token_id,
        actor_user_id=actor.user_id,
        actor_role=actor.role,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        ip=actor.ip,
        detail=detail or {},
    )
    session.add(entry)
    return entry
