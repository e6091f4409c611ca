"""Settings of inbound mail, read from ``LISTWARDEN_INBOUND_*`` environment variables.

They live here rather than in ``app.config`` so that the inbound module owns them:

- ``LISTWARDEN_INBOUND_MAX_BYTES`` (default 25 MB): a larger message is stored *truncated*
  to this many bytes (the head of a message holds its headers and, for a bounce, the
  delivery report), marked ``truncated`` with its real size, and classified from what was kept.
- ``LISTWARDEN_INBOUND_HARD_LIMIT_BYTES`` (default 4 × max): the SMTP listener refuses a
  DATA larger than this (552), so the sending server returns it to its sender; the HTTP
  intake drains and counts the rest without keeping it.
- ``LISTWARDEN_INBOUND_SOFT_BOUNCE_THRESHOLD`` / ``…_SOFT_BOUNCE_WINDOW_DAYS`` (3 in 30):
  that many soft bounces for a contact within the window suppress the address.
- ``LISTWARDEN_INBOUND_DOMAINS``: domains the SMTP listener accepts recipients for
  (comma separated, ``*`` for any); default: the bounce and reply domains.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config import get_settings


class InboundSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LISTWARDEN_INBOUND_", extra="ignore")

    max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    hard_limit_bytes: int = Field(default=0, ge=0)
    soft_bounce_threshold: int = Field(default=3, ge=1)
    soft_bounce_window_days: float = Field(default=30.0, gt=0)
    domains: list[str] = Field(default_factory=list)
    #: Classification attempts (broker deliveries) before a message is left for an admin.
    max_attempts: int = Field(default=20, ge=1)

    @field_validator("domains", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @property
    def resolved_hard_limit(self) -> int:
        return self.hard_limit_bytes or 4 * self.max_bytes

    def accepted_domains(self) -> list[str]:
        if self.domains:
            return self.domains
        settings = get_settings()
        return sorted({settings.resolved_bounce_domain, settings.resolved_reply_domain})


_override: InboundSettings | None = None


@lru_cache(maxsize=1)
def _from_environment() -> InboundSettings:
    return InboundSettings()


def get_inbound_settings() -> InboundSettings:
    return _override if _override is not None else _from_environment()


def use_inbound_settings(settings: InboundSettings | None) -> None:
    """Install settings (tests, CLI options); None returns to the environment."""
    global _override
    _override = settings
    _from_environment.cache_clear()
