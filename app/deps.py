"""FastAPI dependencies shared by every router: the unit of work and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from app.auth.actor import Actor
from app.auth.service import authenticate_token
from app.db import session_scope
from app.models import Role


def get_session() -> Iterator[Session]:
    """One session per request. ``scope="function"`` commits *before* the answer is sent,
    and runs the after-commit callbacks (e.g. an opt-out waiting out in-flight sends)
    before it too."""
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="API token from `listwarden token create`")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


class Require:
    """Dependency: a valid bearer token whose role is one of ``roles`` (admin always passes).

    The route-table test reads ``roles`` from here, so every ``/api/v1`` route must use it."""

    def __init__(self, *roles: Role) -> None:
        self.roles: frozenset[Role] = frozenset(roles) | {Role.ADMIN}

    def __call__(
        self,
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Actor:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        token = authenticate_token(session, credentials.credentials)
        if token is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid or revoked token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if Role(token.role) not in self.roles:
            allowed = ", ".join(sorted(r.value for r in self.roles))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {token.role!r} may not do this (needs: {allowed})"
            )
        return Actor(
            kind="staff",
            role=token.role,
            token_id=token.id,
            user_id=token.user_id,
            ip=client_ip(request),
            user_agent=(request.headers.get("user-agent") or "")[:500] or None,
        )


ALL_STAFF = (Role.ADMIN, Role.MARKETER, Role.SALES, Role.COMPLIANCE)
