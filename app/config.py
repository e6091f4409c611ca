"""Settings: environment variables with the prefix ``LISTWARDEN_`` (pydantic-settings).

With nothing set, Listwarden runs the *embedded default*: a SQLite file under ``var/``,
Dramatiq in-process, and mail written to a local outbox. A secret key is generated once
and kept under ``var/secret_key`` so that signed links and address hashes survive restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PACKAGE_ROOT / "migrations"
TEMPLATES_DIR = PACKAGE_ROOT / "templates"


class ConsentMode(StrEnum):
    """``opt-in``: an unset preference means *no* (GDPR). ``opt-out``: it means *yes* (CAN-SPAM)."""

    OPT_IN = "opt-in"
    OPT_OUT = "opt-out"


DEFAULT_TOPICS = ("member-updates", "special-offers", "partner-offers", "surveys")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LISTWARDEN_", extra="ignore")

    var_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = "embedded"
    #: Prefix of the broker's keys (Redis), so several installations can share a server.
    broker_namespace: str = "listwarden"
    smtp_url: str = ""
    secret_key: str = ""
    #: Retired secret keys, still accepted when verifying signed tokens (comma separated).
    old_secret_keys: list[str] = Field(default_factory=list)
    #: Key of the address hash that suppressions are stored under. Derived from the first
    #: secret key when unset; set it explicitly before rotating ``secret_key``.
    hash_key: str = ""
    public_url: str = "http://127.0.0.1:8000"
    postal_address: str = "Listwarden Demo Ltd, 1 Example Street, 10115 Berlin, Germany"
    sender_name: str = "Listwarden"
    consent_mode: ConsentMode = ConsentMode.OPT_IN
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS))
    minimum_age: int = 18
    check_deliverability: bool = False

    # ------------------------------------------------------------------ sending
    #: Default sender of campaigns (a campaign may name its own).
    from_email: str = "news@listwarden.example"
    #: Domain of the VERP Return-Path (bounces) and of the reply / unsubscribe mailboxes.
    bounce_domain: str = ""
    reply_domain: str = ""
    list_id_domain: str = ""
    dkim_key_path: str = ""
    dkim_selector: str = "listwarden"
    dkim_domain: str = ""
    #: Deliveries claimed, rendered and sent together (one claim statement each).
    send_batch_size: int = 200
    #: Ledger rows one slice message covers.
    slice_size: int = 2000
    #: A delivery left ``claimed`` this long (a crashed worker) becomes ``unknown``.
    claim_lease_seconds: int = 600
    max_attempts: int = 8
    #: First retry after this many seconds; doubled each attempt, at most an hour.
    retry_base_seconds: float = 30.0
    #: Messages per second per campaign (0: no limit) and per recipient domain.
    campaign_rate_limit: float = 0
    domain_rate_limit: float = 0
    #: With the embedded broker, campaign slices are sent by this many child processes
    #: of the server (``workers.sending``), so that sending does not hold the server's GIL;
    #: 0 sends on the server's worker threads.
    embedded_send_processes: int = 1
    #: Niceness added to those processes: a recipient's request (a one-click unsubscribe,
    #: the preference centre) comes before the throughput of a background campaign when
    #: they share the machine's cores. 0 keeps the server's priority.
    embedded_send_nice: int = 10
    #: Their micro-batch (in place of ``send_batch_size``; 0 keeps it): a claim holds the
    #: claim lock while it runs, and an opt-out's answer waits for the claims in progress
    #: and for the person's message in flight; smaller batches, shorter waits.
    embedded_send_batch_size: int = 50
    #: How long an opt-out waits for the person's in-flight sends before answering.
    optout_settle_seconds: float = 3.0
    scheduler_interval_seconds: float = 5.0
    auto_migrate: bool = True

    # ------------------------------------------------------------------ imports
    #: Largest accepted upload (bytes).
    import_max_bytes: int = 2 * 1024**3
    #: Rows validated and written together (one transaction each, with the progress).
    import_batch_size: int = 2000
    #: On PostgreSQL, processes that each validate and write a share of an import's rows
    #: (split by a hash of the email). SQLite, and 0 or 1, keep it in the job's process.
    #: Default: one more than the cores, so that the cores stay busy while a process
    #: waits for the database (1M rows on 2 cores: 17,554 rows/s with 3, 15,683 with 2).
    import_processes: int = Field(default_factory=lambda: (os.cpu_count() or 1) + 1)
    #: Rejected rows (personal data) are deleted this many days after their import ended.
    import_rejects_days: int = 30
    #: Country assumed for phone numbers written without +<country code>.
    default_phone_region: str = ""

    @field_validator("old_secret_keys", "topics", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("forms_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    # ------------------------------------------------------------------ derived values
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'listwarden.db').resolve()}"

    @property
    def resolved_smtp_url(self) -> str:
        if self.smtp_url:
            return self.smtp_url
        return f"outbox:{(self.var_dir / 'outbox').resolve()}"

    @property
    def sender_domain(self) -> str:
        return self.from_email.rpartition("@")[2].lower()

    @property
    def resolved_bounce_domain(self) -> str:
        return (self.bounce_domain or self.sender_domain).lower()

    @property
    def resolved_reply_domain(self) -> str:
        return (self.reply_domain or self.sender_domain).lower()

    @property
    def resolved_list_id_domain(self) -> str:
        return (self.list_id_domain or self.sender_domain).lower()

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url in ("", "embedded", "stub")

    def ensure_secret_key(self) -> str:
        """Return the secret key, generating and storing one under ``var/`` if unset."""
        if self.secret_key:
            return self.secret_key
        path = self.var_dir / "secret_key"
        if path.exists():
            self.secret_key = path.read_text().strip()
        else:
            self.var_dir.mkdir(parents=True, exist_ok=True)
            key = secrets.token_urlsafe(48)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(key + "\n")
            self.secret_key = key
        return self.secret_key

    def address_hash_key(self) -> bytes:
        if self.hash_key:
            return self.hash_key.encode()
        secret = self.ensure_secret_key().encode()
        return hmac.new(secret, b"listwarden/address-hash/v1", hashlib.sha256).digest()

    # --- recipients
    #: What an RFC 8058 one-click unsubscribe stops: all marketing email (the CAN-SPAM-safe
    #: reading) or only the topic of the campaign whose message carried the link.
    one_click_scope: Literal["all_marketing", "topic"] = "all_marketing"
    #: "Unsubscribe by email address": requests per hour per client IP, and mails per hour
    #: per address (over the address limit the form answers the same and sends nothing).
    unsubscribe_by_email_per_ip_per_hour: int = Field(default=20, ge=1)
    unsubscribe_by_email_per_address_per_hour: int = Field(default=3, ge=1)
    #: How long a link mailed by that form works, and an opt-in confirmation link.
    unsubscribe_link_hours: int = Field(default=48, ge=1)
    opt_in_confirm_hours: int = Field(default=72, ge=1)
    #: Access and erasure requests are due this many days after they are received.
    data_request_due_days: int = Field(default=30, ge=1)

    # --- forms (``/forms/{name}``, ``app.forms``)
    #: TOML file that configures the public registration and survey forms; unset: the
    #: bundled ``app/forms/default_forms.toml`` (a ``newsletter`` and a ``survey`` form).
    forms_file: Path | None = None
    #: Submissions per hour per client IP, and confirmation mails per hour per address
    #: (over the address limit the lead is stored and the answer is the same, no mail).
    forms_per_ip_per_hour: int = Field(default=30, ge=1)
    forms_confirmations_per_address_per_hour: int = Field(default=3, ge=1)
    #: A form must be sent back within this many hours of being shown, and not sooner
    #: than this many seconds (bots fill forms in no time); otherwise it is shown again.
    forms_token_hours: int = Field(default=24, ge=1)
    forms_min_seconds: float = Field(default=2.0, ge=0)


_override: Settings | None = None


@lru_cache(maxsize=1)
def _from_environment() -> Settings:
    settings = Settings()
    settings.ensure_secret_key()
    return settings


def get_settings() -> Settings:
    """The settings in force: from the environment, unless a caller installed others."""
    return _override if _override is not None else _from_environment()


def use_settings(settings: Settings | None) -> None:
    """Install settings for this process (CLI options, tests); None returns to the environment."""
    global _override
    if settings is not None:
        settings.ensure_secret_key()
    _override = settings
    _from_environment.cache_clear()
