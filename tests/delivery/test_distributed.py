"""Distributed mode end to end: PostgreSQL, the Redis broker, separate ``listwarden
worker`` processes and ``listwarden campaign send`` following progress. A worker killed
mid-campaign and replaced leaves no duplicate, and every delivery reaches a final status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from app.config import Settings
from app.delivery import repository
from app.models import Campaign
from tests.campaigns.helpers import CAMPAIGN, bulk_contacts
from tests.conftest import service_missing

REDIS_URL = os.environ.get("LISTWARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_missing("Redis", exc)
    namespace = f"lwtest-{uuid.uuid4().hex[:10]}"
    yield namespace
    for key in client.scan_iter(f"{namespace}*"):
        client.delete(key)


def env_for(settings: Settings, namespace: str, smtp_url: str, var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTWARDEN_")}
    env.update(
        {
            "LISTWARDEN_DATABASE_URL": settings.resolved_database_url,
            "LISTWARDEN_SECRET_KEY": settings.ensure_secret_key(),
            "LISTWARDEN_PUBLIC_URL": settings.public_url,
            "LISTWARDEN_BROKER_URL": REDIS_URL,
            "LISTWARDEN_BROKER_NAMESPACE": namespace,
            "LISTWARDEN_SMTP_URL": smtp_url,
            "LISTWARDEN_VAR_DIR": str(var_dir),
            "LISTWARDEN_SEND_BATCH_SIZE": "20",
            "LISTWARDEN_SLICE_SIZE": "150",
            "LISTWARDEN_CLAIM_LEASE_SECONDS": "3",
            "LISTWARDEN_SCHEDULER_INTERVAL_SECONDS": "0.5",
            "LISTWARDEN_RETRY_BASE_SECONDS": "0.2",
        }
    )
    return env


def listwarden(*args: str, env: dict[str, str], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=str(Path(__file__).resolve().parents[2]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kw,  # type: ignore[arg-type]
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")


def campaign_status(session: Session, campaign_id: int) -> str:
    session.expire_all()
    campaign = session.get(Campaign, campaign_id)
    assert campaign is not None
    return campaign.status


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_redis_broker_and_worker_processes(
    db: Settings, session: Session, client, admin_headers, smtp_server, redis_namespace: str, tmp_path: Path
) -> None:
    emails = [f"d{i}@example.com" for i in range(120)]
    bulk_contacts(session, emails)
    env = env_for(db, redis_namespace, smtp_server.url, tmp_path / "var")
    campaign_id = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    worker = listwarden("worker", "--threads", "4", env=env)
    try:
        sender = listwarden("campaign", "send", str(campaign_id), env=env)
        out, _ = sender.communicate(timeout=120)
        text = out.decode(errors="replace")
        assert sender.returncode == 0, text
        assert f"campaign {campaign_id}: sent; sent 120" in text
    finally:
        worker_log = stop(worker)
    assert "worker started" in worker_log
    got = smtp_server.handler.by_rcpt()
    assert sorted(got) == sorted(emails) and all(len(v) == 1 for v in got.values())


@pytest.mark.parametrize("backend_url", ["postgresql"], indirect=True)
def test_worker_killed_mid_campaign_never_duplicates(
    db: Settings, session: Session, client, admin_headers, smtp_server, redis_namespace: str, tmp_path: Path
) -> None:
    smtp_server.handler.delay = 0.01
    n = 600
    emails = [f"k{i}@example.com" for i in range(n)]
    bulk_contacts(session, emails)
    env = env_for(db, redis_namespace, smtp_server.url, tmp_path / "var")
    campaign_id = client.post("/api/v1/campaigns", json=CAMPAIGN, headers=admin_headers).json()["id"]
    first = listwarden("worker", "--threads", "4", env=env)
    second = None
    try:
        enqueue = listwarden("campaign", "send", str(campaign_id), "--no-follow", env=env)
        assert enqueue.wait(timeout=60) == 0
        deadline = time.monotonic() + 60
        while len(smtp_server.handler.received) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(smtp_server.handler.received) >= 100
        stop(first, signal.SIGKILL)  # mid-campaign, mid-transaction: no clean shutdown
        killed_at = len(smtp_server.handler.received)
        assert killed_at < n
        second = listwarden("worker", "--threads", "4", env=env)
        deadline = time.monotonic() + 120
        while campaign_status(session, campaign_id) != "sent" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert campaign_status(session, campaign_id) == "sent"
    finally:
        if first.poll() is None:
            stop(first, signal.SIGKILL)
        if second is not None:
            stop(second)
    with Session(session.get_bind()) as s:
        counts = repository.counts(s, campaign_id)
    assert set(counts) <= {"sent", "unknown"}, counts  # every delivery reached a final status
    assert sum(counts.values()) == n
    got = smtp_server.handler.by_rcpt()
    assert all(len(v) == 1 for v in got.values()), "a recipient got two messages"
    # What the killed worker had claimed is reported as unknown, not resent.
    assert counts.get("unknown", 0) <= 4 * 20
    assert counts["sent"] <= len(got) <= counts["sent"] + counts.get("unknown", 0)
