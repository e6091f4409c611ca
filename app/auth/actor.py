"""Who is acting: a staff token or user, a recipient on a public page, or the system."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    kind: str  # staff | recipient | system
    role: str | None = None
    token_id: int | None = None
    user_id: int | None = None
    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls(kind="system")

    @classmethod
    def recipient(cls, ip: str | None = None, user_agent: str | None = None) -> Actor:
        return cls(kind="recipient", ip=ip, user_agent=user_agent)
